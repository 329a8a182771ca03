"""One-off tasks: submit, read, list, cancel and retry."""

from __future__ import annotations

import base64
import functools
import graphlib
import hashlib
import json
import os
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from datetime import datetime
from typing import Annotated, Any, TypeVar, cast

import psycopg
from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from psycopg_pool import AsyncConnectionPool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from scheduler_svc import telemetry
from scheduler_svc.api_models import (
    IDEMPOTENCY_KEY_MAX,
    BatchAnswer,
    BatchRequest,
    BatchTask,
    QueryTime,
    ScheduleRequest,
    TaskDetailView,
    TaskList,
    TaskStatusView,
    TextQuery,
    task_detail_view,
    task_status_view,
    waiting_on_dependencies,
)
from scheduler_svc.deps import BacklogGuard, Inserter, Pool, parse_uuid
from scheduler_svc.openapi import TOO_MANY_QUEUED
from store import dependencies, queues, tasks
from store.db import in_transaction
from store.models import NewTask, PageKey, TaskFilter, TaskRow
from store.vocabulary import TaskStatus
from store.wakeups import Topic, notify_wakeup

MAX_PAGE = 500
T = TypeVar("T")

router = APIRouter()


def parse_task_id(raw: str) -> uuid.UUID:
    return parse_uuid(raw, "task_id")


# Fields added to the task body later: left out of fingerprints while at their default, so a
# request replayed across an upgrade still matches the task it made.
LATER_FIELDS = frozenset(
    {
        "priority",
        "queue",
        "labels",
        "env",
        "cwd",
        "success_exit_codes",
        "output_cap_bytes",
        "lost_retries",
        "concurrency_key",
        "concurrency_limit",
        "after",
    }
)


@functools.cache
def later_defaults(model: type[ScheduleRequest]) -> dict[str, Any]:
    """The defaults of LATER_FIELDS in a body model, read once (pydantic inspects the
    signature of a default factory on every call)."""
    fields = model.model_fields
    return {name: fields[name].get_default(call_default_factory=True) for name in LATER_FIELDS}


def request_fingerprint(body: ScheduleRequest) -> str:
    """The task a body describes, as a digest: the same for POST /schedule and a batch item."""
    later = later_defaults(type(body))
    defaults = {name for name, default in later.items() if getattr(body, name) == default}
    fields = body.model_dump(mode="json", exclude={"idempotency_key", *defaults})
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX or not key.isprintable() or not key.isascii():
        raise HTTPException(422, "Idempotency-Key must be 1-255 printable ASCII characters")
    return key


def new_task(body: ScheduleRequest, key: str | None) -> NewTask:
    """The task a request body describes (with its fingerprint when it has a key)."""
    return NewTask(
        command=body.command,
        scheduled_at=body.scheduled_at,
        delay_seconds=body.delay_seconds,
        max_retries=body.max_retries,
        retry_backoff_seconds=body.retry_backoff_seconds,
        timeout_seconds=body.timeout_seconds,
        idempotency_key=key,
        request_hash=request_fingerprint(body) if key else None,
        priority=body.priority,
        queue=body.queue,
        labels=body.labels,
        env=body.env,
        cwd=body.cwd,
        success_exit_codes=body.success_exit_codes,
        output_cap_bytes=body.output_cap_bytes,
        lost_retries=body.lost_retries,
        memory_limit_bytes=body.memory_limit_bytes,
        cpu_limit_seconds=body.cpu_limit_seconds,
        open_files_limit=body.open_files_limit,
        concurrency_key=body.concurrency_key,
        concurrency_limit=body.concurrency_limit,
    )


def plain_submission(scope: Scope) -> bool:
    """No query string, no Idempotency-Key, one Content-Type that is application/json: what
    the app's dependencies (json_bodies_only, no_unknown_query_parameters) and the route's
    header parameter pass without a word."""
    if scope["query_string"]:
        return False
    media = None
    for name, value in scope["headers"]:
        if name == b"idempotency-key" or (name == b"content-type" and media is not None):
            return False
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
    return media == b"application/json"


