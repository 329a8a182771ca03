"""The dispatch loop: claiming due tasks and handing them over to their workers."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from common.logs import get_logger
from common.loops import Pacer, wait_any
from common.metrics import DATABASE_ERRORS
from coordinator_svc import transitions
from coordinator_svc.config import CoordinatorConfig
from coordinator_svc.endings import record_endings
from coordinator_svc.metrics import CLAIMED, CLAIMS, HANDOVERS
from coordinator_svc.wakeups import Wakeups
from coordinator_svc.worker_stubs import NoAnswer, NotSent, WorkerStubs
from proto import skiplock_pb2 as pb
from proto.timestamps import to_timestamp
from store import dispatch
from store.db import DB_ERRORS, in_transaction
from store.models import AttemptEnd, Claim, ClaimedAttempt
from store.vocabulary import AttemptStatus, EndReason

log = get_logger(__name__)

# How a hand-over that did not take counts in skiplock_handovers_total.
HANDOVER_RESULTS = {
    EndReason.WORKER_UNREACHABLE: "unreachable",
    EndReason.WORKER_REFUSED: "refused",
}

# While work is left behind (every slot taken, or more due than the last claim took), at most
# one claim per this many seconds: each then fills every slot freed since the last one, in one
# statement and one call per worker. Otherwise a wake-up is claimed at once: a task that
# arrives alone waits for no window, and what arrives while a claim is in flight is taken by
# the next one.
CLAIM_INTERVAL = 0.005


def by_worker(attempts: list[ClaimedAttempt]) -> list[list[ClaimedAttempt]]:
    """The attempts of one claim grouped per worker, in claim order."""
    groups: dict[str, list[ClaimedAttempt]] = {}
    for attempt in attempts:
        groups.setdefault(attempt.worker_id, []).append(attempt)
    return list(groups.values())


def left_behind(claim: Claim) -> bool:
    """Whether a claim left work it could not take: every slot was taken (none was free, or it
    filled them all), or some class found as many due tasks as it had slots."""
    return claim.more or len(claim.attempts) >= claim.free


def timeout_ms(seconds: float | None) -> int:
    """A task's timeout for the wire: 0 means none, so a set timeout never rounds down to 0."""
    return max(round(seconds * 1000), 1) if seconds else 0


