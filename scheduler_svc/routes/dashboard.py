"""The dashboard: static files under /ui/assets, index.html for every page address under /ui
(the browser routes by path, so /ui/tasks/<id> is a link that works), and / redirects to /ui/.

The files hold no data and need no token: the page asks for one and sends it with each API call.
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

UI_DIR = Path(__file__).resolve().parents[1] / "ui"

# Nothing on the page may come from elsewhere, and no text from the API can become a script.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on every load (ETag), so an upgraded scheduler serves its own files at once.
    "Cache-Control": "no-cache",
}


class DashboardFiles(StaticFiles):
    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(SECURITY_HEADERS)
        return response


@cache
def index_template() -> str:
    return (UI_DIR / "index.html").read_text()


def index_page(root_path: str) -> str:
    """index.html with its <base> under the path the scheduler is served at (behind a proxy)."""
    base = html.escape(f"{root_path.rstrip('/')}/ui/", quote=True)
    return index_template().replace('<base href="/ui/">', f'<base href="{base}">', 1)


router = APIRouter(include_in_schema=False)
router.mount("/ui/assets", DashboardFiles(directory=UI_DIR / "assets"), name="ui-assets")


@router.api_route("/", methods=["GET", "HEAD"])
async def root() -> RedirectResponse:
    return RedirectResponse("ui/", status_code=307)


@router.api_route("/ui", methods=["GET", "HEAD"])
async def ui_without_slash() -> RedirectResponse:
    return RedirectResponse("ui/", status_code=307)


@router.api_route("/ui/{page:path}", methods=["GET", "HEAD"])
async def ui_page(request: Request, page: str) -> HTMLResponse:
    """Any page of the dashboard: the same document, which renders the page from its path."""
    return HTMLResponse(index_page(request.scope.get("root_path", "")), headers=SECURITY_HEADERS)
