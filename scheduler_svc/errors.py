"""How the HTTP edge answers what went wrong: always JSON `{"detail": …}`, never a traceback."""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.logs import get_logger
from common.metrics import DATABASE_ERRORS

log = get_logger(__name__)

MAX_BODY_BYTES = 1024 * 1024
# POST /tasks/batch carries up to 10,000 tasks: room for 10,000 commands of 1.6 KB each.
MAX_BATCH_BODY_BYTES = 16 * 1024 * 1024
BODY_LIMITS = {"/tasks/batch": MAX_BATCH_BODY_BYTES}


def error_body(detail: Any) -> dict[str, Any]:
    return {"detail": detail}


async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Echo where and what, never the (possibly huge) input itself.
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return JSONResponse(error_body(errors), status_code=422)


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request)
    return JSONResponse(error_body(exc.detail), status_code=exc.status_code, headers=headers)


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    literal: set[str] = set()  # a path a route names literally is that route's alone
    for context in iter_route_contexts(request.app.routes):
        route = context.original_route
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
            if getattr(route, "param_convertors", None) == {}:
                literal |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(literal or methods))


async def on_database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    DATABASE_ERRORS.labels("request").inc()
    log.warning("database unavailable: %s", exc, path=request.url.path)
    return JSONResponse(error_body("database unavailable, try again shortly"), status_code=503)


async def json_bodies_only(request: Request) -> None:
    """A request body must be declared JSON: say so instead of failing on undecoded bytes."""
    has_body = request.headers.get("content-length", "0") != "0" or (
        "transfer-encoding" in request.headers
    )
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if has_body and not (media == "application/json" or media.endswith("+json")):
        raise HTTPException(415, "Content-Type must be application/json")


class BodySizeLimit:
    """Answer 413 to request bodies over the limit instead of reading them into memory; paths
    in `larger` have their own limit."""

    def __init__(self, app: ASGIApp, limit: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.larger = larger or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope.get("path", ""), self.limit)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self.reject(send, limit)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413, f"request body larger than {limit} bytes")
            return message

        await self.app(scope, limited_receive, send)

    async def reject(self, send: Send, limit: int) -> None:
        body = json.dumps(error_body(f"request body larger than {limit} bytes")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def query_names(dependant: Dependant) -> list[str]:
    names = [field.alias for field in dependant.query_params]
    for sub in dependant.dependencies:
        names += query_names(sub)
    return names


def declared_query_parameters(route: APIRoute) -> frozenset[str]:
    """The query parameter names a route declares, its dependencies' included."""
    names = getattr(route, "_skiplock_query_names", None)
    if names is None:
        names = frozenset(query_names(route.dependant))
        route._skiplock_query_names = names  # type: ignore[attr-defined]
    return names


async def no_unknown_query_parameters(request: Request) -> None:
    """A query parameter the route does not declare is a mistake (a typo in a filter would
    otherwise widen a listing silently): 422 naming each one."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    literal_paths_win(request, route)
    unknown = sorted(set(request.query_params) - declared_query_parameters(route))
    if unknown:
        raise RequestValidationError(
            [
                {
                    "loc": ("query", name),
                    "msg": "unknown query parameter",
                    "type": "extra_forbidden",
                }
                for name in unknown
            ]
        )


def literal_paths_win(request: Request, route: APIRoute) -> None:
    """A path that a route names literally (GET /schedules/preview) is that route's, even for
    a method only a parameterised route (PATCH /schedules/{id}) serves: 405, not a 422 about
    an id. Checked before anything else is."""
    if not route.param_convertors:
        return
    for context in iter_route_contexts(request.app.routes):
        other = context.original_route
        if other is route or getattr(other, "param_convertors", None) != {}:
            continue
        match, _ = other.matches(request.scope)
        if match == Match.PARTIAL:
            raise HTTPException(405, "Method Not Allowed")
