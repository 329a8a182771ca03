"""API tokens: who may call the HTTP API, and whether they may change anything.

With tokens configured, every request needs `Authorization: Bearer <token>` except the few
public paths below (health probes, the API's own description and the dashboard's static shell,
none of which holds data). A read token may only read: GET and HEAD, and the POSTs that only
compute. The check is ASGI middleware in front of the whole app, so a new route is covered
without asking, and a caller without a token learns nothing, not even whether a path exists.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send


class Role(StrEnum):
    READ = "read"
    WRITE = "write"


MIN_TOKEN_LENGTH = 16
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_TOKEN = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what an HTTP header can carry unharmed

# Reachable without a token (GET and HEAD only): probes, the API description, the dashboard.
PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/", "/ui"}
)
PUBLIC_PREFIXES = ("/ui/",)
READ_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class ApiToken:
    name: str
    role: Role
    token: str


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's name and role, or anyone when no tokens are configured."""

    role: Role
    name: str | None = None

    @property
    def auth(self) -> str:
        return "none" if self.name is None else "token"


ANYONE = Principal(Role.WRITE)


class TokenError(ValueError):
    """A token definition the scheduler refuses to start with."""


def parse_token_lines(text: str, source: str) -> list[ApiToken]:
    """`<name> <role> <token>` per line; blank lines and lines starting with # are skipped."""
    tokens = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 3:
            raise TokenError(f"{source} line {number}: expected '<name> <role> <token>'")
        name, role, token = fields
        tokens.append(api_token(name, role, token, where=f"{source} line {number}"))
    return tokens


def api_token(name: str, role: str, token: str, where: str) -> ApiToken:
    if not _NAME.fullmatch(name):
        raise TokenError(f"{where}: a token's name is 1-64 of A-Z a-z 0-9 . _ -")
    if role not in {r.value for r in Role}:
        raise TokenError(f"{where}: role must be 'read' or 'write', not {role[:20]!r}")
    if len(token) < MIN_TOKEN_LENGTH or not _TOKEN.fullmatch(token):
        raise TokenError(
            f"{where}: a token is at least {MIN_TOKEN_LENGTH} visible ASCII characters "
            "(e.g. `openssl rand -hex 32`)"
        )
    return ApiToken(name, Role(role), token)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenBook:
    """The configured tokens, kept as digests only."""

    def __init__(self, tokens: Iterable[ApiToken]) -> None:
        self._entries: list[tuple[bytes, Principal]] = []
        names: set[str] = set()
        for token in tokens:
            digest = _digest(token.token)
            if token.name in names:
                raise TokenError(f"token name {token.name!r} is used twice")
            if any(hmac.compare_digest(digest, known) for known, _ in self._entries):
                raise TokenError(f"token {token.name!r} repeats another token")
            names.add(token.name)
            self._entries.append((digest, Principal(token.role, token.name)))

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, presented: str) -> Principal | None:
        """The holder of `presented`, comparing its digest with every known one in constant
        time (and without stopping at a match), so timings tell nothing about the tokens."""
        digest = _digest(presented)
        found = None
        for known, principal in self._entries:
            if hmac.compare_digest(digest, known):
                found = principal
        return found


def is_public(method: str, path: str) -> bool:
    return method in READ_METHODS and (path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES))


def may(principal: Principal, method: str, path: str) -> bool:
    if principal.role is Role.WRITE:
        return True
    return method in READ_METHODS


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token of an `Authorization: Bearer …` header, if there is exactly one."""
    values = [value for key, value in headers if key == b"authorization"]
    if len(values) != 1:
        return None
    scheme, _, token = values[0].decode("latin-1").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class ApiTokenGuard:
    """Answers 401 to a request without a known token and 403 to a read token that writes;
    lets the rest through with `scope["state"]["principal"]` set."""

    def __init__(self, app: ASGIApp, book: TokenBook) -> None:
        self.app = app
        self.book = book

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        principal = ANYONE
        if self.book:
            method, path = scope["method"], scope["path"]
            token = bearer_token(scope["headers"])
            found = self.book.lookup(token) if token is not None else None
            if found is None and not is_public(method, path):
                detail = "a valid API token is required: Authorization: Bearer <token>"
                challenge = 'Bearer realm="skiplock"' + (
                    ', error="invalid_token"' if token is not None else ""
                )
                await reply(send, 401, detail, {b"www-authenticate": challenge.encode()})
                return
            if found is not None and not may(found, method, path):
                detail = f"token {found.name!r} is read-only"
                await reply(send, 403, detail, {})
                return
            principal = found or Principal(Role.READ)
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


async def reply(send: Send, status: int, detail: str, headers: Mapping[bytes, bytes]) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers.items(),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def principal_of(request: Request) -> Principal:
    found: Principal = getattr(request.state, "principal", ANYONE)
    return found


router = APIRouter()


class WhoAmI(BaseModel):
    role: str = Field(description="read or write")
    auth: str = Field(description="`token`, or `none` when the scheduler has no tokens")
    name: str | None = Field(description="the token's name; null without tokens")


@router.get("/auth/whoami", response_model=WhoAmI)
async def whoami(request: Request) -> dict[str, Any]:
    """What the caller's token allows: `role` read or write; `auth` says whether tokens are
    in use at all (`none`: anyone on the scheduler's network may write)."""
    principal = principal_of(request)
    return {"role": principal.role.value, "auth": principal.auth, "name": principal.name}


def describe_security(openapi: dict[str, Any]) -> dict[str, Any]:
    """Declare the bearer scheme on every operation (public ones excepted) and the 401/403
    answers it brings, so clients and generated code know about tokens."""
    schemes = openapi.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["ApiToken"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token, when the scheduler has any configured",
    }
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for path, operations in openapi.get("paths", {}).items():
        for method, operation in operations.items():
            if is_public(method.upper(), path):
                operation["security"] = []
                continue
            operation["security"] = [{"ApiToken": []}]
            responses = operation.setdefault("responses", {})
            responses.setdefault("401", {"description": "No valid API token", "content": error})
            if not may(Principal(Role.READ, "r"), method.upper(), path):
                responses.setdefault(
                    "403", {"description": "The API token is read-only", "content": error}
                )
    return openapi
