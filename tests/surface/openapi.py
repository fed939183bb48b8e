"""Reading the served OpenAPI document in tests: find an operation, validate a body against it."""

from __future__ import annotations

from typing import Any

import jsonschema


def operation(schema: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    return schema["paths"][path][method.lower()]


def assert_response_matches(
    schema: dict[str, Any],
    path: str,
    method: str,
    status: int,
    body: Any,
    content_type: str = "application/json",
) -> None:
    """Fails unless ``status`` is documented for the operation and ``body`` validates against it
    (OpenAPI 3.1 schemas are JSON Schema 2020-12; ``$ref``s resolve within the document)."""
    responses = operation(schema, path, method)["responses"]
    assert str(status) in responses, f"{method} {path}: {status} is not documented"
    content = responses[str(status)].get("content")
    if content is None:
        assert body in (None, b"", ""), f"{method} {path} {status}: undocumented body {body!r}"
        return
    media = content[content_type]["schema"]
    jsonschema.Draft202012Validator({**media, "components": schema["components"]}).validate(body)
