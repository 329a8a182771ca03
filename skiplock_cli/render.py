"""How the API's JSON looks to people: Rich tables and short summaries. Scripts use --json."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

STATUS_STYLES = {
    "waiting": "cyan",
    "queued": "cyan",
    "dispatched": "blue",
    "running": "yellow",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "started": "green",
    "missed": "red",
}
COMMAND_WIDTH = 40


def cell(value: Any) -> Text:
    """A table cell that never interprets markup in what it shows (commands, names)."""
    if value is None:
        return Text("-", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    return Text(str(value))


def status_text(status: str | None) -> Text:
    return Text(status or "-", style=STATUS_STYLES.get(status or "", ""))


def when(value: str | None) -> Text:
    """An RFC 3339 UTC time to the second: '2026-11-24 18:43:52Z'."""
    if value is None:
        return cell(None)
    parsed = datetime.fromisoformat(value)
    return Text(parsed.strftime("%Y-%m-%d %H:%M:%S") + ("Z" if value.endswith("Z") else ""))


def seconds_between(start: str | None, end: str | None) -> str | None:
    if start is None or end is None:
        return None
    delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return f"{delta.total_seconds():.3f}s"


def short(command: str, width: int = COMMAND_WIDTH) -> Text:
    one_line = " ".join(command.split())
    return Text(one_line if len(one_line) <= width else one_line[: width - 1] + "…")


def table(columns: Sequence[str], rows: Sequence[Sequence[Text]]) -> Table:
    """Columns that never wrap; only a COMMAND column gives way (with …) on a narrow terminal."""
    grid = Table(box=None, header_style="bold", pad_edge=False)
    for index, name in enumerate(columns):
        widest = max([len(name), *(row[index].cell_len for row in rows)])
        fixed = None if name == "COMMAND" else widest
        grid.add_column(name, no_wrap=True, overflow="ellipsis", min_width=fixed)
    for row in rows:
        grid.add_row(*row)
    return grid


def fields(rows: Sequence[tuple[str, Text]]) -> Group:
    """'name  value' lines, the values aligned."""
    width = max(len(name) for name, _ in rows)
    return Group(*(Text.assemble((name.ljust(width), "bold"), "  ", value) for name, value in rows))


# -- tasks ----------------------------------------------------------------------------------


def task_summary(task: dict[str, Any]) -> Text:
    """One line: 'task ID succeeded (exit 0, 0.012s on worker-1)' or 'task ID queued for …'."""
    line = Text(f"task {task['task_id']} ")
    line.append_text(status_text(task["status"]))
    status = task["status"]
    if status == "queued":
        # run_at (task details only) is when it is due now, e.g. after a retry's backoff.
        line.append(f" for {when(task.get('run_at') or task['scheduled_at'])}")
    elif status == "waiting":
        line.append(f" for {task.get('waiting_for') or 'the tasks in its after'}")
    elif status in ("dispatched", "running"):
        line.append(f" (attempt {task['attempt']} on {task['worker_id']})")
    else:
        facts = []
        if task.get("exit_code") is not None:
            facts.append(f"exit {task['exit_code']}")
        if task.get("last_reason") not in (None, "exit_code", status):
            facts.append(f"reason {task['last_reason']}")
        took = seconds_between(task.get("started_at"), task.get("completed_at"))
        if took is not None:
            facts.append(f"ran {took} on {task['worker_id']}")
        if facts:
            line.append(f" ({', '.join(facts)})")
    return line


def task_detail(task: dict[str, Any]) -> RenderableType:
    summary = fields(
        [
            ("task", cell(task["task_id"])),
            ("command", cell(task["command"])),
            ("status", status_text(task["status"])),
            ("exit code", cell(task["exit_code"])),
            ("reason", cell(task["last_reason"])),
            ("scheduled", when(task["scheduled_at"])),
            ("started", when(task["started_at"])),
            ("ended", when(task["completed_at"])),
            ("worker", cell(task["worker_id"])),
            ("retries left", cell(f"{task['retries_left']} of {task['max_retries']}")),
            ("timeout", cell(task["timeout_seconds"] and f"{task['timeout_seconds']:g}s")),
        ]
    )
    attempts = [
        [
            cell(attempt["attempt"]),
            status_text(attempt["status"]),
            cell(attempt["reason"]),
            cell(attempt["exit_code"]),
            cell(attempt["worker_id"]),
            when(attempt["started_at"]),
            cell(seconds_between(attempt["started_at"], attempt["ended_at"])),
        ]
        for attempt in task["attempts"]
    ]
    columns = ("ATTEMPT", "STATUS", "REASON", "EXIT", "WORKER", "STARTED", "RAN")
    return Group(summary, Text(), table(columns, attempts)) if attempts else summary


def tasks_table(tasks: Sequence[dict[str, Any]]) -> Table:
    rows = [
        [
            cell(task["task_id"]),
            status_text(task["status"]),
            cell(task["exit_code"]),
            when(task["scheduled_at"]),
            short(task["command"]),
        ]
        for task in tasks
    ]
    return table(("ID", "STATUS", "EXIT", "SCHEDULED", "COMMAND"), rows)


# -- schedules ------------------------------------------------------------------------------


def schedules_table(schedules: Sequence[dict[str, Any]]) -> Table:
    rows = [
        [
            cell(schedule["name"]),
            cell(schedule["cron"]),
            cell(schedule["timezone"]),
            cell(schedule["paused"]),
            when(next_fire(schedule)),
            short(schedule["command"]),
        ]
        for schedule in schedules
    ]
    return table(("NAME", "CRON", "TIMEZONE", "PAUSED", "NEXT (UTC)", "COMMAND"), rows)


def next_fire(schedule: dict[str, Any]) -> str | None:
    upcoming = schedule["next_fire_times"]
    return str(upcoming[0]["utc"]) if upcoming else None


def schedule_detail(schedule: dict[str, Any]) -> RenderableType:
    timeout = schedule["timeout_seconds"]
    summary = fields(
        [
            ("schedule", cell(schedule["id"])),
            ("name", cell(schedule["name"])),
            ("cron", cell(schedule["cron"])),
            ("timezone", cell(schedule["timezone"])),
            ("command", cell(schedule["command"])),
            ("paused", cell(schedule["paused"])),
            ("overlap", cell(schedule["overlap"])),
            ("catch-up window", cell(f"{schedule['catchup_window_seconds']}s")),
            ("jitter", cell(f"{schedule['jitter_seconds']:g}s")),
            ("timeout", cell(timeout and f"{timeout:g}s")),
            ("retries", cell(schedule["max_retries"])),
            ("created", when(schedule["created_at"])),
        ]
    )
    return Group(summary, Text(), fire_times_table(schedule["next_fire_times"]))


def fire_times_table(fire_times: Sequence[dict[str, Any]]) -> Table:
    rows = [[cell(fire["utc"]), cell(fire["local"])] for fire in fire_times]
    return table(("NEXT (UTC)", "LOCAL"), rows)


def ticks_table(ticks: Sequence[dict[str, Any]]) -> Table:
    rows = [
        [
            when(tick["fire_time"]),
            status_text(tick["outcome"]),
            cell(tick["task_id"]),
            status_text(tick["task_status"]) if tick["task_status"] else cell(None),
        ]
        for tick in ticks
    ]
    return table(("FIRE TIME (UTC)", "OUTCOME", "TASK", "TASK STATUS"), rows)


# -- fleet and stats ------------------------------------------------------------------------


def worker_state(worker: dict[str, Any]) -> Text:
    if worker["lost"]:
        return Text("lost", style="red")
    if worker["draining"]:
        return Text("draining", style="yellow")
    return Text("ok", style="green")


def workers_table(workers: Sequence[dict[str, Any]]) -> Table:
    rows = [
        [
            cell(worker["id"]),
            cell(worker["address"]),
            worker_state(worker),
            cell(f"{worker['busy']}/{worker['slots']}"),
            cell(f"{worker['heartbeat_age_seconds']:.1f}s"),
            when(worker["registered_at"]),
        ]
        for worker in workers
    ]
    return table(("ID", "ADDRESS", "STATE", "BUSY", "HEARTBEAT AGO", "REGISTERED"), rows)


def worker_detail(worker: dict[str, Any]) -> RenderableType:
    summary = fields(
        [
            ("worker", cell(worker["id"])),
            ("address", cell(worker["address"])),
            ("state", worker_state(worker)),
            ("busy", cell(f"{worker['busy']} of {worker['slots']} slots")),
            ("heartbeat", cell(f"{worker['heartbeat_age_seconds']:.1f}s ago")),
            ("registered", when(worker["registered_at"])),
        ]
    )
    rows = [
        [
            cell(held["task_id"]),
            cell(held["attempt"]),
            status_text(held["status"]),
            when(held["started_at"]),
            short(held["command"]),
        ]
        for held in worker["attempts"]
    ]
    if not rows:
        return summary
    return Group(summary, Text(), table(("TASK", "ATTEMPT", "STATUS", "STARTED", "COMMAND"), rows))


def seconds(value: float | None) -> str | None:
    return None if value is None else f"{value:.3f}s"


def stats_summary(stats: dict[str, Any]) -> RenderableType:
    tasks, fleet, ticks = stats["tasks"], stats["fleet"], stats["ticks"]
    delay = stats["start_delay"]
    finished = table(
        ("LAST", "SUCCEEDED", "FAILED", "CANCELLED"),
        [
            [
                cell(f"{w['minutes']} min"),
                cell(w["succeeded"]),
                cell(w["failed"]),
                cell(w["cancelled"]),
            ]
            for w in stats["finished"]
        ],
    )
    outcomes = ", ".join(f"{k} {v}" for k, v in ticks.items() if k != "minutes" and v)
    summary = fields(
        [
            ("backlog", cell(f"{tasks['queued_due']} due now, {tasks['queued_later']} later")),
            ("oldest due", cell(seconds(stats["oldest_due_age_seconds"]))),
            ("running", cell(f"{tasks['running']} running, {tasks['dispatched']} dispatched")),
            (
                "workers",
                cell(f"{fleet['workers']} ({fleet['lost']} lost, {fleet['draining']} draining)"),
            ),
            ("slots busy", cell(f"{fleet['busy']} of {fleet['slots']}")),
            (
                f"start delay ({delay['minutes']} min)",
                cell(
                    f"p50 {seconds(delay['p50'])}  p95 {seconds(delay['p95'])}  "
                    f"p99 {seconds(delay['p99'])}  ({delay['samples']} tasks)"
                    if delay["samples"]
                    else None
                ),
            ),
            (f"cron ticks ({ticks['minutes']} min)", cell(outcomes or "none")),
        ]
    )
    return Group(summary, Text(), finished)


def event_line(event: dict[str, Any]) -> Text:
    """One event: time, kind, what it is about and what changed."""
    data = dict(event["data"])
    about = event["task_id"] or event["worker_id"] or event["schedule_id"] or ""
    change = data.pop("status", None) or data.pop("outcome", None)
    command = data.pop("command", None)
    data.pop("scheduled_at", None)
    notes = []
    if data.get("attempt"):
        notes.append(f"#{data['attempt']}")
    if data.get("exit_code") is not None:
        notes.append(f"exit {data['exit_code']}")
    if data.get("reason") and data["reason"] != "exit_code":
        notes.append(str(data["reason"]))
    notes += [f"{k}={v}" for k, v in data.items() if k not in ("attempt", "exit_code", "reason")]
    parts: list[str | Text] = [when(event["at"]), " ", Text(event["kind"].ljust(7), "bold")]
    parts += [" ", str(about), " ", status_text(change), " ", Text(" ".join(notes), "dim")]
    if command is not None:
        parts += [" " if notes else "", short(command)]
    return Text.assemble(*parts)

def console_for(stderr: bool = False) -> Console:
    # Markup is off everywhere: what is printed comes from the API (commands, names, details).
    return Console(stderr=stderr, markup=False, highlight=False, soft_wrap=False)
