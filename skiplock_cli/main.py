"""The `skiplock` command: submit and watch tasks, steer schedules, from a terminal or a script.

Exit status: 0 ok; 1 the API answered with an error, could not be reached, or (with --wait) the
task did not succeed, when it is the command's own exit code if it has one; 2 usage errors.
"""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console, RenderableType
from rich.text import Text

from skiplock_cli import render
from skiplock_cli.client import Api, CliError
from skiplock_cli.config import CliConfig, ConfigError, load
from skiplock_cli.durations import parse_duration, parse_instant

app = typer.Typer(
    name="skiplock",
    help="Submit shell commands to a skiplock cluster, watch them, and steer cron schedules.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
tasks_app = typer.Typer(help="Look through tasks.", no_args_is_help=True)
schedules_app = typer.Typer(help="Cron schedules and their tick ledger.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")
app.add_typer(schedules_app, name="schedules")

JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print the API's JSON (one document per line) for scripts.")
]
TaskId = Annotated[
    str, typer.Argument(metavar="TASK_ID", help="The task's id.", show_default=False)
]
ScheduleRef = Annotated[
    str, typer.Argument(metavar="SCHEDULE", help="The schedule's id or name.", show_default=False)
]


def duration_option(name: str, help: str) -> Any:
    return typer.Option(
        name, parser=parse_duration, metavar="DURATION", help=help, show_default=False
    )


Limit = Annotated[int, typer.Option("--limit", min=1, max=500, help="At most this many.")]
Cursor = Annotated[
    str | None,
    typer.Option("--cursor", help="Continue from the cursor a previous page printed."),
]


class Overlap(StrEnum):
    skip = "skip"
    allow = "allow"
    cancel_previous = "cancel_previous"


@dataclass
class Session:
    """What every command needs: the configuration, the API and where to print."""

    config: CliConfig
    out: Console = field(default_factory=render.console_for)
    err: Console = field(default_factory=lambda: render.console_for(stderr=True))
    _api: Api | None = None

    @property
    def api(self) -> Api:
        if self._api is None:
            self._api = Api(self.config)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()

    def emit(self, data: Any, human: RenderableType) -> None:
        """The API's JSON with --json, else the rendering for people."""
        if self.config.json_output:
            self.out.out(json.dumps(data), highlight=False)
        else:
            self.out.print(human)

    def note(self, message: str) -> None:
        """A hint for people (never with --json); on stderr so stdout stays the result."""
        if not self.config.json_output:
            self.err.print(message)


def session(ctx: typer.Context, json_output: bool = False) -> Session:
    current: Session = ctx.obj
    if json_output and not current.config.json_output:
        current.config = replace(current.config, json_output=True)
    return current


def print_version(value: bool | None) -> None:
    if value:
        from importlib import metadata  # only here: it costs a fifth of a second at start

        try:
            found = metadata.version("skiplock")
        except metadata.PackageNotFoundError:
            found = "unknown (not installed; running from a checkout)"
        print(f"skiplock {found}")
        raise typer.Exit()


