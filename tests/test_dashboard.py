"""The dashboard in a real Chromium against a real cluster: submitting and cancelling from the
forms, following tasks and ticks live, untrusted text shown as text, deep links. Each page is
also saved as a screenshot (docs/screenshots with `make screenshots`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from devtools.cluster import Cluster, wait_for
from tests.conftest import failed_so_far
from tests.support.browser import VIEWPORT, ColorScheme, PageWatch, chromium, screenshot

# Generous: the machine is shared, and a page refreshes every few seconds.
SEEN = 30_000  # ms
ESC = "\x1b"


@pytest.fixture(scope="module")
def cluster(module_cluster: Cluster) -> Cluster:
    """One coordinator, the scheduler and two workers, shared by this module's tests."""
    return module_cluster


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


class Session:
    """A fresh browser context (its own sessionStorage) on the cluster's scheduler."""

    def __init__(self, browser: Browser, cluster: Cluster, scheme: ColorScheme = "light") -> None:
        self.context = browser.new_context(
            base_url=cluster.scheduler_url, viewport=VIEWPORT, color_scheme=scheme
        )
        self.page = self.context.new_page()
        self.watch = PageWatch(cluster.scheduler_url)
        self.watch.attach(self.page)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def session(
    request: pytest.FixtureRequest, browser: Browser, cluster: Cluster, shots: Path
) -> Iterator[Session]:
    session = Session(browser, cluster)
    try:
        yield session
        assert session.watch.problems == []
        assert session.watch.dialogs == [], "a dialog opened: markup from data ran"
    finally:
        if failed_so_far(request):
            session.page.screenshot(path=str(shots / f"failed-{request.node.name}.png"))
        session.close()


def row_of(page: Page, text: str) -> Locator:
    return page.locator("tbody tr").filter(has_text=text)


def submit_task(cluster: Cluster, command: str, **fields: object) -> str:
    response = cluster.http.post("/schedule", json={"command": command, **fields})
    assert response.status_code == 201, response.text
    task_id: str = response.json()["task_id"]
    return task_id


def task_status(cluster: Cluster, task_id: str) -> str:
    status: str = cluster.http.get(f"/tasks/{task_id}").json()["status"]
    return status


def test_submit_from_the_form_follow_it_live_and_cancel_it(
    session: Session, cluster: Cluster, shots: Path, tmp_path: Path
) -> None:
    go_on = tmp_path / "go-on"
    page = session.page
    page.goto("/ui/tasks")
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()

    page.get_by_role("button", name="New task").click()
    dialog = page.get_by_role("dialog", name="New task")
    dialog.get_by_label("Command").fill(
        f"echo started; until [ -e {go_on} ]; do sleep 0.1; done; echo still going; sleep 600"
    )
    dialog.get_by_role("button", name="Queue task").click()
    expect(dialog).to_be_hidden()

    # The list follows the task from queued to running without a reload.
    row = row_of(page, "echo still going")
    expect(row).to_have_count(1, timeout=SEEN)
    expect(row.locator(".badge")).to_have_text("running", timeout=SEEN)

    row.get_by_role("link").first.click()
    expect(page).to_have_url(re.compile(r"/ui/tasks/[0-9a-f-]{36}$"))
    task_id = page.url.rsplit("/", 1)[1]
    expect(page.locator(".fact").filter(has_text="Status").locator(".badge")).to_have_text(
        "running"
    )
    expect(page.locator(".tl-run.status-running")).to_have_count(1)
    # Its output is followed while it runs: a line printed after the page opened shows up.
    output = page.locator("#task-output")
    expect(output).to_contain_text("started", timeout=SEEN)
    expect(output).not_to_contain_text("still going")
    go_on.touch()
    expect(output).to_contain_text("still going", timeout=SEEN)
    expect(page.locator(".output-info")).to_contain_text("following")

    page.get_by_role("button", name="Cancel task").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel task").click()
    expect(page.locator(".fact").filter(has_text="Status").locator(".badge")).to_have_text(
        "cancelled", timeout=SEEN
    )
    assert task_status(cluster, task_id) == "cancelled"
    expect(page.get_by_role("button", name="Cancel task")).to_have_count(0)
    # The attempt ends once the worker has stopped the command.
    attempts = page.locator("table").filter(has_text="Handed over")
    expect(attempts.locator("tbody tr").first.locator(".badge")).to_have_text(
        "cancelled", timeout=SEEN
    )
    screenshot(page, "task", shots)