class PlainSubmitRoute(APIRoute):
    """POST /schedule, the one request per task of most clients: a plain submission whose body
    validates goes straight to the endpoint, without FastAPI's dependency solving (a third of
    the scheduler's CPU per task at 100 requests/s). Every other request (a query, a key, another
    content type, a body that does not parse or validate) takes FastAPI's usual path, which
    gives every answer, errors included."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        usual = super().get_route_handler()
        body_field = self.body_field
        assert body_field is not None

        async def handler(request: Request) -> Response:
            if not plain_submission(request.scope):
                return await usual(request)
            try:
                data = json.loads(await request.body())
            except StarletteHTTPException:
                raise  # as FastAPI does: the body is too large (errors.BodySizeLimit)
            except Exception:
                return await usual(request)  # it answers an empty or broken body
            # The validation FastAPI runs on a body parameter, with the same location.
            body, errors = body_field.validate(data, {}, loc=("body",))
            if errors:
                return await usual(request)
            state = request.app.state
            return await schedule_task(body, state.pool, state.inserter, state.backlog)

        return handler


async def schedule_task(
    body: ScheduleRequest,
    pool: Pool,
    inserter: Inserter,
    backlog: BacklogGuard,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Queue a command to run once, now, after a delay, or at a given instant."""
    key = check_idempotency_key(idempotency_key)
    new = new_task(body, key)
    named = named_tasks(body.after)
    adding = Counter({new.queue: 1})
    await backlog.admit(adding)

    if key is None and not named:
        created_task = await inserter.insert(new)
        backlog.accepted(adding)
        telemetry.accepted(created_task)
        return JSONResponse(task_status_view(created_task), status_code=201)

    async def insert(conn: psycopg.AsyncConnection[Any]) -> tuple[TaskRow | None, bool]:
        await lock_named_tasks(conn, [body.after])
        task_id = uuid.uuid4()
        created = await tasks.insert_task(conn, task_id, new)
        if created is not None:
            settled = await dependencies.add_dependencies(conn, [(task_id, d) for d in named])
            await notify_wakeup(conn, Topic.TASKS)
            return settled.get(task_id, created), True
        assert key is not None  # only a key makes an insert write nothing
        return await tasks.get_task_by_idempotency_key(conn, key), False

    task, created = await in_transaction(pool, insert)
    if task is None:  # the key's task was deleted between the two statements
        raise HTTPException(409, "Idempotency-Key conflict, retry the request")
    if not created and task.request_hash != new.request_hash:
        raise HTTPException(409, "Idempotency-Key was already used with a different request body")
    if created:
        backlog.accepted(adding)
        telemetry.accepted(task)
    return JSONResponse(task_status_view(task), status_code=201 if created else 200)


router.add_api_route(
    "/schedule",
    schedule_task,
    methods=["POST"],
    route_class_override=PlainSubmitRoute,
    status_code=201,
    response_model=TaskStatusView,
    responses={
        200: {
            "description": "The task an earlier request with this Idempotency-Key made",
            "model": TaskStatusView,
        },
        **TOO_MANY_QUEUED,
    },
)


def issue(loc: Sequence[str | int], msg: str) -> dict[str, Any]:
    """One entry of a 422's detail, in the shape of FastAPI's validation errors."""
    return {"loc": ["body", *loc], "msg": msg, "type": "value_error"}


def named_tasks(after: Sequence[uuid.UUID | int]) -> list[uuid.UUID]:
    """The task ids in one `after` list, each once, in order; a 422 for a batch index."""
    indexes = [i for i, d in enumerate(after) if isinstance(d, int)]
    if indexes:
        msg = "an index names another task of the same batch: only POST /tasks/batch takes one"
        raise HTTPException(422, [issue(["after", i], msg) for i in indexes])
    return list(dict.fromkeys(d for d in after if isinstance(d, uuid.UUID)))


async def lock_named_tasks(
    conn: psycopg.AsyncConnection[Any],
    afters: Sequence[Sequence[uuid.UUID | int]],
    where: Sequence[str | int] = (),
) -> None:
    """Lock the existing tasks that `after` lists name (store/dependencies.py says why), or
    answer 422 naming each one that does not exist (under `where`, then the list's index)."""
    named = {d for after in afters for d in after if isinstance(d, uuid.UUID)}
    missing = named - await dependencies.lock_tasks(conn, sorted(named))
    issues = [
        issue([*where, *([n] if where else []), "after", i], f"no task with id {d}")
        for n, after in enumerate(afters)
        for i, d in enumerate(after)
        if d in missing
    ]
    if issues:
        raise HTTPException(422, issues)


