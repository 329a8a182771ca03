"""Every answer the OpenAPI document promises has a schema a generated client can type."""

from __future__ import annotations

from typing import Any

from devtools.cluster import Cluster


def test_every_success_answer_declares_its_schema(api: Cluster) -> None:
    document: dict[str, Any] = api.http.get("/openapi.json").json()
    untyped = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if not status.startswith("2") or status == "204":
                    continue
                contents = response.get("content", {})
                schemas = [c.get("schema") for c in contents.values() if c.get("schema")]
                if not schemas:
                    untyped.append(f"{method.upper()} {path} {status}")
    assert untyped == []


def test_json_answers_name_their_fields(api: Cluster) -> None:
    """JSON answers are objects with named properties (a model), never a bare `object`."""
    document: dict[str, Any] = api.http.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    loose = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if not status.startswith("2") or schema is None:
                    continue
                target = schemas[schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema
                if not target.get("properties"):
                    loose.append(f"{method.upper()} {path} {status}")
    assert loose == []
