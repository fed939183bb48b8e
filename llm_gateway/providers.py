"""Where a catalog model's requests go: the upstream URL, its credentials, and how to read its
errors. The two provider kinds:

- ``cloudflare``: Workers AI's OpenAI-compatible endpoint
  ``{CLOUDFLARE_API_BASE}/accounts/{CLOUDFLARE_ACCOUNT_ID}/ai/v1/chat/completions``.
- ``openai_compatible``: ``{base_url}/chat/completions`` with the key read from the environment
  variable the catalog entry names (never from the database). Only a name with the documented
  prefix (``HEPGG_UPSTREAM_KEY_``) is read, even for a row written around the admin's validation:
  any other leaves the route unconfigured, so no other secret of the process can leave it.

Routes are cached per process for ``GATEWAY_CATALOG_CACHE_SECONDS`` so that the hot path makes no
query; an edit in the admin is seen by every process within that time. While the database is
unreachable the last route read stays in use (``aroute``). Prices are not part of a route:
``catalog.pricing`` prices every event, the gateway's included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connections

from catalog.models import (
    UPSTREAM_KEY_ENV_PREFIX,
    CatalogModel,
    Provider,
    api_key_env_problem,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Route:
    model_id: int
    slug: str
    enabled: bool
    provider: str
    upstream_model: str
    created: int
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    missing: tuple[str, ...] = ()  # settings or environment variables still to set

    @property
    def header_list(self) -> list[tuple[str, str]]:
        """The headers as the outbound client takes them (``hepgg.lib.http1``)."""
        return list(self.headers.items())


def route_for(model: CatalogModel) -> Route:
    """The route of one catalog row (reads settings and the environment, no I/O)."""
    headers = {"content-type": "application/json", "user-agent": "hepgg"}
    missing: list[str] = []
    if model.provider == Provider.CLOUDFLARE:
        account, token = settings.CLOUDFLARE_ACCOUNT_ID, settings.CLOUDFLARE_API_TOKEN
        missing += [
            n
            for n, v in [("CLOUDFLARE_ACCOUNT_ID", account), ("CLOUDFLARE_API_TOKEN", token)]
            if not v
        ]
        url = f"{settings.CLOUDFLARE_API_BASE}/accounts/{account}/ai/v1/chat/completions"
        headers["authorization"] = f"Bearer {token}"
    elif model.provider == Provider.OPENAI_COMPATIBLE:
        base = model.base_url.rstrip("/")
        if not base:
            missing.append(f"the base URL of catalog model {model.slug}")
        url = f"{base}/chat/completions"
        if api_key_env_problem(model.api_key_env) is not None:
            logger.warning(
                "catalog model %s names the API key variable %r, which lacks the prefix %s: "
                "its key is not read and the model answers 503",
                model.slug,
                model.api_key_env,
                UPSTREAM_KEY_ENV_PREFIX,
            )
            missing.append(
                f"the API key variable of catalog model {model.slug} to a name starting with "
                f"{UPSTREAM_KEY_ENV_PREFIX}"
            )
        elif model.api_key_env:
            key = os.environ.get(model.api_key_env, "")
            if key:
                headers["authorization"] = f"Bearer {key}"
            else:
                missing.append(model.api_key_env)
    else:
        url = ""
        missing.append(f"a known provider for catalog model {model.slug} (got {model.provider!r})")
    return Route(
        model_id=model.id,
        slug=model.slug,
        enabled=model.enabled,
        provider=model.provider,
        upstream_model=model.upstream_model,
        created=int(model.created_at.timestamp()),
        url=url,
        headers=headers,
        missing=tuple(missing),
    )


def _load(model_id: int) -> Route | None:
    """The route from the database, in a worker thread (its connection closed afterwards)."""
    close_old_connections()
    try:
        model = CatalogModel.objects.filter(id=model_id).first()
        return None if model is None else route_for(model)
    finally:
        connections.close_all()


_UNAVAILABLE = (OperationalError, InterfaceError)
# model id -> (expires, route, whether the database failed the last refresh)
_routes: dict[int, tuple[float, Route | None, bool]] = {}
_loading: dict[int, asyncio.Future[Route | None]] = {}
_refreshers: set[asyncio.Task[Any]] = set()


async def aroute(model_id: int) -> Route | None:
    """The route of catalog model ``model_id`` (None when deleted); cached, one query per TTL.

    With the database unreachable, the last route read stays in use: the refresh that failed
    is retried once per TTL in the background, so no request waits on the database for it.
    Raises the database's error only for a route never read yet.
    """
    cached = _routes.get(model_id)
    if cached is not None:
        expires, route, failing = cached
        if expires > time.monotonic():
            return route
        if failing:
            if model_id not in _loading:
                task = asyncio.get_running_loop().create_task(_refresh_quietly(model_id))
                _refreshers.add(task)
                task.add_done_callback(_refreshers.discard)
            return route
    try:
        return await _refresh(model_id)
    except _UNAVAILABLE:
        if cached is None:
            raise
        return cached[1]


async def _refresh(model_id: int) -> Route | None:
    pending = _loading.get(model_id)
    if pending is not None:  # another request of this loop is loading it: share its query
        return await asyncio.shield(pending)
    future: asyncio.Future[Route | None] = asyncio.get_running_loop().create_future()
    _loading[model_id] = future
    ttl = settings.GATEWAY_CATALOG_CACHE_SECONDS
    try:
        # Not the shared thread of thread-sensitive calls: a database that does not answer
        # must not hold up every other request's (a cold credential's) query behind this one.
        route = await sync_to_async(_load, thread_sensitive=False)(model_id)
        _routes[model_id] = (time.monotonic() + ttl, route, False)
        future.set_result(route)
        return route
    except BaseException as exc:
        last = _routes.get(model_id)
        if last is not None and isinstance(exc, _UNAVAILABLE):
            _routes[model_id] = (time.monotonic() + ttl, last[1], True)
        future.set_exception(exc)
        future.exception()  # retrieved: no "never retrieved" warning when nobody waited
        raise
    finally:
        _loading.pop(model_id, None)


async def _refresh_quietly(model_id: int) -> None:
    with contextlib.suppress(*_UNAVAILABLE):  # still down: the last route stays in use
        await _refresh(model_id)


def error_from_body(body: bytes) -> tuple[str, str | None]:
    """(message, code) of an upstream error body: OpenAI's error object, Cloudflare's envelope
    ``{"success": false, "errors": [{"code", "message"}]}``, or whatever text came back."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", errors="replace").strip()
        return (text[:500] or "(empty body)"), None
    if isinstance(data, dict):
        errors = data.get("errors")
        if isinstance(errors, list) and errors:  # Cloudflare's envelope
            messages = [str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors]
            first = errors[0]
            code = first.get("code") if isinstance(first, dict) else None
            return "; ".join(messages), None if code is None else str(code)
        error = data.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            return str(error.get("message", "")), None if code is None else str(code)
        if isinstance(error, str):
            return error, None
        if isinstance(data.get("detail"), str):  # FastAPI-based servers (vLLM)
            return data["detail"], None
    return body.decode("utf-8", errors="replace")[:500], None