@router.post(
    "/tasks/batch",
    status_code=201,
    responses={
        201: {"model": BatchAnswer, "description": "Every task written (some may be replays)"},
        200: {"model": BatchAnswer, "description": "Every task was made by an earlier request"},
        **TOO_MANY_QUEUED,
    },
)
async def submit_batch(body: BatchRequest, pool: Pool, backlog: BacklogGuard) -> JSONResponse:
    """Queue up to 10,000 tasks in one transaction: all of them, or (with any problem) none.
    Ids come back in the order given; an item's idempotency_key works like the Idempotency-Key
    header of POST /schedule, so a replayed batch answers the same ids."""
    items = body.tasks
    afters = [item.after for item in items]
    problems = repeated_keys(items) + batch_index_issues(afters)
    if problems:

        async def unknown(conn: psycopg.AsyncConnection[Any]) -> None:
            await lock_named_tasks(conn, afters, ["tasks"])

        try:  # one 422 names every problem: unknown task ids too
            await in_transaction(pool, unknown)
        except HTTPException as exc:
            problems += cast(list[dict[str, Any]], exc.detail)
        raise HTTPException(422, sorted(problems, key=lambda p: p["loc"][2]))
    adding = Counter(item.queue for item in items)
    await backlog.admit(adding)
    keyed = [i for i, item in enumerate(items) if item.idempotency_key is not None]
    # Keyed tasks are made first, to be compared with those made earlier under their keys.
    made: list[tuple[str, NewTask]] = []
    if keyed:
        made = [(task_id, new_task(item, item.idempotency_key))
                for task_id, item in zip(new_ids(len(items)), items, strict=True)]  # fmt: skip

    async def insert(conn: psycopg.AsyncConnection[Any]) -> tuple[list[str], int]:
        await lock_named_tasks(conn, afters, ["tasks"])
        now = await tasks.transaction_now(conn)
        if not keyed:
            ids: list[str] = []
            await tasks.copy_task_batch(conn, made_while_written(items, ids), now)
            await add_batch_dependencies(conn, ids, afters, set(ids))
            return ids, len(ids)
        ids, fresh = await resolve_replays(conn, made, keyed)
        if fresh:
            await tasks.copy_task_batch(conn, fresh, now)
        await add_batch_dependencies(conn, ids, afters, {task_id for task_id, _ in fresh})
        return ids, len(fresh)

    ids, created = await insert_racing_keys(pool, insert)
    if created:
        backlog.accepted(adding)
        telemetry.accepted_batch(len(items), created)
    answer = {"task_ids": ids, "created": created}
    return JSONResponse(answer, status_code=201 if created else 200)


def made_while_written(items: list[BatchTask], ids: list[str]) -> Iterator[tuple[str, NewTask]]:
    """Each item as a new task with a new id (added to `ids`), made as COPY takes it: the
    database writes the rows sent before while the next ones are made."""
    for item, task_id in zip(items, new_ids(len(items)), strict=True):
        ids.append(task_id)
        yield task_id, new_task(item, None)


def new_ids(count: int) -> list[str]:
    """`count` random (version 4) UUIDs in their text form, from one read of the system's
    random source: uuid4() reads it once per id, and a UUID object costs more to make, to
    write and to print than its text."""
    digits = os.urandom(16 * count).hex()
    return [
        f"{digits[i : i + 8]}-{digits[i + 8 : i + 12]}-4{digits[i + 13 : i + 16]}-"
        f"{UUID_VARIANT[digits[i + 16]]}{digits[i + 17 : i + 20]}-{digits[i + 20 : i + 32]}"
        for i in range(0, 32 * count, 32)
    ]


# The first digit of a UUID's fourth group says its variant: 8, 9, a or b for RFC 4122.
UUID_VARIANT = {digit: "89ab"[int(digit, 16) % 4] for digit in "0123456789abcdef"}


# Times a batch is written again when another request took one of its idempotency keys
# between the look-up and the write (the next look-up finds that task).
KEY_RACE_ATTEMPTS = 3


