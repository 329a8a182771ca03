"""API tokens on a real scheduler process: every operation of its OpenAPI document refuses a
caller without a valid token (401) and a read token that writes (403); health stays open; a
scheduler without tokens stays on loopback. Plus the token file's rules."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from common.config import ConfigError, ListenAddress
from devtools.cluster import Cluster
from scheduler_svc import config as scheduler_config
from scheduler_svc.app import create_app
from scheduler_svc.auth import Principal, Role, TokenBook, is_public, may, parse_token_lines

WRITE = "w-" + "a1" * 16
READ = "r-" + "b2" * 16
OPERATIONS_AT_LEAST = 15  # the walk below must not pass by finding nothing


@pytest.fixture(scope="module")
def guarded(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scheduler with a write and a read token from a tokens file; yields its URL."""
    directory = tmp_path_factory.mktemp("tokens")
    tokens = directory / "api_tokens"
    tokens.write_text(f"# name role token\nops write {WRITE}\n\nviewer read {READ}\n")
    cluster = Cluster(module_database_url, directory, env={"SKIPLOCK_API_TOKENS_FILE": str(tokens)})
    try:
        cluster.start_scheduler()
        yield cluster.scheduler_url
    finally:
        cluster.stop()


def operations(base_url: str) -> list[tuple[str, str]]:
    """(METHOD, path with every {parameter} filled) for each operation the API describes."""
    document = _client.get(f"{base_url}/openapi.json").json()
    found = []
    for path, item in document["paths"].items():
        filled = re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), path)
        found += [(method.upper(), filled) for method in item if method != "parameters"]
    assert len(found) >= OPERATIONS_AT_LEAST, found
    return found


_client = httpx.Client(timeout=10)  # one client: building one per request costs more than it


