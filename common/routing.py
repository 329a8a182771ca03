"""Queue names and labels, checked the same way wherever they enter: the HTTP API (tasks and
schedules), a worker's --queues and --labels, and the heartbeat that carries them."""

from __future__ import annotations

import re
from collections.abc import Mapping

DEFAULT_QUEUE = "default"
MAX_QUEUES = 64
MAX_LABELS = 16
# A queue name or label key: 1-64 of letters, digits and _ . : - , starting with a letter or digit.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", re.ASCII)
# A label value: 1-128 printable ASCII characters other than space, comma and equals.
VALUE = re.compile(r"[!-+\--<>-~]{1,128}", re.ASCII)
# A concurrency key: 1-128 of letters, digits and _ . : / - , starting with a letter or digit.
CONCURRENCY_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}", re.ASCII)
MAX_CONCURRENCY_LIMIT = 10_000
NAME_RULE = "1-64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit"
VALUE_RULE = "1-128 printable ASCII characters other than space, ',' and '='"


def queue_problem(name: str) -> str:
    return "" if NAME.fullmatch(name) else f"queue {name[:80]!r}: {NAME_RULE}"


def labels_problem(labels: Mapping[str, str]) -> str:
    if len(labels) > MAX_LABELS:
        return f"at most {MAX_LABELS} labels"
    for key, value in labels.items():
        if not NAME.fullmatch(key):
            return f"label key {key[:80]!r}: {NAME_RULE}"
        if not VALUE.fullmatch(value):
            return f"label {key!r} value {value[:80]!r}: {VALUE_RULE}"
    return ""


def parse_queues(text: str) -> tuple[str, ...]:
    """`a,b` -> ('a', 'b'), sorted and without repeats; raises ValueError naming the problem."""
    names = sorted({part.strip() for part in text.split(",") if part.strip()})
    if not names:
        raise ValueError("give at least one queue")
    if len(names) > MAX_QUEUES:
        raise ValueError(f"at most {MAX_QUEUES} queues")
    for name in names:
        if problem := queue_problem(name):
            raise ValueError(problem)
    return tuple(names)


def parse_labels(text: str) -> dict[str, str]:
    """`k=v,k2=v2` -> {'k': 'v', 'k2': 'v2'}; raises ValueError naming the problem."""
    labels: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"label {part[:80]!r} is not key=value")
        if key in labels:
            raise ValueError(f"label {key!r} is given twice")
        labels[key] = value
    if problem := labels_problem(labels):
        raise ValueError(problem)
    return labels