def test_submit_form_shows_the_api_error_inline(session: Session) -> None:
    page = session.page
    page.goto("/ui/tasks")
    page.get_by_role("button", name="New task").click()
    dialog = page.get_by_role("dialog", name="New task")
    dialog.get_by_label("Command").fill("   ")
    dialog.get_by_role("button", name="Queue task").click()
    error = dialog.locator('[data-field="command"] .field-error')
    expect(error).to_contain_text("must not be empty")
    expect(dialog.get_by_label("Command")).to_have_attribute("aria-invalid", "true")


def test_failed_task_is_retried_from_its_page(session: Session, cluster: Cluster) -> None:
    task_id = submit_task(cluster, "echo trying; exit 3")
    wait_for(lambda: task_status(cluster, task_id) == "failed", 30, message="the task to fail")
    page = session.page
    page.goto(f"/ui/tasks/{task_id}")
    expect(page.get_by_role("button", name="Cancel task")).to_have_count(0)
    page.get_by_role("button", name="Retry").click()
    expect(page.locator("table").filter(has_text="Handed over").locator("tbody tr")).to_have_count(
        2, timeout=SEEN
    )
    wait_for(lambda: task_status(cluster, task_id) == "failed", 30, message="the retry to fail")


def test_a_waiting_task_says_what_it_waits_for(
    session: Session, cluster: Cluster, shots: Path
) -> None:
    first = submit_task(cluster, "true", delay_seconds=3600)
    waiting = submit_task(cluster, "echo later", after=[first])
    page = session.page
    page.goto(f"/ui/tasks/{waiting}")
    expect(page.get_by_role("status").filter(has_text="Waiting")).to_contain_text(
        "1 of 1 tasks in after have not succeeded"
    )
    expect(page.get_by_role("link", name=first[:8])).to_be_visible()
    screenshot(page, "task-waiting", shots)
    page.goto("/ui/tasks")
    page.get_by_role("navigation", name="Filter by status").get_by_role(
        "link", name="waiting"
    ).click()
    expect(row_of(page, waiting[:8])).to_have_count(1, timeout=SEEN)
    expect(row_of(page, first[:8])).to_have_count(0)
    page.goto(f"/ui/tasks/{first}")
    page.get_by_role("button", name="Cancel task").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel task").click()
    # Leaving the page before the cancel's answer arrives could abort the request.
    expect(page.locator(".fact").filter(has_text="Status").locator(".badge")).to_have_text(
        "cancelled", timeout=SEEN
    )
    page.goto(f"/ui/tasks/{waiting}")
    expect(
        page.get_by_text("Never ran: a task in its after failed or was cancelled.")
    ).to_be_visible(timeout=SEEN)
    expect(page.get_by_text("dependency_failed").first).to_be_visible()


def test_schedule_from_the_form_and_its_ticks(
    session: Session, cluster: Cluster, shots: Path
) -> None:
    page = session.page
    page.goto("/ui/schedules")
    page.get_by_role("link", name="New schedule").click()
    expect(page.get_by_role("heading", name="New schedule")).to_be_visible()
    page.get_by_label("Name").fill("every-two-seconds")
    page.get_by_label("Command").fill("echo tick")

    # The API's own message about a bad expression appears under the field as it is typed,
    # and again if it is submitted anyway.
    page.get_by_label("Cron expression").fill("61 * * * *")
    cron_error = page.locator('[data-field="cron"] .field-error')
    expect(cron_error).not_to_be_empty()
    page.get_by_role("button", name="Create schedule").click()
    expect(cron_error).not_to_be_empty()

    # A good one previews its next fires, in UTC and in the zone typed.
    page.get_by_label("Cron expression").fill("*/2 * * * * *")
    page.get_by_label("Time zone").fill("Europe/Paris")
    preview = page.locator("#cron-preview li")
    expect(preview).to_have_count(5)
    expect(preview.first).to_contain_text("Europe/Paris")
    expect(cron_error).to_be_empty()
    screenshot(page, "schedule-form", shots)
    page.get_by_role("button", name="Create schedule").click()
    expect(page.get_by_role("heading", name="every-two-seconds")).to_be_visible()
    schedule_id = page.url.rsplit("/", 1)[1]

    ledger = page.locator(".ticks-table tbody tr")
    expect(ledger.filter(has_text="started").nth(1)).to_be_visible(timeout=SEEN)
    expect(page.locator("table").filter(has_text="Europe/Paris")).to_contain_text("+01:00")
    screenshot(page, "schedule", shots)

    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".subtitle .badge")).to_have_text("paused")
    expect(ledger.filter(has_text="skipped: paused").first).to_be_visible(timeout=SEEN)
    page.get_by_role("button", name="Resume").click()
    expect(page.locator(".subtitle .badge")).to_have_text("active")

    page.get_by_role("link", name="Schedules", exact=True).first.click()
    expect(row_of(page, "every-two-seconds")).to_have_count(1)
    assert cluster.http.delete(f"/schedules/{schedule_id}").status_code == 204