def call(base_url: str, method: str, path: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    body: dict[str, Any] | None = {} if method in ("POST", "PUT", "PATCH") else None
    request = _client.build_request(method, f"{base_url}{path}", headers=headers, json=body)
    response = _client.send(request, stream=True)
    try:
        # An event stream never ends: its status and headers say enough.
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            response.read()
    finally:
        response.close()
    return response


def template(path: str) -> str:
    return re.sub(r"[0-9a-f-]{36}", "{id}", path)


def test_every_operation_needs_a_valid_token(guarded):
    for method, path in operations(guarded):
        if template(path) in ("/healthz", "/readyz"):
            continue
        for token in (None, "not-a-known-token-at-all", f"{WRITE}x"):
            answer = call(guarded, method, path, token)
            assert answer.status_code == 401, (method, path, token, answer.text)
            assert answer.headers["www-authenticate"].startswith("Bearer")
            assert "valid API token" in answer.json()["detail"]


def test_a_read_token_reads_but_never_writes(guarded, module_database_url):
    for method, path in operations(guarded):
        answer = call(guarded, method, path, READ)
        if may(Principal(Role.READ, "viewer"), method, template(path)):
            assert answer.status_code not in (401, 403), (method, path, answer.text)
        else:
            assert answer.status_code == 403, (method, path, answer.text)
            assert answer.json() == {"detail": "token 'viewer' is read-only"}
    with psycopg.connect(module_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


def test_a_write_token_may_call_everything(guarded):
    for method, path in operations(guarded):
        answer = call(guarded, method, path, WRITE)
        assert answer.status_code not in (401, 403), (method, path, answer.text)
        assert answer.status_code < 500, (method, path, answer.text)
    created = call(guarded, "POST", "/schedule", WRITE)
    assert created.status_code == 422  # an empty body: the token let it through to validation


def test_health_and_the_api_description_need_no_token(guarded):
    # The dashboard's shell too: it holds no data, and asks for a token to call the API with.
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs", "/ui/", "/ui/assets/app.js"):
        assert httpx.get(f"{guarded}{path}", timeout=10).status_code == 200, path
    # A write to a public path is not public.
    assert httpx.post(f"{guarded}/healthz", timeout=10).status_code == 401


def test_whoami_names_the_role(guarded):
    def whoami(token: str) -> Any:
        return httpx.get(
            f"{guarded}/auth/whoami", headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).json()

    assert whoami(WRITE) == {"role": "write", "auth": "token", "name": "ops"}
    assert whoami(READ) == {"role": "read", "auth": "token", "name": "viewer"}
    assert httpx.get(f"{guarded}/auth/whoami", timeout=10).status_code == 401


def test_the_openapi_document_declares_the_token(guarded):
    document = httpx.get(f"{guarded}/openapi.json", timeout=10).json()
    assert document["components"]["securitySchemes"]["ApiToken"]["scheme"] == "bearer"
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if path in ("/healthz", "/readyz"):
                assert operation["security"] == [], path
                continue
            assert operation["security"] == [{"ApiToken": []}], (method, path)
            assert "401" in operation["responses"], (method, path)


def test_without_tokens_anyone_on_loopback_writes(http):
    assert http.get("/auth/whoami").json() == {"role": "write", "auth": "none", "name": None}


def test_no_route_of_the_app_is_public_by_accident():
    """Only probes, the API description and the dashboard's shell are open; each route of the
    API proper is behind the token, including ones added after this test was written."""
    app = create_app(scheduler_config.load([], {}))
    known = ("/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
    routes = list(iter_route_contexts(app.routes))
    for context in routes:
        route, path = context.original_route, context.path or ""
        methods = getattr(route, "methods", None) or {"GET"}
        if any(is_public(method, path) for method in methods):
            in_schema = isinstance(route, APIRoute) and route.include_in_schema
            dashboard = path in ("/", "/ui") or path.startswith("/ui/")
            assert path in known or (not in_schema and dashboard), path
    assert len(routes) >= OPERATIONS_AT_LEAST


# --- configuration --------------------------------------------------------------------------


def test_tokens_come_from_a_file_and_the_environment(tmp_path: Path):
    path = tmp_path / "tokens"
    path.write_text(f"ops write {WRITE}\n")
    env = {"SKIPLOCK_API_READ_TOKEN": READ}
    config = scheduler_config.load(["--api-tokens-file", str(path)], env)
    assert [(t.name, t.role) for t in config.api_tokens] == [("ops", "write"), ("env-read", "read")]
    from_env = scheduler_config.load([], {"SKIPLOCK_API_TOKENS_FILE": str(path)})
    assert from_env.api_tokens == config.api_tokens[:1]
    book = TokenBook(config.api_tokens)
    assert book.lookup(WRITE) == Principal(Role.WRITE, "ops")
    assert book.lookup(READ) == Principal(Role.READ, "env-read")
    assert book.lookup(READ[:-1]) is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("ops write", "expected '<name> <role> <token>'"),
        (f"ops admin {WRITE}", "role must be 'read' or 'write'"),
        ("ops write short", "at least 16"),
        (f"op$ write {WRITE}", "name"),
        (f"ops write {WRITE}\nops read {READ}", "used twice"),
        (f"ops write {WRITE}\nother read {WRITE}", "repeats another token"),
    ],
)
def test_bad_token_files_are_refused_with_the_line(tmp_path: Path, text: str, says: str):
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(says)):
        scheduler_config.load(["--api-tokens-file", str(path)], {})


def test_a_missing_tokens_file_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="API tokens file"):
        scheduler_config.load(["--api-tokens-file", str(tmp_path / "absent")], {})


def test_comments_and_blank_lines_are_skipped():
    assert [t.name for t in parse_token_lines(f"\n  # x\nops write {WRITE}\n", "f")] == ["ops"]


def test_without_tokens_the_scheduler_stays_on_loopback():
    assert scheduler_config.load([], {}).listen == ListenAddress("127.0.0.1", 8081)
    with pytest.raises(ConfigError, match="API tokens"):
        scheduler_config.load(["--host", "0.0.0.0"], {})
    insecure = scheduler_config.load(["--host", "0.0.0.0", "--insecure"], {})
    assert insecure.listen == ListenAddress("0.0.0.0", 8081)
    with_token = scheduler_config.load(["--host", "0.0.0.0"], {"SKIPLOCK_API_TOKEN": WRITE})
    assert with_token.listen == ListenAddress("0.0.0.0", 8081)
    assert scheduler_config.load([], {"SKIPLOCK_API_TOKEN": WRITE}).listen.host == ""
