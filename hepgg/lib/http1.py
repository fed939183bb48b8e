"""The hot paths' outbound HTTP/1.1 client: keep-alive pools over asyncio transports, responses
parsed by httptools (llhttp, the parser uvicorn already runs for our inbound side).

Why our own client: on this hardware a bare forwarder on uvicorn spent about 180 µs of CPU per
request with this client and about 460 µs with aiohttp's (same fake upstream, same run; numbers
in issue 13's note). The gateway relays one request per request, so the client is most of the
floor under every figure we publish. It does only what the two hot paths need:

- one pool of idle keep-alive connections per origin, per event loop, bounded in total
  (``OUTBOUND_MAX_CONNECTIONS``), idle connections dropped after ``KEEPALIVE_SECONDS``;
- a request body as bytes (``Content-Length``) or an async iterator (the client's
  ``Content-Length`` kept when it gave one, else chunked), written with flow control;
- the response's headers as received, its body read whole or chunk by chunk as it arrives (never
  decompressed: the caller decides), reading paused while the consumer lags (backpressure);
- a connect timeout and a read timeout (silence between two reads), no total: a generation may
  stream for many minutes;
- a pooled connection the upstream closed while idle is never used; a request is never sent twice.

Errors: ``NotReached`` (nothing was sent: refused, DNS, connect timeout, TLS), ``ReadTimeout`` and
``ConnectionBroken`` (the upstream had the request). Timeouts are ``TimeoutError`` subclasses.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ssl
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httptools

KEEPALIVE_SECONDS = 30.0
_HIGH_WATER = 256 * 1024  # buffered response bytes above which reading from the socket pauses

Headers = list[tuple[bytes, bytes]]


class UpstreamError(OSError):
    """The upstream failed the request."""


class NotReached(UpstreamError):
    """No connection: the request never left."""


class ConnectTimeout(NotReached, TimeoutError):
    pass


class ReadTimeout(UpstreamError, TimeoutError):
    """The upstream went silent for longer than the read timeout."""


class ConnectionBroken(UpstreamError):
    """The connection closed or reset before the response was complete, or the response was not
    valid HTTP."""


class _Origin:
    __slots__ = ("host", "host_header", "key", "port", "ssl")

    def __init__(self, scheme: str, host: str, port: int | None) -> None:
        secure = scheme == "https"
        self.host = host
        self.port = port or (443 if secure else 80)
        self.ssl: ssl.SSLContext | None = _ssl_context() if secure else None
        default = (secure and self.port == 443) or (not secure and self.port == 80)
        name = f"[{host}]" if ":" in host else host
        self.host_header = (name if default else f"{name}:{self.port}").encode("idna")
        self.key = (scheme, host, self.port)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


@functools.lru_cache(maxsize=256)
def _parse_url(url: str) -> tuple[_Origin, bytes]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotReached(f"not an http(s) URL: {url!r}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return _Origin(parts.scheme, parts.hostname, parts.port), target.encode("latin-1")


class Response:
    """One response: status and headers at once, the body as it arrives."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_done",
        "_error",
        "_size",
        "_waiter",
        "headers",
        "reason",
        "status",
    )

    def __init__(self, conn: _Connection) -> None:
        self._conn: _Connection | None = conn
        self.status = 0
        self.reason = ""
        self.headers: Headers = []
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def raw_headers(self) -> Headers:
        return self.headers

    def header(self, name: bytes) -> str | None:
        """The first value of header ``name`` (lower case), or None."""
        for key, value in self.headers:
            if key.lower() == name:
                return value.decode("latin-1")
        return None

    # -- fed by the connection ----------------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > _HIGH_WATER and self._conn is not None:
            self._conn.pause_reading()
        self._wake()

    def _finish(self) -> None:
        self._done = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if not self._done:
            self._error = error
            self._done = True
        self._wake()

    # -- read by the caller -------------------------------------------------------------------
    async def _wait(self) -> None:
        conn = self._conn
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timeout = conn.read_timeout if conn is not None else None
        timer = loop.call_later(timeout, _expire, waiter) if timeout else None
        try:
            await waiter
        except ReadTimeout:
            self._fail(ReadTimeout(f"no data from the upstream for {timeout:g} s"))
            self.close()
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    async def readany(self) -> bytes:
        """The body that has arrived since the last call (waits for some); ``b""`` once the body
        is complete."""
        while not self._chunks:
            if self._done:
                if self._error is not None:
                    raise self._error
                return b""
            await self._wait()
        # Everything that has arrived, in one piece: a burst of small chunks (an SSE stream's
        # events) becomes one write to our client instead of one per chunk.
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        if self._conn is not None:
            self._conn.resume_reading()
        return data

    async def read(self) -> bytes:
        """The whole body."""
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self.readany():
            yield chunk

    def release(self) -> None:
        """Done with the response: its connection goes back to the pool if it can be reused."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and self._error is None and not self._chunks:
            conn.response_done()
        else:
            conn.close()

    def close(self) -> None:
        """Abort: the connection is closed (the upstream sees its client go)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self._fail(ConnectionBroken("response closed"))


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(ReadTimeout())


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight."""

    def __init__(self, pool: Client, origin: _Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.headers_ready: asyncio.Future[None] | None = None
        self.read_timeout: float | None = None
        self.closed = False
        self.keep_alive = True
        self.body_until_close = False
        self.head = False
        self.idle_since = 0.0
        self.reading_paused = False
        self.write_ready: asyncio.Future[None] | None = None
        self.writing_paused = False

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # bytes nobody asked for: the connection is not usable
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._broken(ConnectionBroken(f"invalid HTTP from the upstream: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed, self.closed = self.closed, True
        self.pool.forget(self, counted=not was_closed)
        response = self.response
        if response is not None and not response._done:
            if self.body_until_close and exc is None and self.headers_done:
                response._finish()  # a body framed by the connection's end ends here
            else:
                self._broken(ConnectionBroken("the upstream closed the connection"))
        self._wake_writer()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self.write_ready is not None and not self.write_ready.done():
            self.write_ready.set_result(None)

    # -- httptools callbacks ------------------------------------------------------------------
    @property
    def headers_done(self) -> bool:
        return self.headers_ready is not None and self.headers_ready.done()

    def on_status(self, status: bytes) -> None:
        if self.response is not None:
            self.response.reason = status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            self.response.headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self.response
        if response is None:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            response.headers = []
            return
        response.status = status
        self.keep_alive = self.parser.should_keep_alive()
        framed = False
        for key, value in response.headers:
            name = key.lower()
            if name == b"content-length" or (
                name == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                framed = True
        self.body_until_close = not framed and status not in (204, 304) and not self.head
        if self.headers_ready is not None and not self.headers_ready.done():
            self.headers_ready.set_result(None)
        if self.head:  # no body follows, whatever the headers say
            self.keep_alive = False
            response._finish()

    def on_body(self, body: bytes) -> None:
        if self.response is not None and not self.head:
            self.response._feed(body)

    def on_message_complete(self) -> None:
        response = self.response
        if response is None or response.status == 0:  # the end of an interim answer
            return
        response._finish()

    # -- used by Client and Response ----------------------------------------------------------
    def _broken(self, error: UpstreamError) -> None:
        if self.headers_ready is not None and not self.headers_ready.done():
            self.headers_ready.set_exception(error)
        if self.response is not None:
            self.response._fail(error)
        self.close()

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def response_done(self) -> None:
        self.response = None
        self.headers_ready = None
        if self.keep_alive and not self.closed and not self.reading_paused:
            self.idle_since = time.monotonic()
            self.pool.park(self)
        else:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.forget(self, counted=True)
            if self.transport is not None:
                self.transport.abort()

    async def drain(self) -> None:
        if self.writing_paused and not self.closed:
            self.write_ready = asyncio.get_running_loop().create_future()
            await self.write_ready
            self.write_ready = None
        if self.closed:
            raise ConnectionBroken("the upstream closed the connection while we sent the body")


class Client:
    """The pools of one event loop."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self.open = 0
        self.idle: dict[tuple[str, str, int], collections.deque[_Connection]] = {}
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    # -- the pool -----------------------------------------------------------------------------
    def park(self, conn: _Connection) -> None:
        self.idle.setdefault(conn.origin.key, collections.deque()).append(conn)
        self._wake_one()

    def forget(self, conn: _Connection, *, counted: bool) -> None:
        if counted:
            self.open -= 1
            self._wake_one()
        idle = self.idle.get(conn.origin.key)
        if idle and conn in idle:
            idle.remove(conn)

    def _wake_one(self) -> None:
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _idle_connection(self, origin: _Origin) -> _Connection | None:
        idle = self.idle.get(origin.key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to have timed out
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                continue
            if now - conn.idle_since > KEEPALIVE_SECONDS:
                conn.close()
                continue
            return conn
        return None

    async def _connect(self, origin: _Origin, timeout: float | None) -> _Connection:
        while self.max_connections and self.open >= self.max_connections:
            # Full: an idle connection to another origin makes room, else wait for one to free.
            if not self._close_an_idle_connection():
                waiter = asyncio.get_running_loop().create_future()
                self.waiting.append(waiter)
                await waiter
            if (conn := self._idle_connection(origin)) is not None:
                return conn
        self.open += 1
        loop = asyncio.get_running_loop()
        try:
            connecting = loop.create_connection(
                lambda: _Connection(self, origin),
                origin.host,
                origin.port,
                ssl=origin.ssl,
                server_hostname=origin.host if origin.ssl else None,
            )
            _transport, conn = await asyncio.wait_for(connecting, timeout)
        except TimeoutError:
            self.open -= 1
            self._wake_one()
            message = f"no connection to {origin.host}:{origin.port} in {timeout:g} s"
            raise ConnectTimeout(message) from None
        except OSError as exc:  # refused, unreachable, DNS (gaierror), TLS (SSLError)
            self.open -= 1
            self._wake_one()
            raise NotReached(f"cannot connect to {origin.host}:{origin.port}: {exc}") from exc
        except BaseException:
            self.open -= 1
            self._wake_one()
            raise
        return conn

    def _close_an_idle_connection(self) -> bool:
        for idle in self.idle.values():
            if idle:
                idle.popleft().close()
                return True
        return False

    async def close(self) -> None:
        for idle in list(self.idle.values()):
            while idle:
                idle.pop().close()

    # -- a request ----------------------------------------------------------------------------
    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: list[tuple[Any, Any]],
        body: bytes | AsyncIterator[bytes] = b"",
        connect_timeout: float | None,
        read_timeout: float | None,
    ) -> Response:
        """Send one request; the response once its headers arrived. The caller must ``release()``
        or ``close()`` the response."""
        origin, target = _parse_url(url)
        head = _request_head(method, target, origin, headers, body)
        # A pooled connection the upstream closed while idle is skipped here. One that closes
        # as the request goes out fails it: a POST is never sent twice (the upstream may have
        # taken it, and a completion costs money); the client's SDK decides about a retry.
        conn = self._idle_connection(origin)
        if conn is None:
            conn = await self._connect(origin, connect_timeout)
        try:
            return await self._exchange(conn, method, head, body, read_timeout)
        except BaseException:
            conn.close()
            raise

    async def _exchange(
        self,
        conn: _Connection,
        method: str,
        head: bytes,
        body: bytes | AsyncIterator[bytes],
        read_timeout: float | None,
    ) -> Response:
        loop = asyncio.get_running_loop()
        response = Response(conn)
        conn.response = response
        conn.head = method == "HEAD"
        conn.read_timeout = read_timeout
        conn.headers_ready = ready = loop.create_future()
        transport = conn.transport
        if transport is None or conn.closed or transport.is_closing():
            raise ConnectionBroken("the upstream closed the connection")
        if isinstance(body, bytes):
            transport.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                transport.write(body)
        else:
            transport.write(head)
            chunked = b"transfer-encoding: chunked" in head.lower()
            async for chunk in body:
                if conn.closed:
                    break
                if chunk:
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                    await conn.drain()
            if chunked and not conn.closed:
                transport.write(b"0\r\n\r\n")
        timer = loop.call_later(read_timeout, _expire, ready) if read_timeout else None
        try:
            await ready
        except ReadTimeout:
            conn.close()
            raise ReadTimeout(f"no answer from the upstream in {read_timeout:g} s") from None
        finally:
            if timer is not None:
                timer.cancel()
        return response