async def insert_racing_keys(
    pool: AsyncConnectionPool, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]
) -> T:
    """Run `work` in a transaction, again when a key it found free was taken meanwhile."""
    for attempt in range(1, KEY_RACE_ATTEMPTS + 1):
        try:
            return await in_transaction(pool, work)
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name != tasks.IDEMPOTENCY_KEY_CONSTRAINT:
                raise
            if attempt == KEY_RACE_ATTEMPTS:
                raise HTTPException(
                    409, "idempotency_key taken by a concurrent request, retry the batch"
                ) from None
    raise AssertionError("unreachable")


def batch_index_issues(afters: Sequence[Sequence[uuid.UUID | int]]) -> list[dict[str, Any]]:
    """A validation issue for each batch index in an `after` that names its own item or none,
    and for each item on a cycle of indexes (every cycle, not only the first found)."""
    issues = []
    graph: dict[int, set[int]] = {}
    for n, after in enumerate(afters):
        for i, d in enumerate(after):
            if isinstance(d, uuid.UUID):
                continue
            if d == n:
                issues.append(issue(["tasks", n, "after", i], "names the task itself"))
            elif d >= len(afters):
                msg = f"index {d} is out of range: the batch has {len(afters)} tasks"
                issues.append(issue(["tasks", n, "after", i], msg))
            else:
                graph.setdefault(n, set()).add(d)
    for members in cycles(graph):
        shown = ", ".join(str(i) for i in members[:CYCLE_SHOWN])
        more = f" and {len(members) - CYCLE_SHOWN} more" if len(members) > CYCLE_SHOWN else ""
        msg = f"is on a cycle: tasks {shown}{more} wait on each other"
        issues += [issue(["tasks", n, "after"], msg) for n in members]
    return issues


# Items a cycle's message names at most (each item of the cycle gets the message).
CYCLE_SHOWN = 10


