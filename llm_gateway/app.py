"""``/v1``: a bare ASGI application, routed ahead of Django in ``hepgg.asgi``.

Thin on purpose: it reads the request, calls ``llm_gateway.services`` and renders the one error
type (``GatewayError``) the services raise. It is not a DRF view nor a Channels consumer because
each layer costs requests per second on the hot path (measured; see the README section of this
app). Every response carries ``x-request-id``; responses also carry ``x-hepgg-overhead-ms``, the
time the gateway spent on the request outside of waiting for the provider (as far as known when
the headers go out).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from django.conf import settings
from django.db import InterfaceError, OperationalError

from hepgg.lib import authfailures
from hepgg.lib.disconnect import DisconnectWatch
from hepgg.lib.requestids import request_id
from llm_gateway import services
from llm_gateway.errors import GatewayError, database_unavailable, sse_error_event

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Headers = list[tuple[bytes, bytes]]


class ClientGone(Exception):
    """The client disconnected before its request was read."""


class Exchange:
    """One request's response side: sends, times, and watches for the client going away."""

    __slots__ = ("_send", "headers_sent", "request_id", "started", "upstream_wait", "watch")

    def __init__(self, receive: Any, send: Any, started: float) -> None:
        self._send = send
        self.watch = DisconnectWatch(receive)
        self.started = started
        self.request_id = request_id().encode()
        self.headers_sent = False
        self.upstream_wait = 0.0  # seconds spent waiting on the provider before our headers

    def _overhead(self) -> bytes:
        ms = (time.perf_counter() - self.started - self.upstream_wait) * 1000
        return f"{ms:.3f}".encode()

    async def start(self, status: int, headers: Headers) -> None:
        headers.append((b"x-request-id", self.request_id))
        headers.append((b"x-hepgg-overhead-ms", self._overhead()))
        self.headers_sent = True
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    @property
    def finished(self) -> bool:
        return self.watch.finished

    async def body(self, data: bytes, *, more: bool) -> None:
        if not more:
            self.watch.finish()  # from here on a disconnect is the normal end, not an abort
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def respond(self, status: int, headers: Headers, body: bytes) -> None:
        headers.append((b"content-length", str(len(body)).encode()))
        await self.start(status, headers)
        await self.body(body, more=False)

    async def respond_json(self, status: int, data: Any) -> None:
        await self.respond(status, [(b"content-type", b"application/json")], orjson.dumps(data))


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


async def _read_body(scope: Scope, receive: Any) -> bytes:
    limit = settings.GATEWAY_MAX_BODY_BYTES
    too_large = GatewayError(
        413,
        f"The request body is larger than this gateway accepts ({limit} bytes).",
        code="request_too_large",
    )
    declared = _header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _chat_completions(scope: Scope, receive: Any, exchange: Exchange) -> None:
    identity = await services.api_key_authenticate(
        authorization=_header(scope, b"authorization"), client=authfailures.client_of_scope(scope)
    )
    payload = services.chat_request_parse(body=await _read_body(scope, receive))
    route = await services.model_route_resolve(identity=identity, requested=payload["model"])
    headers = await services.api_key_limits_acquire(identity=identity)
    await services.chat_completion_relay(
        exchange=exchange,
        identity=identity,
        route=route,
        payload=payload,
        headers=headers,
        started=exchange.started,
    )


def _not_found(scope: Scope) -> GatewayError:
    return GatewayError(
        404, f"Unknown request URL: {scope['method']} {scope['path']}.", code="unknown_url"
    )


def _method_not_allowed(scope: Scope, allowed: str) -> GatewayError:
    return GatewayError(
        405,
        f"Method {scope['method']} is not allowed for {scope['path']}; use {allowed}.",
        code="method_not_allowed",
        headers=[(b"allow", allowed.encode())],
    )


async def _dispatch(scope: Scope, receive: Any, exchange: Exchange) -> None:
    path, method = scope["path"], scope["method"]
    if path == "/v1/chat/completions":
        if method != "POST":
            raise _method_not_allowed(scope, "POST")
        await _chat_completions(scope, receive, exchange)
        return
    if path == "/v1/models" or path.startswith("/v1/models/"):
        if method not in ("GET", "HEAD"):
            raise _method_not_allowed(scope, "GET")
        identity = await services.api_key_authenticate(
            authorization=_header(scope, b"authorization"),
            client=authfailures.client_of_scope(scope),
        )
        model = path.removeprefix("/v1/models").strip("/")
        if model:
            data = await services.model_retrieve(identity=identity, model=model)
        else:
            data = await services.models_list(identity=identity)
        await exchange.respond_json(200, data)
        return
    raise _not_found(scope)


async def _render(exchange: Exchange, error: GatewayError) -> None:
    """The one place errors become responses: a JSON error, or in-band once a stream started."""
    if exchange.headers_sent:
        await exchange.body(sse_error_event(error), more=False)
        return
    status, headers, body = error.render()
    await exchange.respond(status, headers, body)


async def gateway_app(scope: Scope, receive: Any, send: Any) -> None:
    """The ASGI application of ``/v1``."""
    exchange = Exchange(receive, send, time.perf_counter())
    try:
        await _dispatch(scope, receive, exchange)
    except GatewayError as error:
        await _render(exchange, error)
    except ClientGone:
        pass
    except (OperationalError, InterfaceError):
        # The database is unreachable and this request needed it (a credential or a route not
        # cached yet): a quick 503 the client may retry, not a 500.
        logger.warning("database unavailable on %s %s", scope.get("method"), scope.get("path"))
        if exchange.finished:
            raise
        await _render(exchange, database_unavailable())
    except Exception:
        logger.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
        if exchange.finished:
            raise
        await _render(
            exchange,
            GatewayError(
                500,
                "The gateway failed to handle the request.",
                type="server_error",
                retryable=True,
            ),
        )
    finally:
        exchange.watch.stop()
