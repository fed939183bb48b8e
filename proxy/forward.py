"""The Claude proxy: ``/anthropic/pt_<token>/<rest>`` → ``{ANTHROPIC_UPSTREAM_URL}/<rest>``.

A bare ASGI callable, not a Channels consumer and not a Django view: measured on this hardware a
Channels ``AsyncHttpConsumer`` forwarder peaked at a fifth of a bare ASGI function's requests per
second, and Django's request stack buffers bodies under a 2.5 MB limit. The life of a request:

1. The token in the path is resolved (``aresolve``: a cache hit, or one indexed query) before
   anything goes upstream; an unknown or revoked one gets Anthropic's 401 and nothing is sent.
2. Method, path, query string, headers (less hop-by-hop, see ``proxy.headers``) and body go
   upstream unchanged. A body that came in one ASGI message is passed as bytes; a longer one is
   streamed from ``receive()`` through an async generator, never buffered, up to
   ``PROXY_MAX_BODY_BYTES`` (413 above it).
3. Status and headers come back as they are, then every body chunk is sent to the client the
   moment it arrives, compressed or not, exactly as the upstream sent it. Only after a chunk is
   sent does a copy go to the meter (``proxy.metering``).
4. Once the request body is read, a ``DisconnectWatch`` awaits ``receive()``: when the client
   disconnects it cancels the relay, which closes the upstream connection at once, and the usage
   seen so far is recorded; a client gone before the upstream's headers is recorded too (with
   status 499), since the request did reach the upstream.
5. After the last byte: one usage event (``/v1/messages`` only) into the batched writer, the
   machine's latest subscription limits into ``proxy.ratelimits``, and the machine's last_seen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from accounts.credentials import MachineIdentity, aresolve
from accounts.tokens import Kind, claimed_kind
from hepgg.lib import authfailures, http1
from hepgg.lib.disconnect import DisconnectWatch
from hepgg.lib.requestids import request_id
from proxy.errors import ProxyError, send_proxy_error
from proxy.headers import IncomingHeaders, OutgoingHeaders, incoming_headers, outgoing_headers
from proxy.metering import MessagesMeter, metadata_user_id, request_model, session_from_user_id
from proxy.ratelimits import rate_limits
from usage.records import UsageRecord
from usage.writer import usage_writer

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MOUNT = b"/anthropic/"
METERED_PATH = b"/v1/messages"
_NO_BODY_STATUS = frozenset({204, 304})
# How much of the request body's end is kept for attribution (metadata.user_id sits at the end).
_BODY_TAIL_BYTES = 256 * 1024
_UPSTREAM_LOST = (
    b'event: error\ndata: {"type":"error","error":{"type":"api_error",'
    b'"message":"The upstream connection was lost mid-stream."}}\n\n'
)


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


def _auth_error(token: str) -> ProxyError:
    message = "Invalid proxy token: use the base URL `ccas init` printed, /anthropic/pt_..."
    kind = claimed_kind(token) if token else None
    if kind is not None and kind is not Kind.PROXY:
        message += f" (the path holds {kind.with_article}, not a proxy token)"
    return ProxyError(401, "authentication_error", message)


def _too_many_failures(retry_after: int) -> ProxyError:
    message = f"Too many invalid proxy tokens from this address; retry after {retry_after} s."
    return ProxyError(429, "rate_limit_error", message, retry_after=retry_after)


class _Exchange:
    """One proxied request: its state from the first ASGI message to the usage record."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope, self.receive, self.send = scope, receive, send
        self.started = time.perf_counter()
        self.occurred_at = timezone.now()
        self.watch = DisconnectWatch(receive)
        self.left_during_body = False  # the client went away before its body was read
        self.too_large = False  # the streamed body went over PROXY_MAX_BODY_BYTES
        self.body_head = b""
        self.body_tail: deque[bytes] = deque()
        self.ttfb: float | None = None
        self.session_id = ""
        self.claude_code: dict[str, str] = {}
        self.ended_by = ""  # why the response ended early, if it did

    # -- the client side ----------------------------------------------------------------------
    def keep_body_tail(self, chunk: bytes, size: int) -> None:
        self.body_tail.append(chunk)
        while size > _BODY_TAIL_BYTES and len(self.body_tail) > 1:
            size -= len(self.body_tail.popleft())

    async def stream_body(self, first: bytes, declared: int | None) -> AsyncIterator[bytes]:
        """The request body, from ``receive()`` straight into the upstream request."""
        limit = settings.PROXY_MAX_BODY_BYTES
        seen, tail_size = len(first), len(first)
        self.body_head = first[:4096]
        self.keep_body_tail(first, tail_size)
        yield first
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.left_during_body = True
                raise _ClientGone
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                self.too_large = True
                raise _BodyTooLarge
            if chunk:
                tail_size = min(tail_size + len(chunk), 2 * _BODY_TAIL_BYTES)
                self.keep_body_tail(chunk, tail_size)
                yield chunk
            if not message.get("more_body", False):
                break
        if declared is not None and seen != declared:
            raise _ClientGone  # a body shorter than its Content-Length: the client broke off
        self.watch.start()

    # -- the relay ----------------------------------------------------------------------------
    async def run(self) -> None:
        scope = self.scope
        raw_path = scope.get("raw_path") or quote(scope["path"]).encode()
        mount = raw_path.find(MOUNT)
        after = mount + len(MOUNT)
        slash = raw_path.find(b"/", after)
        token = (raw_path[after:] if slash == -1 else raw_path[after:slash]).decode("latin-1")
        rest = b"/" if slash == -1 else raw_path[slash:]

        client = authfailures.client_of_scope(scope)
        if (wait := authfailures.blocked("proxy", client)) is not None:
            await send_proxy_error(self.send, _too_many_failures(wait))
            return
        identity = await aresolve(token, Kind.PROXY) if token.startswith("pt_") else None
        if not isinstance(identity, MachineIdentity):
            verdict = await authfailures.afailed("proxy", client)
            wait = verdict.retry_after
            error = _auth_error(token) if wait is None else _too_many_failures(wait)
            await send_proxy_error(self.send, error)
            return

        headers = incoming_headers(scope["headers"])
        self.session_id, self.claude_code = headers.session_id, headers.claude_code
        limit = settings.PROXY_MAX_BODY_BYTES
        if headers.content_length is not None and headers.content_length > limit:
            await send_proxy_error(self.send, _too_large(limit))
            return

        message = await self.receive()
        if message["type"] == "http.disconnect":
            return
        body = message.get("body", b"")
        data: bytes | AsyncIterator[bytes]
        if message.get("more_body", False):
            data = self.stream_body(body, headers.content_length)
            if headers.content_length is not None:  # keep the client's framing, not chunked
                headers.forward.append(("Content-Length", str(headers.content_length)))
        else:
            data = body
            self.body_head = body
            self.body_tail.append(body)
            self.watch.start()

        method = scope["method"]
        query = scope.get("query_string", b"")
        target = settings.ANTHROPIC_UPSTREAM_URL + rest.decode("latin-1")
        if query:
            target += "?" + query.decode("latin-1")
        metered = method == "POST" and rest == METERED_PATH
        try:
            await self.relay(method, target, headers, data, identity, metered=metered)
        finally:
            self.watch.stop()

    async def relay(
        self,
        method: str,
        target: str,
        headers: IncomingHeaders,
        data: bytes | AsyncIterator[bytes],
        identity: MachineIdentity,
        *,
        metered: bool,
    ) -> None:
        try:
            # The client's path, query and headers as they came, the body never decompressed.
            response = await http1.client().request(
                method,
                target,
                headers=headers.forward,
                body=data,
                connect_timeout=settings.PROXY_UPSTREAM_CONNECT_TIMEOUT,
                # No total: a long generation may stream for many minutes; only silence is an error.
                read_timeout=settings.PROXY_UPSTREAM_READ_TIMEOUT,
            )
        except asyncio.CancelledError:
            if not self.watch.consume_cancel():
                raise
            # The client left while the upstream had the whole request: it may well be billed
            # for it, so it is metered (499, as nginx logs a client that closed first).
            self.ended_by = "client_disconnect"
            self.record(identity, 499, outgoing_headers(()), _empty_meter() if metered else None)
            return
        except (OSError, TimeoutError, _BodyTooLarge, _ClientGone) as exc:
            # The body generator's errors reach us directly, or as the upstream's failure: the flags
            # say which it was. A body cut short never made a request the upstream could serve.
            if self.left_during_body or isinstance(exc, _ClientGone):
                return
            if self.too_large:
                await send_proxy_error(self.send, _too_large(settings.PROXY_MAX_BODY_BYTES))
                return
            error = _upstream_error(exc)
            await send_proxy_error(self.send, error)
            if not isinstance(exc, _NOT_REACHED):
                # Connected and sent: the upstream had the request (it reset, or went silent
                # past the read timeout), so it is metered with the status the client got.
                self.ended_by = "upstream_error"
                meter = _empty_meter() if metered else None
                self.record(identity, error.status, outgoing_headers(()), meter)
            return

        usage_writer.touch_machine(identity.machine_id)
        out = outgoing_headers(response.raw_headers)
        meter = (
            MessagesMeter(content_type=out.content_type, content_encoding=out.content_encoding)
            if metered
            else None
        )
        try:
            await self.send(
                {"type": "http.response.start", "status": response.status, "headers": out.relay}
            )
            if method == "HEAD" or response.status in _NO_BODY_STATUS:
                self.ttfb = time.perf_counter()
                self.watch.finish()
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                await self.relay_body(response, out, meter)
        except asyncio.CancelledError:
            if not self.watch.consume_cancel():
                response.close()
                self.record(identity, response.status, out, meter)
                raise
            self.ended_by = "client_disconnect"
        finally:
            if self.watch.finished and not self.ended_by:
                response.release()
            else:
                response.close()  # not read to the end: the connection cannot be reused
        self.record(identity, response.status, out, meter)

    async def relay_body(
        self, response: http1.Response, out: OutgoingHeaders, meter: MessagesMeter | None
    ) -> None:
        send = self.send
        remaining = out.content_length
        try:
            while chunk := await response.readany():
                if self.ttfb is None:
                    self.ttfb = time.perf_counter()
                if remaining is not None:
                    remaining -= len(chunk)
                    if remaining <= 0:  # the declared length is complete: one message, not two
                        self.watch.finish()
                        await send({"type": "http.response.body", "body": chunk})
                        if meter is not None:
                            meter.feed(chunk)
                        return
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if meter is not None:
                    meter.feed(chunk)  # after the send: metering never delays a byte
        except (OSError, TimeoutError):
            # Reset or timed out mid-body. The status is out, so the error can only travel in
            # band: an SSE error event when the stream carried none and we control the framing.
            self.ended_by = "upstream_error"
            self.watch.finish()
            tail = b""
            if (
                out.content_length is None
                and meter is not None
                and meter.streaming
                and not meter.error_type
                and not out.content_encoding
            ):
                tail = _UPSTREAM_LOST
            await send({"type": "http.response.body", "body": tail})
            return
        self.watch.finish()
        await send({"type": "http.response.body", "body": b""})

    # -- bookkeeping, after the last byte -----------------------------------------------------
    def record(
        self,
        identity: MachineIdentity,
        status: int,
        out: OutgoingHeaders,
        meter: MessagesMeter | None,
    ) -> None:
        if out.unified_limits:
            rate_limits.observe(identity.machine_id, out.unified_limits)
        if meter is None:
            return
        meter.finish()
        now = time.perf_counter()
        session = self.session_id
        if not session:  # older Claude Code: the session is in metadata.user_id
            user_id = metadata_user_id(b"".join(self.body_tail))
            session = session_from_user_id(user_id) if user_id else ""
        record = UsageRecord(
            account_id=identity.account_id,
            source="proxy",
            model=meter.model or request_model(self.body_head),
            machine_id=identity.machine_id,
            occurred_at=self.occurred_at,
            input_tokens=meter.tokens("input_tokens"),
            output_tokens=meter.tokens("output_tokens"),
            cache_creation_input_tokens=meter.tokens("cache_creation_input_tokens"),
            cache_read_input_tokens=meter.tokens("cache_read_input_tokens"),
            status_code=status,
            stop_reason=meter.stop_reason,
            latency_ms=round((now - self.started) * 1000, 3),
            ttfb_ms=None if self.ttfb is None else round((self.ttfb - self.started) * 1000, 3),
            request_id=_header(out, b"request-id"),
            message_id=meter.message_id,
            session_id=session,
            event_id=request_id(),
            details=self.details(meter),
        )
        usage_writer.record(record)

    def details(self, meter: MessagesMeter) -> dict[str, Any]:
        details: dict[str, Any] = {"stream": meter.streaming}
        split = meter.cache_creation_split
        if split:
            details["cache_creation"] = split
        for key in ("service_tier", "server_tool_use"):
            if meter.usage.get(key) is not None:
                details[key] = meter.usage[key]
        if self.claude_code:
            details["claude_code"] = self.claude_code
            for header, key in (("agent-id", "agent_id"), ("request-class", "request_class")):
                if header in self.claude_code:
                    details[key] = self.claude_code[header]
        if self.ended_by:
            details["partial"] = True
            details["ended_by"] = self.ended_by
        if meter.error_type:
            details["error_type"] = meter.error_type
        if meter.unreadable:
            details["unmetered"] = meter.unreadable
        return details


