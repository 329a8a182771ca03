"""The dashboard in a real Chromium against a cluster that requires API tokens: the token is
asked for once, kept for the browser session and sent as a bearer header; a refused token is
asked for again; a read-only token sees every page but no button that would change anything."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from devtools.cluster import Cluster, wait_for
from tests.support.browser import VIEWPORT, PageWatch, chromium

WRITE = "dashboard-write-" + "a1" * 12
READ = "dashboard-read-" + "b2" * 12
SEEN = 30_000  # ms


@pytest.fixture(scope="module")
def cluster(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("dashboard-tokens")
    tokens = directory / "api_tokens"
    tokens.write_text(f"ops write {WRITE}\nviewer read {READ}\n")
    cluster = Cluster(module_database_url, directory, env={"SKIPLOCK_API_TOKENS_FILE": str(tokens)})
    try:
        cluster.start(workers=1, slots=2)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {WRITE}"}
    with httpx.Client(base_url=cluster.scheduler_url, headers=headers, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser, cluster: Cluster) -> Iterator[Page]:
    context = browser.new_context(base_url=cluster.scheduler_url, viewport=VIEWPORT)
    page = context.new_page()
    watch = PageWatch(cluster.scheduler_url)
    watch.attach(page)
    try:
        yield page
        assert watch.problems == [] and watch.dialogs == []
    finally:
        context.close()


def enter_token(page: Page, token: str) -> None:
    dialog = page.get_by_role("dialog", name="API token")
    expect(dialog).to_be_visible()
    dialog.get_by_label("API token").fill(token)
    dialog.get_by_role("button", name="Use token").click()


def sign_in(page: Page, token: str) -> None:
    enter_token(page, token)
    expect(page.get_by_role("dialog", name="API token")).to_have_count(0)


def test_a_refused_token_is_asked_for_again_and_a_good_one_is_kept(page: Page) -> None:
    page.goto("/ui/tasks")
    enter_token(page, "not-a-token-of-this-cluster")
    expect(page.get_by_role("dialog", name="API token")).to_contain_text("refused")
    sign_in(page, WRITE)
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    expect(page.get_by_role("button", name="New task")).to_be_visible()
    # Kept for the browser session: a reload asks nothing.
    page.reload()
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    expect(page.get_by_role("dialog", name="API token")).to_have_count(0)


def test_a_read_only_token_sees_everything_and_no_write_button(
    page: Page, api: httpx.Client, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    running = api.post("/schedule", json={"command": f"until [ -e {release} ]; do sleep 0.1; done"})
    assert running.status_code == 201, running.text
    task_id = running.json()["task_id"]
    failed = api.post("/schedule", json={"command": "echo read-only probe; exit 4"})
    failed_id = failed.json()["task_id"]
    schedule = api.post(
        "/schedules", json={"name": "read-only-view", "cron": "@hourly", "command": "true"}
    )
    assert schedule.status_code == 201, schedule.text
    schedule_id = schedule.json()["id"]
    wait_for(
        lambda: api.get(f"/tasks/{task_id}").json()["status"] == "running", 30, message="a run"
    )
    wait_for(
        lambda: api.get(f"/tasks/{failed_id}").json()["status"] == "failed", 30, message="a failure"
    )
    try:
        page.goto("/ui/")
        sign_in(page, READ)
        expect(page.locator("#role-badge")).to_have_text("read-only")
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()

        page.goto("/ui/tasks")
        expect(page.locator("tbody tr").first).to_be_visible(timeout=SEEN)
        expect(page.get_by_role("button", name="New task")).to_have_count(0)

        page.goto(f"/ui/tasks/{task_id}")
        expect(page.locator(".fact").filter(has_text="Status").locator(".badge")).to_have_text(
            "running"
        )
        expect(page.get_by_role("button", name="Cancel task")).to_have_count(0)
        page.goto(f"/ui/tasks/{failed_id}")
        expect(page.locator("#task-output")).to_contain_text("read-only probe", timeout=SEEN)
        expect(page.get_by_role("button", name="Retry")).to_have_count(0)

        page.goto("/ui/schedules")
        expect(page.locator("tbody tr").filter(has_text="read-only-view")).to_have_count(1)
        expect(page.get_by_role("link", name="New schedule")).to_have_count(0)
        page.goto(f"/ui/schedules/{schedule_id}")
        expect(page.get_by_role("heading", name="read-only-view")).to_be_visible()
        for label in ("Pause", "Trigger now", "Edit", "Delete"):
            expect(
                page.get_by_role("button", name=label).or_(page.get_by_role("link", name=label))
            ).to_have_count(0)
        page.goto(f"/ui/schedules/{schedule_id}/edit")
        expect(page.get_by_text("This token may only read")).to_be_visible()

        page.goto("/ui/workers")
        expect(page.locator("#workers-table tbody tr")).to_have_count(1)
        # The API itself refuses a write with this token, whatever a page shows.
        cancel = """async (id) => (await fetch(`/tasks/${id}/cancel`, {method: 'POST',
            headers: {Authorization: 'Bearer ' + sessionStorage.getItem('skiplock.token')}}))"""
        refused = page.evaluate(f"async (id) => (await ({cancel})(id)).status", task_id)
        assert refused == 403
    finally:
        release.touch()
        api.delete(f"/schedules/{schedule_id}")
