"""The catalog's public reads in OpenAPI 3.1 (plain Django views, so hand-written; merged by
``hepgg.openapi``). A new public read (``GET /prices``) is one more entry in ``PATHS``."""

from __future__ import annotations

from typing import Any

PATHS: dict[str, dict[str, Any]] = {
    "/models": {
        "get": {
            "summary": "The minting catalog",
            "operationId": "models_list",
            "tags": ["Public"],
            "security": [],
            "responses": {
                "200": {
                    "description": "Every enabled model an API key can be minted for.",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/CatalogModelList"}
                        }
                    },
                }
            },
        }
    },
    "/prices": {
        "get": {
            "summary": "The dated price table",
            "operationId": "prices_list",
            "tags": ["Public"],
            "security": [],
            "responses": {
                "200": {
                    "description": "USD per million tokens per model name or pattern, each row "
                    "with its effective-from date (catalog/data/README.md).",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    },
}

COMPONENTS: dict[str, Any] = {
    "schemas": {
        "CatalogModelList": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {
                "object": {"const": "list"},
                "data": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "object", "provider"],
                        "properties": {
                            "id": {"type": "string"},
                            "object": {"const": "model"},
                            "created": {"type": "integer"},
                            "owned_by": {"type": "string"},
                            "provider": {"type": "string"},
                            "upstream_model": {"type": "string"},
                            "name": {"type": "string"},
                            "context_window": {"type": ["integer", "null"]},
                            "pricing": {"type": "object"},
                        },
                    },
                },
            },
        }
    }
}