class Dispatcher:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        config: CoordinatorConfig,
        wakeups: Wakeups,
        stubs: WorkerStubs,
    ) -> None:
        self.pool = pool
        self.config = config
        self.wakeups = wakeups
        self.stubs = stubs
        self.rotation = 0
        # Whether the last claim left work behind: the next one is then paced (CLAIM_INTERVAL).
        self.behind = False
        self._handovers: set[asyncio.Task[None]] = set()

    async def dispatch_loop(self, stop: asyncio.Event) -> None:
        """Claim as long as work and slots are there; otherwise sleep until the next due time,
        a wake-up or the poll interval, whichever comes first."""
        pacer = Pacer(CLAIM_INTERVAL)
        while not stop.is_set():
            if self.behind:
                await pacer.turn()
            self.wakeups.dispatch.clear()
            try:
                delay = await self.dispatch_once()
            except DB_ERRORS as exc:
                DATABASE_ERRORS.labels("dispatch").inc()
                log.warning("dispatch failed (%s); retrying", exc)
                delay = self.config.poll_interval
            if delay > 0:
                await wait_any([stop, self.wakeups.dispatch], delay)
        await self.finish_handovers()

    async def dispatch_once(self) -> float:
        """Claim and hand over one batch; return how long to wait before the next one."""

        async def claim(conn: psycopg.AsyncConnection[Any]) -> Claim:
            return await dispatch.claim_for_free_slots(conn, self.config.lost_after, self.rotation)

        # One statement, so no transaction around it: one round trip per batch.
        claim_ = await in_transaction(self.pool, claim, atomic=False)
        CLAIMS.inc()
        CLAIMED.inc(len(claim_.attempts))
        self.rotation += 1
        self.wakeups.slots_wanted = len(claim_.attempts) >= claim_.free
        self.behind = left_behind(claim_)
        for attempts in by_worker(claim_.attempts):
            task = asyncio.create_task(self.hand_over(attempts))
            self._handovers.add(task)
            task.add_done_callback(self._handovers.discard)
        if claim_.free == 0:
            return self.config.poll_interval  # woken early when a slot frees up
        if claim_.more:
            return 0.0  # maybe more is due
        if claim_.next_due_in is None:
            return self.config.poll_interval
        return min(max(claim_.next_due_in, 0.0), self.config.poll_interval)

    async def hand_over(self, attempts: list[ClaimedAttempt]) -> None:
        """Send one worker its attempts in one message on its stream; give back those it
        refused, or all of them when they could not be written to it. Written but without an
        answer in time, the worker may have taken them: they stay its own, and reconciliation
        settles them from its heartbeats (an attempt it does not hold is given back after the
        hand-over grace; a dead worker is declared lost), so no attempt is started twice."""
        worker_id, address = attempts[0].worker_id, attempts[0].address
        request = pb.SubmitTasksRequest(attempts=[self.submit_request(a) for a in attempts])
        try:
            response = await self.stubs.submit(address, request, self.config.submit_timeout)
        except NoAnswer as exc:
            HANDOVERS.labels("no_answer").inc(len(attempts))
            log.warning(
                "hand-over unanswered; left to reconciliation",
                worker_id=worker_id,
                attempts=len(attempts),
                task_ids=[str(a.task_id) for a in attempts],
                detail=str(exc),
            )
            return
        except NotSent as exc:
            refused = [(a, EndReason.WORKER_UNREACHABLE, str(exc)) for a in attempts]
        else:
            if len(response.results) != len(attempts):
                HANDOVERS.labels("protocol_error").inc(len(attempts))
                log.error(
                    "protocol error: results do not match the hand-over; left to reconciliation",
                    worker_id=worker_id,
                    results=len(response.results),
                    attempts=len(attempts),
                )
                return
            refused = [
                (a, EndReason.WORKER_REFUSED, result.reason)
                for a, result in zip(attempts, response.results, strict=True)
                if not result.accepted
            ]
        taken = {(a.task_id, a.attempt) for a, _, _ in refused}
        transitions.handed_over(a for a in attempts if (a.task_id, a.attempt) not in taken)
        if not refused:
            return
        for _, reason, _ in refused:
            HANDOVERS.labels(HANDOVER_RESULTS[reason]).inc()
        for attempt, reason, detail in refused:
            log.info(
                "hand-over not taken",
                task_id=str(attempt.task_id),
                attempt=attempt.attempt,
                worker_id=worker_id,
                schedule_id=str(attempt.schedule_id) if attempt.schedule_id else None,
                reason=reason.value,
                detail=detail,
            )
        ends = [
            AttemptEnd(
                attempt.task_id,
                attempt.attempt,
                AttemptStatus.FAILED,
                reason,
                worker_id=worker_id,
                detail=detail,
            )
            for attempt, reason, detail in refused
        ]
        await record_endings(self.pool, ends)
        self.wakeups.dispatch.set()

    def submit_request(self, claimed: ClaimedAttempt) -> pb.SubmitTaskRequest:
        return pb.SubmitTaskRequest(
            ref=pb.AttemptRef(task_id=str(claimed.task_id), attempt=claimed.attempt),
            command=claimed.command,
            timeout_ms=timeout_ms(claimed.timeout_seconds),
            not_before=to_timestamp(claimed.run_at),
            output_cap_bytes=claimed.output_cap_bytes,
            memory_limit_bytes=claimed.memory_limit_bytes,
            cpu_limit_seconds=claimed.cpu_limit_seconds,
            open_files_limit=claimed.open_files_limit,
            env=claimed.env,
            cwd=claimed.cwd or "",
            success_exit_codes=claimed.success_exit_codes,
        )

    async def finish_handovers(self) -> None:
        if self._handovers:
            await asyncio.wait(list(self._handovers), timeout=self.config.submit_timeout + 1)