def _header(out: OutgoingHeaders, name: bytes) -> str:
    for key, value in out.relay:
        if key == name:
            return value.decode("latin-1")
    return ""


def _too_large(limit: int) -> ProxyError:
    return ProxyError(
        413, "request_too_large", f"Request body is larger than the proxy's limit of {limit} bytes."
    )


# Failures before the request could reach the upstream: nothing to meter.
_NOT_REACHED = (http1.NotReached,)


def _empty_meter() -> MessagesMeter:
    """The meter of a response that never came: no usage, the model read from the request."""
    return MessagesMeter(content_type=b"", content_encoding=b"")


def _database_unavailable() -> ProxyError:
    return ProxyError(
        503, "api_error", "The proxy cannot reach its database right now; please retry shortly."
    )


def _upstream_error(exc: BaseException) -> ProxyError:
    if isinstance(exc, TimeoutError):
        return ProxyError(504, "timeout_error", "The upstream did not answer in time.")
    return ProxyError(502, "api_error", "The upstream could not be reached.")


async def proxy_app(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI entry point for ``/anthropic/…`` (HTTP only)."""
    try:
        await _Exchange(scope, receive, send).run()
    except (OperationalError, InterfaceError):
        # Resolving a token not cached yet needs the database, before anything is sent: with
        # the database unreachable that is a quick 503 in Anthropic's shape, never a 500.
        logger.warning("database unavailable on %s %s", scope.get("method"), MOUNT.decode())
        await send_proxy_error(send, _database_unavailable())