def test_untrusted_text_is_shown_as_text(session: Session, cluster: Cluster) -> None:
    command = (
        "printf '<script>alert(1)</script>\\n'; "
        f"echo '<img src=x onerror=alert(2)> {ESC}[31mred{ESC}[0m'"
    )
    task_id = submit_task(cluster, command)
    wait_for(lambda: task_status(cluster, task_id) == "succeeded", 30, message="the probe to run")
    page = session.page
    for address in ("/ui/tasks", f"/ui/tasks/{task_id}"):
        page.goto(address)
        shown = page.locator(".command-block, .cell-command").filter(has_text="<script>").first
        expect(shown).to_contain_text("<script>alert(1)</script>")
        expect(shown).to_contain_text("<img src=x onerror=alert(2)>")
        expect(shown).to_contain_text("\u241b[31mred\u241b[0m")  # ESC shown as ␛
        assert page.locator("main script, main img").count() == 0
    # What the command printed, too, is text on the task page.
    output = page.locator("#task-output")
    expect(output).to_contain_text("<script>alert(1)</script>")
    expect(output).to_contain_text("<img src=x onerror=alert(2)> \u241b[31mred\u241b[0m")
    assert page.locator("main script, main img").count() == 0


def test_deep_links_and_keyboard(session: Session, cluster: Cluster) -> None:
    task_id = submit_task(cluster, "echo deep link")
    page = session.page
    page.goto(f"/ui/tasks/{task_id}")
    expect(page.get_by_role("heading", name=f"Task {task_id[:8]}")).to_be_visible()
    page.reload()
    expect(page.get_by_role("heading", name=f"Task {task_id[:8]}")).to_be_visible()

    page.goto("/ui/no/such/page")
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/ui/$"))

    # "g t" goes to the tasks, "/" to their search; a full id opens that task.
    page.keyboard.press("g")
    page.keyboard.press("t")
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    page.keyboard.press("/")
    expect(page.get_by_role("searchbox", name="Find tasks by id")).to_be_focused()
    page.keyboard.type(task_id)
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(f"/ui/tasks/{task_id}$"))
    # Back in the browser's history returns to the list.
    page.go_back()
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()


def seed_a_busy_cluster(cluster: Cluster) -> tuple[list[str], list[str]]:
    """Tasks in every state and a few schedules, for pictures that show what the pages hold."""
    commands = [
        ("pg_dump shop > /backups/shop.sql", {}),
        ("python3 -m reports.daily --date today", {}),
        ("curl -fsS https://example.invalid/health || exit 7", {}),
        ("sleep 45; echo warmed", {}),
        ("rsync -a /srv/media/ /mnt/archive/", {"delay_seconds": 900}),
        ("echo done", {}),
    ]
    task_ids = [submit_task(cluster, command, **fields) for command, fields in commands]
    schedules = [
        {
            "name": "nightly-backup",
            "cron": "0 3 * * *",
            "timezone": "Europe/Berlin",
            "command": "pg_dump shop > /backups/shop.sql",
        },
        {"name": "cache-warm", "cron": "*/15 * * * *", "command": "sleep 1; echo warm"},
        {
            "name": "weekday-report",
            "cron": "0 9 * * MON-FRI",
            "timezone": "America/New_York",
            "command": "python3 -m reports.daily --date today",
        },
    ]
    schedule_ids = []
    for body in schedules:
        response = cluster.http.post("/schedules", json=body)
        assert response.status_code == 201, response.text
        schedule_ids.append(response.json()["id"])
    wait_for(lambda: task_status(cluster, task_ids[3]) == "running", 30, message="a task to run")
    return task_ids, schedule_ids