@app.callback()
def global_options(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="The scheduler's base URL; else SKIPLOCK_URL, else http://127.0.0.1:8081.",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="API token sent as 'Authorization: Bearer …'; else SKIPLOCK_TOKEN.",
            show_default=False,
        ),
    ] = None,
    json_output: JsonFlag = False,
    version: Annotated[
        bool | None,
        typer.Option(
            "--version", callback=print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = None,
) -> None:
    try:
        config = load(url, token, json_output)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    ctx.obj = Session(config)
    ctx.call_on_close(ctx.obj.close)


def exit_status(task: dict[str, Any]) -> int:
    """0 when the task succeeded; else the command's exit code, or 1 when it has none."""
    if task["status"] == "succeeded":
        return 0
    code = task.get("exit_code")
    return code if isinstance(code, int) and 0 < code < 256 else 1


def wait_and_exit(s: Session, task_id: str) -> None:
    """Follow a task to its end, show it, and exit with its command's status."""
    task = s.api.wait_finished(task_id)
    s.emit(task, render.task_summary(task))
    raise typer.Exit(exit_status(task))


# -- tasks ----------------------------------------------------------------------------------


@app.command()
def submit(
    ctx: typer.Context,
    command: Annotated[
        str | None,
        typer.Argument(
            metavar="COMMAND", help="The shell command, run as bash -c COMMAND.", show_default=False
        ),
    ] = None,
    batch: Annotated[
        Path | None,
        typer.Option(
            "--batch",
            metavar="FILE",
            help="Instead of COMMAND: every task in FILE, one JSON body of POST /schedule per "
            "line (an idempotency_key each if you like; - reads stdin), sent 10,000 at a time "
            "through POST /tasks/batch; prints their ids in order.",
            show_default=False,
        ),
    ] = None,
    in_: Annotated[
        float | None, duration_option("--in", "Run after this long: 5s, 2m, 1h30m.")
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            parser=parse_instant,
            metavar="TIME",
            help="Run at this RFC 3339 time, e.g. 2026-12-01T09:00:00+01:00.",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Wait for the task to end and exit with its command's status."),
    ] = False,
    timeout: Annotated[
        float | None, duration_option("--timeout", "Kill the command after this long.")
    ] = None,
    retries: Annotated[
        int, typer.Option("--retries", min=0, max=100, help="Run again this many times on failure.")
    ] = 0,
    backoff: Annotated[
        float | None,
        duration_option("--backoff", "First wait before a retry, doubled each time (1s)."),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            help="Submitting again with the same key returns the first task.",
            show_default=False,
        ),
    ] = None,
    after: Annotated[
        list[str] | None,
        typer.Option(
            "--after",
            metavar="TASK_ID",
            help="Start only once this task has succeeded (repeat for several); when it fails "
            "or is cancelled, this one ends failed with reason dependency_failed.",
            show_default=False,
        ),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Run a shell command once: now, after a delay, at a time, or after other tasks."""
    if batch is not None:
        if command is not None:
            raise typer.BadParameter("give COMMAND or --batch FILE, not both")
        submit_batch(session(ctx, json_output), batch)
        return
    if command is None:
        raise typer.BadParameter("give COMMAND (or --batch FILE)")
    if in_ is not None and at is not None:
        raise typer.BadParameter("give --in or --at, not both")
    s = session(ctx, json_output)
    body: dict[str, Any] = {"command": command, "max_retries": retries}
    optional = {
        "delay_seconds": in_,
        "scheduled_at": at,
        "timeout_seconds": timeout,
        "retry_backoff_seconds": backoff,
        "after": after or None,
    }
    body |= {name: value for name, value in optional.items() if value is not None}
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    task = s.api.post("/schedule", body, headers=headers)
    if wait:
        s.note(str(render.task_summary(task)))
        wait_and_exit(s, task["task_id"])
    s.emit(task, render.task_summary(task))


BATCH_SIZE = 10_000


def read_batch(path: Path) -> list[Any]:
    """The task bodies of a JSON-lines file (blank lines skipped)."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}") from None
    bodies = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            bodies.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"{path} line {number}: not JSON ({exc.msg})") from None
    if not bodies:
        raise typer.BadParameter(f"{path} holds no tasks")
    return bodies


def submit_batch(s: Session, path: Path) -> None:
    """POST /tasks/batch for each 10,000 tasks of the file; each batch is all or nothing."""
    bodies = read_batch(path)
    ids: list[str] = []
    created = 0
    for start in range(0, len(bodies), BATCH_SIZE):
        answer = s.api.post("/tasks/batch", {"tasks": bodies[start : start + BATCH_SIZE]})
        ids += answer["task_ids"]
        created += answer["created"]
    s.emit({"task_ids": ids, "created": created}, "\n".join(ids))
    s.note(f"{created} of {len(ids)} tasks created (the others existed under their keys)")