def cycles(graph: dict[int, set[int]]) -> list[list[int]]:
    """The items on cycles of `graph` (item -> items it waits on): graphlib tells whether there
    is one; then its strongly connected components of more than one item name them all
    (Tarjan's algorithm, iterative, so a cycle of 10,000 items needs no deep recursion)."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
        return []
    except graphlib.CycleError:
        pass
    order: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    found: list[list[int]] = []

    def visit(node: int) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        on_stack.add(node)

    for root in graph:
        if root in order:
            continue
        visit(root)
        walk = [(root, iter(graph.get(root, ())))]
        while walk:
            node, children = walk[-1]
            for child in children:
                if child not in order:
                    visit(child)
                    walk.append((child, iter(graph.get(child, ()))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], order[child])
            else:
                walk.pop()
                if walk:
                    parent = walk[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == order[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


async def add_batch_dependencies(
    conn: psycopg.AsyncConnection[Any],
    ids: list[str],
    afters: Sequence[Sequence[uuid.UUID | int]],
    created: set[str],
) -> None:
    """The edges of the batch's created tasks (`ids` in item order; a replayed task keeps
    those it was made with), batch indexes resolved to ids; a replayed task named by index is
    locked first."""
    edges = [
        (uuid.UUID(ids[n]), d if isinstance(d, uuid.UUID) else uuid.UUID(ids[d]))
        for n, after in enumerate(afters)
        if after and ids[n] in created
        for d in after
    ]
    if not edges:
        return
    replayed = sorted({d for _, d in edges} - {uuid.UUID(task_id) for task_id in created})
    await dependencies.lock_tasks(conn, replayed)
    await dependencies.add_dependencies(conn, edges)


def repeated_keys(items: list[BatchTask]) -> list[dict[str, Any]]:
    """A validation issue for each item whose idempotency key an earlier item already has."""
    first: dict[str, int] = {}
    issues = []
    for index, item in enumerate(items):
        key = item.idempotency_key
        if key is None:
            continue
        if key in first:
            issues.append({
                "loc": ["body", "tasks", index, "idempotency_key"],
                "msg": f"repeats the idempotency_key of task {first[key]}",
                "type": "value_error",
            })  # fmt: skip
        else:
            first[key] = index
    return issues


async def resolve_replays(
    conn: psycopg.AsyncConnection[Any], new: list[tuple[str, NewTask]], keyed: list[int]
) -> tuple[list[str], list[tuple[str, NewTask]]]:
    """The id of every item (the earlier task's for a key already used) and the items still to
    write; refuse the whole batch (409) when a key was used for a different task."""
    keys = [str(new[i][1].idempotency_key) for i in keyed]
    earlier = await tasks.get_keyed_tasks(conn, keys)
    if not earlier:
        return [task_id for task_id, _ in new], new
    changed = [i for i, key in zip(keyed, keys, strict=True)
               if key in earlier and earlier[key][1] != new[i][1].request_hash]  # fmt: skip
    if changed:
        raise HTTPException(
            409,
            f"tasks {changed[:20]}: idempotency_key was already used with a different task body",
        )
    ids = [
        str(earlier[task.idempotency_key][0])
        if task.idempotency_key is not None and task.idempotency_key in earlier
        else task_id
        for task_id, task in new
    ]
    fresh = [(task_id, task) for task_id, task in new if task.idempotency_key not in earlier]
    return ids, fresh


async def load_task(pool: AsyncConnectionPool, task_id: uuid.UUID) -> TaskRow:
    async with pool.connection() as conn:
        task = await tasks.get_task(conn, task_id)
    if task is None:
        raise HTTPException(404, f"no task with id {task_id}")
    return task


async def load_detail(pool: AsyncConnectionPool, task_id: uuid.UUID) -> dict[str, Any]:
    """The task with its attempts, or a 404."""
    async with pool.connection() as conn:
        task = await tasks.get_task(conn, task_id)
        attempts = await tasks.list_attempts(conn, task_id) if task else []
        after = [d.task_id for d in await dependencies.dependencies_of(conn, task_id)]
        waiting = None
        if task is not None and task.status == TaskStatus.QUEUED:
            waiting = await queues.waiting_for(conn, task_id)
    if task is None:
        raise HTTPException(404, f"no task with id {task_id}")
    waiting = waiting_on_dependencies(task, after) or waiting
    return task_detail_view(task, attempts) | {
        "waiting_for": waiting,
        "after": [str(d) for d in after],
    }


@router.get("/status", response_model=TaskStatusView)
async def task_status(pool: Pool, task_id: Annotated[str, Query()]) -> dict[str, Any]:
    """The current state of one task."""
    return task_status_view(await load_task(pool, parse_task_id(task_id)))


def encode_cursor(task: TaskRow) -> str:
    """An opaque cursor for the page after `task`: its creation time and id."""
    raw = f"{task.created_at.isoformat()} {task.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(raw: str, name: str) -> PageKey:
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        created, _, task_id = text.partition(" ")
        key = PageKey(datetime.fromisoformat(created), uuid.UUID(task_id))
    except ValueError:
        raise HTTPException(422, f"{name} is not a cursor this API gave") from None
    if key.created_at.tzinfo is None:
        raise HTTPException(422, f"{name} is not a cursor this API gave")
    return key


def page_start(cursor: str | None, before: str | None) -> tuple[PageKey | None, uuid.UUID | None]:
    """Where a page starts: an opaque cursor (in `cursor`, or in `before` as older clients send
    it), or, in `before`, the id of the previous page's last task."""
    if cursor is not None and before is not None:
        raise HTTPException(422, "give `cursor` or `before`, not both")
    if cursor is not None:
        return decode_cursor(cursor, "cursor"), None
    if before is None:
        return None, None
    try:
        return None, uuid.UUID(before)
    except ValueError:
        return decode_cursor(before, "before"), None


@router.get("/tasks")
async def list_tasks(
    pool: Pool,
    task_ids: Annotated[list[str] | None, Query(alias="id", max_length=MAX_PAGE)] = None,
    status: Annotated[list[TaskStatus] | None, Query(max_length=len(TaskStatus))] = None,
    worker_id: Annotated[TextQuery | None, Query(min_length=1, max_length=200)] = None,
    schedule_id: Annotated[str | None, Query(max_length=64)] = None,
    queue: Annotated[TextQuery | None, Query(min_length=1, max_length=200)] = None,
    command_prefix: Annotated[TextQuery | None, Query(min_length=1, max_length=1000)] = None,
    created_after: QueryTime | None = None,
    created_before: QueryTime | None = None,
    scheduled_after: QueryTime | None = None,
    scheduled_before: QueryTime | None = None,
    finished_after: QueryTime | None = None,
    finished_before: QueryTime | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    before: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> TaskList:
    """Tasks named by `id` (repeat it, up to 500), or a page of tasks newest first matching
    every filter given: `status` (repeat it for several), `worker_id` (of the latest attempt),
    `schedule_id`, `queue`, `command_prefix`, and time ranges `created_`, `scheduled_` and
    `finished_` `after` (inclusive) / `before` (exclusive). Pass next_cursor back as `cursor`
    for the next page; pages stay consistent while tasks are added."""
    where = TaskFilter(
        statuses=tuple(status or ()),
        worker_id=worker_id,
        schedule_id=parse_uuid(schedule_id, "schedule_id") if schedule_id is not None else None,
        queue=queue,
        command_prefix=command_prefix,
        created_after=created_after,
        created_before=created_before,
        scheduled_after=scheduled_after,
        scheduled_before=scheduled_before,
        finished_after=finished_after,
        finished_before=finished_before,
    )
    after, before_id = page_start(cursor, before)
    if task_ids and (where != TaskFilter() or after is not None or before_id is not None):
        raise HTTPException(422, "`id` names tasks exactly: it takes no filters or cursor")
    async with pool.connection() as conn:
        if task_ids:
            ids = [parse_task_id(raw) for raw in task_ids]
            found = await tasks.get_tasks(conn, ids)
            return TaskList(tasks=[TaskStatusView(**task_status_view(t)) for t in found])
        page = await tasks.list_tasks(conn, where, after, limit, before_id)
    return TaskList(
        tasks=[TaskStatusView(**task_status_view(t)) for t in page],
        next_cursor=encode_cursor(page[-1]) if len(page) == limit else None,
    )


@router.get("/tasks/{task_id}", response_model=TaskDetailView)
async def task_detail(pool: Pool, task_id: str) -> dict[str, Any]:
    """One task with every attempt made to run it."""
    return await load_detail(pool, parse_task_id(task_id))


@router.post("/tasks/{task_id}/cancel", response_model=TaskDetailView)
async def cancel_task(pool: Pool, task_id: str) -> dict[str, Any]:
    """Cancel a task: at once when queued; a running attempt is stopped on its worker."""
    tid = parse_task_id(task_id)

    async def cancel(conn: psycopg.AsyncConnection[Any]) -> TaskRow | None:
        current = await tasks.lock_task(conn, tid)
        if current is None or TaskStatus(current.status).finished:
            return current
        (cancelled,) = await tasks.cancel_tasks(conn, [tid])  # locked, and not finished
        await notify_wakeup(conn, Topic.STOPS)
        return cancelled

    task = await in_transaction(pool, cancel)
    if task is None:
        raise HTTPException(404, f"no task with id {tid}")
    if task.status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED):
        raise HTTPException(409, f"task {tid} already finished as {task.status}")
    return await load_detail(pool, tid)


@router.post("/tasks/{task_id}/retry", response_model=TaskDetailView)
async def retry_task(pool: Pool, task_id: str) -> dict[str, Any]:
    """Queue a failed task again, with its retries restored."""
    tid = parse_task_id(task_id)

    async def requeue(conn: psycopg.AsyncConnection[Any]) -> TaskRow | None:
        task = await tasks.requeue_failed_task(conn, tid)
        if task is not None:
            await wait_for_dependencies(conn, tid)
            await notify_wakeup(conn, Topic.TASKS)
        return task

    try:
        task = await in_transaction(pool, requeue)
    except psycopg.errors.UniqueViolation:
        # tasks_one_exclusive_run: another run of its schedule (overlap skip) is unfinished
        raise HTTPException(409, "another run of this task's schedule has not finished") from None
    if task is None:
        existing = await load_task(pool, tid)
        raise HTTPException(409, f"only failed tasks can be retried; task is {existing.status}")
    return await load_detail(pool, tid)


async def wait_for_dependencies(conn: psycopg.AsyncConnection[Any], tid: uuid.UUID) -> None:
    """A retried task with an `after` waits again for what has not succeeded; 409 (and the
    retry is undone) while one of those failed or was cancelled: retry that one first."""
    named = await dependencies.dependency_ids(conn, tid)
    if not named:
        return
    await dependencies.lock_tasks(conn, named)
    ended = await dependencies.resettle_retried(conn, tid)
    if ended:
        names = ", ".join(str(d) for d in ended[:5])
        msg = f"tasks in after failed or were cancelled: {names}; retry them first"
        raise HTTPException(409, msg)
