"""Debian's Chromium driven by Playwright, for the dashboard's browser tests.

Playwright never downloads a browser here: it launches /usr/bin/chromium (`apt-get install
chromium`; `.ci/run` installs it), headless, with a fresh temporary profile per launch (made and
removed by Playwright) and with everything that would reach the network on its own switched
off. Each page is watched: a script error, a refused Content-Security-Policy or a request
leaving the scheduler's origin fails the test.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Page,
    Request,
    ViewportSize,
    sync_playwright,
)

from devtools.cluster import REPO_ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
# `make screenshots` sets this to refresh docs/screenshots; otherwise they go to a temp dir.
UPDATE_SCREENSHOTS = os.environ.get("SKIPLOCK_UPDATE_SCREENSHOTS") == "1"
VIEWPORT: ViewportSize = {"width": 1360, "height": 860}
ColorScheme = Literal["light", "dark"]


def chromium_path() -> str:
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        raise RuntimeError(
            f"the dashboard tests need Debian's Chromium at {CHROMIUM}: apt-get install chromium"
        )
    return CHROMIUM


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium with a fresh profile, closed on exit."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageWatch:
    """What a page did that a test never wants: script errors, CSP refusals, foreign requests,
    and dialogs (an alert() from injected markup)."""

    origin: str
    problems: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("console", self.on_console)
        page.on("request", self.on_request)
        page.on("dialog", self.on_dialog)

    def on_console(self, message: ConsoleMessage) -> None:
        text = message.text
        if message.type == "error" and "Content Security Policy" in text:
            self.problems.append(f"CSP: {text}")

    def on_request(self, request: Request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("data", "blob"):
            return
        if f"{parts.scheme}://{parts.netloc}" != self.origin:
            self.problems.append(f"request left the scheduler: {request.url}")

    def on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


def screenshot(page: Page, name: str, fallback_dir: Path) -> Path:
    """Save the whole page as NAME.png: in docs/screenshots with SKIPLOCK_UPDATE_SCREENSHOTS=1."""
    directory = SCREENSHOTS if UPDATE_SCREENSHOTS else fallback_dir
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    # Toasts are cleared and animations finished: the picture shows the page at rest.
    page.evaluate("document.getElementById('toasts')?.replaceChildren()")
    # From the top: a full-page picture of a scrolled page draws the sticky bar mid-page.
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    return path
