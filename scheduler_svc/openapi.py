"""The OpenAPI document as the server really answers: every error body is `{"detail": …}`, and
every operation lists the error statuses the edge can give it, so a generated client (and
schemathesis, in the suite) agree with the server. Routes declare their own successes; the
errors common to all are added here, in one place, for routes present and future."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scheduler_svc import auth

ERROR_BODY = {
    "title": "ErrorBody",
    "description": "Every 4xx and 5xx answer: `detail` says what is wrong, as a sentence or, "
    "for a request that fails validation, as a list of issues.",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {
            "title": "Detail",
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"$ref": "#/components/schemas/ValidationIssue"}},
            ],
        }
    },
}
VALIDATION_ISSUE = {
    "title": "ValidationIssue",
    "type": "object",
    "required": ["loc", "msg", "type"],
    "properties": {
        "loc": {"title": "Location", "type": "array", "items": {"anyOf": [
            {"type": "string"}, {"type": "integer"}]}},
        "msg": {"title": "Message", "type": "string"},
        "type": {"title": "Error Type", "type": "string"},
    },
}  # fmt: skip
ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}

# Declared by the operations that queue tasks (scheduler_svc/backpressure.py).
TOO_MANY_QUEUED: dict[int | str, dict[str, Any]] = {
    429: {
        "description": "The backlog of queued tasks is at its limit: nothing was written; "
        "retry after Retry-After seconds",
        "content": ERROR_CONTENT,
        "headers": {
            "Retry-After": {"description": "seconds", "schema": {"type": "integer"}}
        },
    }
}

# Status -> (why, which operations can get it).
Applies = Callable[[str, dict[str, Any]], bool]


def _always(method: str, operation: dict[str, Any]) -> bool:
    return True


def _has_body(method: str, operation: dict[str, Any]) -> bool:
    return "requestBody" in operation


def _names_a_resource(method: str, operation: dict[str, Any]) -> bool:
    """A path parameter, or a single id in the query (GET /status?task_id=)."""
    return any(
        p.get("in") == "path" or (p.get("in") == "query" and p.get("name") == "task_id")
        for p in operation.get("parameters", [])
    )


def _writes(method: str, operation: dict[str, Any]) -> bool:
    return method in ("post", "put", "patch", "delete")


EDGE_ERRORS: dict[str, tuple[str, Applies]] = {
    "400": ("Request body that cannot be parsed at all", _has_body),
    "404": ("No such resource", _names_a_resource),
    "409": ("Conflicts with the resource's current state", _writes),
    "413": ("Request body too large: 1 MiB, 16 MiB for POST /tasks/batch", _has_body),
    "415": ("Request body not declared as JSON", _has_body),
    "422": ("The request is malformed: detail says where and why", _always),
    "431": ("Request line and headers over the size or count limit", _always),
    "503": ("The database is unavailable; try again shortly", _always),
}
NOT_READY = {
    "application/json": {
        "schema": {
            "type": "object",
            "required": ["status", "detail"],
            "properties": {"status": {"const": "unavailable"}, "detail": {"type": "string"}},
        }
    }
}
# Identifiers are UUIDs: every path parameter named *_id but these, and these query parameters.
UUID_QUERY_PARAMETERS = frozenset(
    {("/status", "task_id"), ("/tasks", "id"), ("/tasks", "schedule_id")}
)
FREE_TEXT_PATH_IDS = frozenset({"worker_id"})  # a worker's id is whatever it was started with


def _is_uuid(path: str, parameter: dict[str, Any]) -> bool:
    if parameter.get("in") == "path":
        name = str(parameter.get("name", ""))
        return name.endswith("_id") and name not in FREE_TEXT_PATH_IDS
    return parameter.get("in") == "query" and (path, parameter.get("name")) in UUID_QUERY_PARAMETERS


def _mark_uuid(schema: dict[str, Any]) -> None:
    """Strings in `schema` (alone, in an array, or among anyOf options) are UUIDs."""
    if schema.get("type") == "string":
        schema["format"] = "uuid"
    elif schema.get("type") == "array":
        _mark_uuid(schema.setdefault("items", {}))
    for option in schema.get("anyOf", []):
        _mark_uuid(option)


def _declare_uuids(path: str, operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        if _is_uuid(path, parameter):
            _mark_uuid(parameter.setdefault("schema", {}))


# Operations that create something, where the new id is in their answer, for OpenAPI links from
# each to every operation taking that id (clients and stateful tests follow them).
PRODUCERS = {
    ("/schedule", "post"): ("task_id", "$response.body#/task_id", ("200", "201")),
    ("/schedules", "post"): ("schedule_id", "$response.body#/id", ("201",)),
    ("/schedules/{schedule_id}/trigger", "post"): (
        "task_id", "$response.body#/task/task_id", ("201",)),
}  # fmt: skip


def _consumers(openapi: dict[str, Any], name: str) -> list[tuple[str, str]]:
    """(operationId, parameter location) of each operation with a parameter `name`."""
    found = []
    for operations in openapi.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("name") == name and "operationId" in operation:
                    found.append((operation["operationId"], parameter["in"]))
    return found


def _declare_links(openapi: dict[str, Any]) -> None:
    for (path, method), (name, expression, statuses) in PRODUCERS.items():
        operation = openapi.get("paths", {}).get(path, {}).get(method)
        if operation is None:
            continue
        links = {
            f"{target}": {"operationId": target, "parameters": {f"{where}.{name}": expression}}
            for target, where in _consumers(openapi, name)
        }
        for status in statuses:
            operation["responses"].setdefault(status, {"description": "Done"})["links"] = links


HEALTH = frozenset({"/healthz", "/readyz"})


def describe(openapi: dict[str, Any], tokens: bool) -> dict[str, Any]:
    """Complete FastAPI's document in place (idempotent) and return it."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorBody"] = ERROR_BODY
    schemas["ValidationIssue"] = VALIDATION_ISSUE
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    for path, operations in openapi.get("paths", {}).items():
        for method, operation in operations.items():
            _declare_uuids(path, operation)
            responses = operation.setdefault("responses", {})
            if path in HEALTH:
                if path == "/readyz":
                    responses["503"] = {"description": "Not ready", "content": NOT_READY}
                continue
            for status, (why, applies) in EDGE_ERRORS.items():
                if applies(method, operation):
                    responses[status] = {"description": why, "content": ERROR_CONTENT}
    _declare_links(openapi)
    if tokens:
        auth.describe_security(openapi)
    return openapi