def _request_head(
    method: str,
    target: bytes,
    origin: _Origin,
    headers: list[tuple[Any, Any]],
    body: bytes | AsyncIterator[bytes],
) -> bytes:
    lines = [method.encode("ascii") + b" " + target + b" HTTP/1.1"]
    has_host = has_length = False
    for name, value in headers:
        # Text goes out as UTF-8, so a value the proxy decoded from UTF-8 leaves byte for byte.
        name = name.encode("utf-8") if isinstance(name, str) else name
        value = value.encode("utf-8") if isinstance(value, str) else value
        lower = name.lower()
        if lower == b"host":
            has_host = True
        elif lower in (b"content-length", b"transfer-encoding"):
            if not isinstance(body, bytes):
                has_length = True
            else:
                continue  # bytes are framed by their own length below
        if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name:
            continue  # never let a header value split the request
        lines.append(name + b": " + value)
    if not has_host:
        lines.insert(1, b"Host: " + origin.host_header)
    if isinstance(body, bytes):
        if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            lines.append(b"Content-Length: " + str(len(body)).encode())
    elif not has_length:
        lines.append(b"Transfer-Encoding: chunked")
    return b"\r\n".join(lines) + b"\r\n\r\n"


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Client] = weakref.WeakKeyDictionary()


def client() -> Client:
    """The running loop's client (created on first use)."""
    loop = asyncio.get_running_loop()
    found = _clients.get(loop)
    if found is None:
        from django.conf import settings

        found = _clients[loop] = Client(settings.OUTBOUND_MAX_CONNECTIONS)
    return found


async def close_client() -> None:
    """Close the running loop's idle connections (graceful shutdown)."""
    found = _clients.pop(asyncio.get_running_loop(), None)
    if found is not None:
        await found.close()
