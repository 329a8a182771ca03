"""common/heap.py, in a fresh interpreter (the test process's own collector is left alone)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECK = """
import gc
from common import heap
assert gc.get_freeze_count() == 0
heap.settle()
assert gc.get_freeze_count() > 1000, gc.get_freeze_count()
assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD
assert gc.isenabled()
"""


def test_settle_freezes_start_up_and_keeps_collecting():
    run = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