def test_pictures_of_a_busy_cluster(browser: Browser, cluster: Cluster, shots: Path) -> None:
    task_ids, schedule_ids = seed_a_busy_cluster(cluster)
    try:
        schemes: tuple[ColorScheme, ...] = ("light", "dark")
        for scheme in schemes:
            session = Session(browser, cluster, scheme)
            try:
                page = session.page
                page.goto("/ui/")
                expect(page.get_by_role("heading", name="Overview")).to_be_visible()
                expect(page.get_by_role("region", name="Running now")).to_contain_text("sleep 45")
                expect(page.get_by_role("region", name="Next cron fires")).to_contain_text(
                    "cache-warm"
                )
                # Now and over the last hour: tiles from /stats, charts from /stats/history.
                busy = page.locator(".tile").filter(has_text="Workers busy")
                expect(busy.locator(".tile-value")).to_have_text(re.compile(r"^[1-8] / 8$"))
                expect(page.locator("#trends svg.chart")).to_have_count(3)
                expect(page.locator("#trends polyline.chart-ok").first).to_be_attached(timeout=SEEN)
                screenshot(page, f"overview-{scheme}", shots)
                if scheme == "light":
                    page.get_by_role("link", name="Workers", exact=True).click()
                    expect(page.get_by_role("heading", name="Workers")).to_be_visible()
                    expect(page.locator("#workers-table tbody tr")).to_have_count(2)
                    worker_row = page.locator("#workers-table tbody tr").filter(has_text="live")
                    expect(worker_row).to_have_count(2)
                    screenshot(page, "workers", shots)
                    # The worker running `sleep 45` shows it among its open attempts.
                    holder = cluster.http.get(f"/tasks/{task_ids[3]}").json()["worker_id"]
                    page.get_by_role("link", name=holder, exact=True).click()
                    expect(page.get_by_role("heading", name=f"Worker {holder}")).to_be_visible()
                    expect(page.get_by_role("region", name="Open attempts")).to_contain_text(
                        "sleep 45"
                    )
                    screenshot(page, "worker", shots)
                    page.goto("/ui/tasks")
                    expect(row_of(page, "sleep 45")).to_have_count(1)
                    screenshot(page, "tasks", shots)
                    page.goto("/ui/schedules")
                    expect(row_of(page, "nightly-backup")).to_have_count(1)
                    screenshot(page, "schedules", shots)
                assert session.watch.problems == []
            finally:
                session.close()
    finally:
        for schedule_id in schedule_ids:
            cluster.http.delete(f"/schedules/{schedule_id}")
        for task_id in task_ids:
            cluster.http.post(f"/tasks/{task_id}/cancel")


def test_a_task_waiting_for_a_queue_says_why_and_shows_its_settings(
    session: Session, cluster: Cluster
) -> None:
    task_id = submit_task(
        cluster, "nvidia-smi", queue="gpu-nobody-serves", priority=7, env={"MODEL": "small"}
    )
    page = session.page
    page.goto(f"/ui/tasks/{task_id}")
    expect(page.locator(".notice-waiting")).to_contain_text("gpu-nobody-serves", timeout=SEEN)
    details = page.get_by_role("region", name="Details")

    def fact(label: str) -> Locator:
        return details.locator(".fact").filter(
            has=page.locator("dt", has_text=re.compile(f"^{label}$"))
        )

    expect(fact("Queue")).to_contain_text("gpu-nobody-serves")
    expect(fact("Priority")).to_contain_text("7")
    expect(fact("Environment")).to_contain_text("MODEL=small")
    assert cluster.http.post(f"/tasks/{task_id}/cancel").status_code == 200