@app.command()
def status(
    ctx: typer.Context,
    task_id: TaskId,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Print each change until the task ends.")
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """A task with every attempt made to run it."""
    s = session(ctx, json_output)
    if not watch:
        task = s.api.get(f"/tasks/{task_id}")
        s.emit(task, render.task_detail(task))
        return

    def changed(task: dict[str, Any]) -> None:
        if s.config.json_output:
            s.emit(task, "")
        else:
            s.out.print(render.task_summary(task))

    task = s.api.wait_finished(task_id, changed)
    if not s.config.json_output:
        s.out.print()
        s.out.print(render.task_detail(task))


@app.command()
def cancel(ctx: typer.Context, task_id: TaskId, json_output: JsonFlag = False) -> None:
    """Cancel a task: at once when queued; a running command is stopped on its worker."""
    s = session(ctx, json_output)
    task = s.api.post(f"/tasks/{task_id}/cancel")
    s.emit(task, render.task_summary(task))


@app.command()
def retry(
    ctx: typer.Context,
    task_id: TaskId,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the new run to end; exit with its status.")
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Queue a failed task again, with its retries restored."""
    s = session(ctx, json_output)
    task = s.api.post(f"/tasks/{task_id}/retry")
    if wait:
        s.note(str(render.task_summary(task)))
        wait_and_exit(s, task_id)
    s.emit(task, render.task_summary(task))


def instant_option(name: str, help: str) -> Any:
    return typer.Option(name, parser=parse_instant, metavar="TIME", help=help, show_default=False)


@tasks_app.command("ls")
def tasks_ls(
    ctx: typer.Context,
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            help="Only tasks in this status, e.g. failed (repeat for several).",
            show_default=False,
        ),
    ] = None,
    worker: Annotated[
        str | None,
        typer.Option("--worker", help="Only tasks last run by this worker.", show_default=False),
    ] = None,
    schedule: Annotated[
        str | None,
        typer.Option(
            "--schedule", help="Only runs of this schedule (id or name).", show_default=False
        ),
    ] = None,
    queue: Annotated[
        str | None, typer.Option("--queue", help="Only tasks of this queue.", show_default=False)
    ] = None,
    command_prefix: Annotated[
        str | None,
        typer.Option("--command", help="Only commands that start with this.", show_default=False),
    ] = None,
    created_after: Annotated[
        str | None, instant_option("--created-after", "Created at or after this RFC 3339 time.")
    ] = None,
    created_before: Annotated[
        str | None, instant_option("--created-before", "Created before this RFC 3339 time.")
    ] = None,
    finished_after: Annotated[
        str | None, instant_option("--finished-after", "Finished at or after this time.")
    ] = None,
    finished_before: Annotated[
        str | None, instant_option("--finished-before", "Finished before this time.")
    ] = None,
    limit: Limit = 20,
    cursor: Cursor = None,
    json_output: JsonFlag = False,
) -> None:
    """Tasks, newest first, matching every filter given."""
    s = session(ctx, json_output)
    query = {
        "status": status or None,
        "worker_id": worker,
        "schedule_id": schedule_id(s, schedule) if schedule else None,
        "queue": queue,
        "command_prefix": command_prefix,
        "created_after": created_after,
        "created_before": created_before,
        "finished_after": finished_after,
        "finished_before": finished_before,
        "limit": limit,
        "cursor": cursor,
    }
    page = s.api.get("/tasks", query)
    s.emit(page, render.tasks_table(page["tasks"]))
    more(s, "skiplock tasks ls", page)


@app.command()
def logs(
    ctx: typer.Context,
    task_id: TaskId,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the attempt ends.")
    ] = False,
    attempt: Annotated[
        int | None,
        typer.Option(
            "--attempt", min=1, help="This attempt (default: the latest).", show_default=False
        ),
    ] = None,
) -> None:
    """A task's output (stdout and stderr), as stored: whole, or followed while it runs (a
    queued task is waited for)."""
    s = session(ctx)
    if follow and attempt is None:
        s.api.wait_dispatched(task_id)  # a queued task has no output yet: wait for its start
    params = {"follow": follow, "attempt": attempt, "encoding": "raw"}
    with s.api.stream(f"/tasks/{task_id}/output", params) as response:
        for chunk in response.iter_bytes():
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()


@app.command()
def workers(
    ctx: typer.Context,
    worker_id: Annotated[
        str | None,
        typer.Argument(metavar="[WORKER_ID]", help="One worker, with the attempts it holds."),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """The fleet: each worker's state, busy slots and last heartbeat."""
    s = session(ctx, json_output)
    if worker_id is not None:
        worker = s.api.get(f"/workers/{quote(worker_id, safe='')}")
        s.emit(worker, render.worker_detail(worker))
        return
    fleet = s.api.get("/workers")
    s.emit(fleet, render.workers_table(fleet["workers"]))


class EventKindChoice(StrEnum):
    task = "task"
    attempt = "attempt"
    worker = "worker"
    tick = "tick"


@app.command()
def events(
    ctx: typer.Context,
    kind: Annotated[
        list[EventKindChoice] | None,
        typer.Option(
            "--kind", help="Only this kind of change (repeat for several).", show_default=False
        ),
    ] = None,
    task: Annotated[
        str | None, typer.Option("--task", help="Only changes of this task.", show_default=False)
    ] = None,
    schedule: Annotated[
        str | None,
        typer.Option(
            "--schedule", help="Only changes of this schedule (id or name).", show_default=False
        ),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Print changes as they happen (tasks, attempts, workers, cron ticks) until interrupted."""
    s = session(ctx, json_output)
    params = {
        "kind": [k.value for k in kind or ()],
        "task_id": task,
        "schedule_id": schedule_id(s, schedule) if schedule else None,
    }
    try:
        with s.api.stream("/events", params) as response:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                for event in json.loads(line.removeprefix("data:")):
                    s.emit(event, render.event_line(event))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@app.command()
def stats(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """The backlog, recent outcomes, start delays, slots and cron ticks."""
    s = session(ctx, json_output)
    current = s.api.get("/stats")
    s.emit(current, render.stats_summary(current))


def more(s: Session, command: str, page: dict[str, Any]) -> None:
    if page.get("next_cursor"):
        s.note(f"more: {command} --cursor {page['next_cursor']}")


# -- schedules ------------------------------------------------------------------------------


def schedule_id(s: Session, ref: str) -> str:
    """The id of the schedule named `ref`, or `ref` itself when it is an id."""
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        pass
    page = s.api.get("/schedules", {"name_prefix": ref, "limit": 50})
    for schedule in page["schedules"]:
        if schedule["name"] == ref:
            return str(schedule["id"])
    raise CliError(f"no schedule named {ref!r}")


@schedules_app.command("add")
def schedules_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="A unique name.", show_default=False)],
    cron: Annotated[
        str,
        typer.Argument(
            metavar="CRON",
            help="5 fields (6 with seconds), @daily, @every 90s, …",
            show_default=False,
        ),
    ],
    command: Annotated[
        str,
        typer.Argument(
            metavar="COMMAND", help="The shell command each tick runs.", show_default=False
        ),
    ],
    timezone: Annotated[
        str, typer.Option("--timezone", "--tz", help="IANA zone the expression is read in.")
    ] = "UTC",
    overlap: Annotated[
        Overlap, typer.Option("--overlap", help="When the previous run has not finished.")
    ] = Overlap.skip,
    catchup_window: Annotated[
        float | None, duration_option("--catchup-window", "Run late ticks up to this late (60s).")
    ] = None,
    jitter: Annotated[
        float | None, duration_option("--jitter", "Delay each run by up to this.")
    ] = None,
    timeout: Annotated[
        float | None, duration_option("--timeout", "Kill each run after this long.")
    ] = None,
    retries: Annotated[
        int, typer.Option("--retries", min=0, max=100, help="Retries of each run.")
    ] = 0,
    backoff: Annotated[
        float | None, duration_option("--backoff", "First wait before a retry (1s).")
    ] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Create a cron schedule; it fires only for ticks after this moment."""
    s = session(ctx, json_output)
    body: dict[str, Any] = {
        "name": name,
        "cron": cron,
        "command": command,
        "timezone": timezone,
        "overlap": overlap.value,
        "max_retries": retries,
        "paused": paused,
    }
    optional = {
        "catchup_window_seconds": None if catchup_window is None else round(catchup_window),
        "jitter_seconds": jitter,
        "timeout_seconds": timeout,
        "retry_backoff_seconds": backoff,
    }
    body |= {key: value for key, value in optional.items() if value is not None}
    schedule = s.api.post("/schedules", body)
    s.emit(schedule, render.schedule_detail(schedule))


@schedules_app.command("update")
def schedules_update(
    ctx: typer.Context,
    ref: ScheduleRef,
    name: Annotated[
        str | None, typer.Option("--name", help="A new name.", show_default=False)
    ] = None,
    cron: Annotated[
        str | None, typer.Option("--cron", help="A new expression.", show_default=False)
    ] = None,
    command: Annotated[
        str | None, typer.Option("--command", help="A new command.", show_default=False)
    ] = None,
    timezone: Annotated[
        str | None, typer.Option("--timezone", "--tz", help="A new zone.", show_default=False)
    ] = None,
    overlap: Annotated[
        Overlap | None, typer.Option("--overlap", help="A new overlap policy.", show_default=False)
    ] = None,
    catchup_window: Annotated[
        float | None, duration_option("--catchup-window", "A new catch-up window.")
    ] = None,
    jitter: Annotated[float | None, duration_option("--jitter", "A new jitter.")] = None,
    timeout: Annotated[float | None, duration_option("--timeout", "A new timeout.")] = None,
    no_timeout: Annotated[
        bool, typer.Option("--no-timeout", help="Let runs take as long as they take.")
    ] = False,
    retries: Annotated[
        int | None,
        typer.Option("--retries", min=0, max=100, help="New retries.", show_default=False),
    ] = None,
    backoff: Annotated[float | None, duration_option("--backoff", "A new backoff.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Change some settings; a new expression or zone counts from this moment."""
    if timeout is not None and no_timeout:
        raise typer.BadParameter("give --timeout or --no-timeout, not both")
    changes: dict[str, Any] = {
        "name": name,
        "cron": cron,
        "command": command,
        "timezone": timezone,
        "overlap": overlap and overlap.value,
        "catchup_window_seconds": None if catchup_window is None else round(catchup_window),
        "jitter_seconds": jitter,
        "timeout_seconds": timeout,
        "max_retries": retries,
        "retry_backoff_seconds": backoff,
    }
    body = {key: value for key, value in changes.items() if value is not None}
    if no_timeout:
        body["timeout_seconds"] = None
    if not body:
        raise typer.BadParameter("give at least one setting to change")
    s = session(ctx, json_output)
    schedule = s.api.request("PATCH", f"/schedules/{schedule_id(s, ref)}", body=body)
    s.emit(schedule, render.schedule_detail(schedule))


@schedules_app.command("ls")
def schedules_ls(
    ctx: typer.Context,
    prefix: Annotated[
        str | None,
        typer.Option("--prefix", help="Only names starting with this.", show_default=False),
    ] = None,
    paused: Annotated[
        bool | None,
        typer.Option("--paused/--active", help="Only paused, or only active, schedules."),
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    json_output: JsonFlag = False,
) -> None:
    """Schedules in name order, with their next fire time."""
    s = session(ctx, json_output)
    params = {"name_prefix": prefix, "paused": paused, "limit": limit, "cursor": cursor}
    page = s.api.get("/schedules", params)
    s.emit(page, render.schedules_table(page["schedules"]))
    more(s, "skiplock schedules ls", page)


@schedules_app.command("show")
def schedules_show(ctx: typer.Context, ref: ScheduleRef, json_output: JsonFlag = False) -> None:
    """One schedule: its settings and next fire times."""
    s = session(ctx, json_output)
    schedule = s.api.get(f"/schedules/{schedule_id(s, ref)}")
    s.emit(schedule, render.schedule_detail(schedule))


@schedules_app.command("preview")
def schedules_preview(
    ctx: typer.Context,
    ref: Annotated[
        str | None,
        typer.Argument(metavar="[SCHEDULE]", help="The schedule's id or name.", show_default=False),
    ] = None,
    cron: Annotated[
        str | None, typer.Option("--cron", help="An expression not saved yet, instead of SCHEDULE.")
    ] = None,
    timezone: Annotated[str, typer.Option("--timezone", "--tz", help="Zone of --cron.")] = "UTC",
    count: Annotated[int, typer.Option("--count", "-n", min=1, max=1000, help="How many.")] = 10,
    json_output: JsonFlag = False,
) -> None:
    """The next fire times of a schedule, or of an expression (--cron), in UTC and local time."""
    if (ref is None) == (cron is None):
        raise typer.BadParameter("name a SCHEDULE or give --cron, not both")
    s = session(ctx, json_output)
    if cron is not None:
        preview = s.api.get(
            "/schedules/preview", {"cron": cron, "timezone": timezone, "count": count}
        )
    else:
        preview = s.api.get(f"/schedules/{schedule_id(s, ref or '')}/preview", {"count": count})
    s.emit(preview, render.fire_times_table(preview["fire_times"]))


def set_paused(ctx: typer.Context, ref: str, action: str, json_output: bool) -> None:
    s = session(ctx, json_output)
    schedule = s.api.post(f"/schedules/{schedule_id(s, ref)}/{action}")
    state = "paused" if schedule["paused"] else "active"
    s.emit(schedule, Text(f"schedule {schedule['name']} ({schedule['id']}) is {state}"))


@schedules_app.command("pause")
def schedules_pause(ctx: typer.Context, ref: ScheduleRef, json_output: JsonFlag = False) -> None:
    """Stop running ticks; each is still recorded, as skipped_paused."""
    set_paused(ctx, ref, "pause", json_output)


@schedules_app.command("resume")
def schedules_resume(ctx: typer.Context, ref: ScheduleRef, json_output: JsonFlag = False) -> None:
    """Run ticks again, from now on."""
    set_paused(ctx, ref, "resume", json_output)


@schedules_app.command("trigger")
def schedules_trigger(
    ctx: typer.Context,
    ref: ScheduleRef,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the run to end; exit with its status.")
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Start one run now, even when paused, under the overlap policy."""
    s = session(ctx, json_output)
    answer = s.api.post(f"/schedules/{schedule_id(s, ref)}/trigger")
    task = answer["task"]
    for cancelled in answer["cancelled_task_ids"]:
        s.note(f"cancelled the previous run, task {cancelled}")
    if wait:
        s.note(str(render.task_summary(task)))
        wait_and_exit(s, task["task_id"])
    s.emit(answer, render.task_summary(task))


@schedules_app.command("ticks")
def schedules_ticks(
    ctx: typer.Context,
    ref: ScheduleRef,
    limit: Limit = 20,
    cursor: Cursor = None,
    json_output: JsonFlag = False,
) -> None:
    """The tick ledger, newest first: what each fire time did, and why."""
    s = session(ctx, json_output)
    sid = schedule_id(s, ref)
    page = s.api.get(f"/schedules/{sid}/ticks", {"limit": limit, "cursor": cursor})
    s.emit(page, render.ticks_table(page["ticks"]))
    more(s, f"skiplock schedules ticks {ref}", page)


@schedules_app.command("rm")
def schedules_rm(ctx: typer.Context, ref: ScheduleRef, json_output: JsonFlag = False) -> None:
    """Delete a schedule for good; runs already started keep running."""
    s = session(ctx, json_output)
    sid = schedule_id(s, ref)
    s.api.delete(f"/schedules/{sid}")
    s.emit({"id": sid, "deleted": True}, Text(f"schedule {ref} deleted"))


def main() -> None:
    """The `skiplock` console command."""
    try:
        app(prog_name="skiplock")
    except CliError as exc:
        print(f"skiplock: {exc}", file=sys.stderr)
        sys.exit(1)
