"""The one OpenAPI document (``GET /api/schema/``): drf-spectacular generates the DRF part (the
account API) and ``merge_fragments`` adds the hand-written parts of the surfaces that are not DRF
(the bare-ASGI ``/v1`` and the catalog's public reads). A new hand-written surface is one more
module in ``FRAGMENTS``."""

from __future__ import annotations

from importlib import import_module
from typing import Any

FRAGMENTS = ["catalog.openapi", "llm_gateway.openapi"]


def merge_fragments(result: dict[str, Any], generator: Any, **kwargs: Any) -> dict[str, Any]:
    """A drf-spectacular postprocessing hook: paths and components of every fragment."""
    components = result.setdefault("components", {})
    for name in FRAGMENTS:
        fragment = import_module(name)
        result.setdefault("paths", {}).update(fragment.PATHS)
        for section, entries in fragment.COMPONENTS.items():
            components.setdefault(section, {}).update(entries)
    result["paths"] = dict(sorted(result["paths"].items()))
    return result
