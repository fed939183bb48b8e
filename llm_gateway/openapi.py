"""The ``/v1`` surface in OpenAPI 3.1, hand-written: ``llm_gateway.app`` is bare ASGI, so
drf-spectacular cannot see it. ``hepgg.openapi`` merges ``PATHS`` and ``COMPONENTS`` into the
generated document; ``tests/test_openapi_schema.py`` checks them against the live app (every path
and method documented here is served, every other one is refused) and the responses against them.
"""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/OpenAIError"}
_INVALID_KEY = {"$ref": "#/components/schemas/InvalidApiKey"}
_SECURITY = [{"apiKey": []}]


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _refusals(*statuses: int) -> dict[str, Any]:
    described = {
        400: "Bad request: malformed JSON or a missing or mistyped parameter.",
        404: "Unknown model (`code: model_not_found`).",
        413: "Request body too large (`code: request_too_large`).",
        429: "Rate limited or over budget; `Retry-After` says when to retry.",
        502: "The upstream failed.",
        503: "The model's provider is not configured, or a dependency is down.",
        504: "The upstream timed out.",
    }
    answers: dict[str, Any] = {
        "401": {
            "description": "Missing, malformed, unknown or disabled API key (the exact body of "
            "the contract; `hint` names the credential type sent instead, never its value).",
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
            "content": {"application/json": {"schema": _INVALID_KEY}},
        },
        "405": _json(_ERROR, "Method not allowed for this path; `Allow` names the one to use."),
    }
    for status in statuses:
        answers[str(status)] = _json(_ERROR, described[status])
    return answers


_MODELS_LIST = {
    "summary": "The key's one model",
    "operationId": "v1_models_list",
    "tags": ["OpenAI-compatible (/v1)"],
    "security": _SECURITY,
    "responses": {
        "200": _json({"$ref": "#/components/schemas/V1ModelList"}, "OpenAI's list shape."),
        **_refusals(),
    },
}

_MODEL_RETRIEVE = {
    "summary": "One model, if it is the key's",
    "operationId": "v1_models_retrieve",
    "tags": ["OpenAI-compatible (/v1)"],
    "security": _SECURITY,
    "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
    "responses": {
        "200": _json({"$ref": "#/components/schemas/V1Model"}, "OpenAI's model object."),
        **_refusals(404),
    },
}

_CHAT = {
    "summary": "Chat Completions (OpenAI's contract), streaming or not",
    "operationId": "v1_chat_completions_create",
    "tags": ["OpenAI-compatible (/v1)"],
    "security": _SECURITY,
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}
        },
    },
    "responses": {
        "200": {
            "description": "The completion: a JSON object, or with `stream: true` server-sent "
            "events (`data: {...}` chunks, then `data: [DONE]`).",
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "text/event-stream": {"schema": {"type": "string"}},
            },
        },
        **_refusals(400, 404, 413, 429, 502, 503, 504),
    },
}

PATHS: dict[str, dict[str, Any]] = {
    "/v1/models": {"get": _MODELS_LIST},
    "/v1/models/{model}": {"get": _MODEL_RETRIEVE},
    "/v1/chat/completions": {"post": _CHAT},
}

COMPONENTS: dict[str, Any] = {
    "securitySchemes": {
        "apiKey": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "sk-hyd-…",
            "description": "An API key minted for one model (`POST /keys`); opens `/v1`.",
        }
    },
    "schemas": {
        "OpenAIError": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "param", "code"],
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": {"type": ["string", "null"]},
                        "code": {"type": ["string", "null"]},
                    },
                }
            },
        },
        "InvalidApiKey": {
            "type": "object",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {
                "error": {"const": "Invalid API key"},
                "hint": {"type": "string"},
            },
        },
        "V1Model": {
            "type": "object",
            "required": ["id", "object", "created", "owned_by"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "model"},
                "created": {"type": "integer"},
                "owned_by": {"type": "string"},
            },
        },
        "V1ModelList": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": {"$ref": "#/components/schemas/V1Model"}},
            },
        },
        "ChatCompletionRequest": {
            "type": "object",
            "required": ["model", "messages"],
            "properties": {
                "model": {"type": "string"},
                "messages": {"type": "array", "minItems": 1, "items": {"type": "object"}},
                "stream": {"type": ["boolean", "null"]},
                "stream_options": {"type": ["object", "null"]},
            },
        },
    },
}
