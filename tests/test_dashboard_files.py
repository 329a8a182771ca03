"""The scheduler serves the dashboard's files: one document for every page address, assets with
their types and security headers, and nothing outside the dashboard's folder. (The wheel
carries them: tests/test_packaging.py.)"""

from __future__ import annotations

import httpx
import pytest

TASK_ID = "0334aad4-c2c2-4457-b4f9-badcd90d02e6"
PAGES = ["/ui/", "/ui/tasks", f"/ui/tasks/{TASK_ID}", "/ui/schedules/x/edit"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_address_serves_the_document(http: httpx.Client, path: str) -> None:
    response = http.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<base href="/ui/">' in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/", "/ui"])
def test_root_redirects_to_the_dashboard(http: httpx.Client, path: str) -> None:
    response = http.get(path)
    assert response.status_code == 307
    target = httpx.URL(str(http.base_url)).join(path).join(response.headers["location"])
    assert target.path == "/ui/"


def test_assets_are_served_with_their_types(http: httpx.Client) -> None:
    script = http.get("/ui/assets/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["cache-control"] == "no-cache"
    assert "etag" in script.headers
    assert http.get("/ui/assets/style.css").headers["content-type"].startswith("text/css")
    assert http.head("/ui/").status_code == 200


@pytest.mark.parametrize(
    "path", ["/ui/assets/missing.js", "/ui/assets/../../app.py", "/ui/assets/%2e%2e/index.html"]
)
def test_nothing_else_is_served(http: httpx.Client, path: str) -> None:
    response = http.get(path)
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_dashboard_is_not_part_of_the_api_schema(http: httpx.Client) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/ui")]
