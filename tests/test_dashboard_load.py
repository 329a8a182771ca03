"""The dashboard's task list under load, in a real Chromium: 100,000 tasks in the database and a
stream of about 100 task events a second. The list shows one page, and the events are batched:
the page re-reads the list a few times a second, not once per event."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Request, expect

from devtools.cluster import Cluster
from tests.support.browser import VIEWPORT, PageWatch, chromium

TASKS = 100_000
BATCH = 10_000
EVENTS_PER_SECOND = 100
STREAM_SECONDS = 6
PAGE_SIZE = 50
# Re-reads allowed while the stream runs: two a second (the page's promise) plus slack for a
# slow machine; one per event would be about 600.
MAX_LIST_READS = 2 * STREAM_SECONDS + 6
SEEN = 30_000  # ms


@pytest.fixture(scope="module")
def scheduler(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A scheduler alone: no coordinator, so every task stays queued where the test put it."""
    cluster = Cluster(module_database_url, tmp_path_factory.mktemp("dashboard-load"))
    try:
        cluster.start_scheduler()
        yield cluster
    finally:
        cluster.stop()


def submit_many(cluster: Cluster, count: int, label: str) -> None:
    bodies = [{"command": f"echo {label} {i}", "delay_seconds": 86400} for i in range(count)]
    response = cluster.http.post("/tasks/batch", json={"tasks": bodies}, timeout=120)
    assert response.status_code in (200, 201), response.text[:500]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


def test_a_hundred_thousand_tasks_and_a_hundred_events_a_second(
    scheduler: Cluster, browser: Browser, tmp_path: Path
) -> None:
    for n in range(TASKS // BATCH):
        submit_many(scheduler, BATCH, f"seed-{n}")
    context = browser.new_context(base_url=scheduler.scheduler_url, viewport=VIEWPORT)
    page = context.new_page()
    watch = PageWatch(scheduler.scheduler_url)
    watch.attach(page)
    list_reads: list[str] = []

    def count_list_reads(request: Request) -> None:
        if request.url.split("?")[0].endswith("/tasks") and request.method == "GET":
            list_reads.append(request.url)

    try:
        page.goto("/ui/tasks")
        rows = page.locator(".tasks-table tbody tr")
        expect(rows).to_have_count(PAGE_SIZE, timeout=SEEN)
        expect(page.locator("#live-state")).to_have_text("live", timeout=SEEN)
        page.on("request", count_list_reads)
        started = time.monotonic()
        for second in range(STREAM_SECONDS):
            for half in range(2):
                submit_many(scheduler, EVENTS_PER_SECOND // 2, f"stream-{second}-{half}")
            time.sleep(max(0.0, started + second + 1 - time.monotonic()))
        # The newest tasks reach the page, which still holds one page of rows.
        expect(rows.first).to_contain_text(f"stream-{STREAM_SECONDS - 1}-1", timeout=SEEN)
        expect(rows).to_have_count(PAGE_SIZE)
        assert 1 <= len(list_reads) <= MAX_LIST_READS, list_reads
        assert watch.problems == []
    finally:
        context.close()
