"""Fixtures of the Claude proxy tests: a fake Anthropic upstream (a real aiohttp server on
loopback, speaking the Messages API's real event sequence), a registered machine with its proxy
token, and hepgg started in front of the fake."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx2
import pytest
from aiohttp import web

from accounts.models import Machine
from accounts.services import machine_register
from tests.conftest import Member
from tests.servers import ServerProcess

MODEL = "claude-sonnet-5"
# The counts the fake reports: message_start carries the input side and output 1; the final
# message_delta repeats the input side (cumulative, as the API does) with the final output.
INPUT, OUTPUT, CACHE_WRITE, CACHE_READ = 25, 15, 10, 5
CACHE_SPLIT = {"ephemeral_5m_input_tokens": 4, "ephemeral_1h_input_tokens": 6}
HOLD_LIMIT = 10.0  # how long the fake holds an event back before it gives up waiting


def usage(output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": INPUT,
        "cache_creation_input_tokens": CACHE_WRITE,
        "cache_read_input_tokens": CACHE_READ,
        "cache_creation": CACHE_SPLIT,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def message_events(message_id: str) -> list[bytes]:
    """The Messages API's event sequence for a two-delta text answer, ping included."""
    return [
        sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": MODEL,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": usage(1),
                },
            },
        ),
        sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        sse("ping", {"type": "ping"}),
        sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hello"},
            },
        ),
        sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": " there"},
            },
        ),
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {
                    "input_tokens": INPUT,
                    "cache_creation_input_tokens": CACHE_WRITE,
                    "cache_read_input_tokens": CACHE_READ,
                    "output_tokens": OUTPUT,
                    "server_tool_use": None,
                },
            },
        ),
        sse("message_stop", {"type": "message_stop"}),
    ]


def message_json(message_id: str) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "Hello there"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage(OUTPUT),
    }


@dataclass
class Seen:
    """One request as the fake upstream received it."""

    method: str
    raw_path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@dataclass
class FakeAnthropic:
    """The upstream. Tests set the knobs below before a request and read what it saw."""

    url: str = ""
    requests: list[Seen] = field(default_factory=list)
    extra_headers: dict[str, str] = field(default_factory=dict)
    error: tuple[int, bytes, dict[str, str]] | None = None  # status, body, headers
    compress: bool = False
    hold_after_first: bool = False  # hold every event after message_start until released
    release: threading.Event = field(default_factory=threading.Event)
    hold_timed_out: bool = False
    reset_after: int | None = None  # events sent before the connection is torn down
    endless: bool = False  # after message_start, a ping every 50 ms until the client is gone
    header_delay: float = 0.0  # seconds before the response starts (unless the proxy hangs up)
    stream_closed_at: float | None = None
    sent_bodies: list[bytes] = field(default_factory=list)  # response bodies, as sent
    _counter: int = 0

    def next_ids(self) -> tuple[str, str]:
        self._counter += 1
        return f"msg_fake{self._counter:04d}", f"req_fake{self._counter:04d}"

    def response_headers(self, request_id: str) -> dict[str, str]:
        return {
            "request-id": request_id,
            "anthropic-organization-id": "org-fake",
            "x-should-retry": "false",
            "anthropic-ratelimit-requests-limit": "4000",
            "anthropic-ratelimit-requests-remaining": "3999",
            **self.extra_headers,
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Seen(
                request.method,
                request.raw_path,
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
                body,
            )
        )
        message_id, request_id = self.next_ids()
        headers = self.response_headers(request_id)
        deadline = time.monotonic() + self.header_delay
        while time.monotonic() < deadline:
            if request.transport is None or request.transport.is_closing():
                self.stream_closed_at = time.monotonic()  # the proxy hung up before our headers
                return web.Response(status=499)
            await asyncio.sleep(0.02)
        if self.error is not None:
            status, error_body, error_headers = self.error
            self.sent_bodies.append(error_body)
            return web.Response(
                status=status,
                body=error_body,
                headers={**headers, **error_headers, "Content-Type": "application/json"},
            )
        path = request.path
        if request.method == "HEAD" and path == "/api/hello":
            return web.Response(status=200, headers=headers)
        if path == "/v1/models":
            return self.json({"data": [{"id": MODEL, "type": "model"}], "has_more": False}, headers)
        if path == "/v1/messages/count_tokens":
            return self.json({"input_tokens": INPUT}, headers)
        if path == "/v1/messages" and request.method == "POST":
            if json.loads(body).get("stream"):
                return await self.stream(request, message_id, headers)
            return self.json(message_json(message_id), headers)
        return self.json(
            {"type": "error", "error": {"type": "not_found_error", "message": "Not found"}},
            headers,
            status=404,
        )

    def json(self, payload: Any, headers: dict[str, str], status: int = 200) -> web.Response:
        raw = json.dumps(payload).encode()
        if self.compress:
            raw = gzip.compress(raw)
            headers = {**headers, "Content-Encoding": "gzip"}
        self.sent_bodies.append(raw)
        return web.Response(
            status=status, body=raw, headers={**headers, "Content-Type": "application/json"}
        )

    async def stream(
        self, request: web.Request, message_id: str, headers: dict[str, str]
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={**headers, "Content-Type": "text/event-stream; charset=utf-8"}
        )
        compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS) if self.compress else None
        if compressor is not None:
            response.headers["Content-Encoding"] = "gzip"
        await response.prepare(request)
        sent = bytearray()

        async def write(data: bytes) -> None:
            if compressor is not None:
                data = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
            sent.extend(data)
            await response.write(data)

        events = message_events(message_id)
        try:
            for index, event in enumerate(events):
                if self.reset_after is not None and index == self.reset_after:
                    assert request.transport is not None
                    await asyncio.sleep(0.2)  # let the events written so far leave the buffer
                    request.transport.abort()  # a reset mid-stream
                    return response
                await write(event)
                if index == 0 and self.endless:
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline:
                        await asyncio.sleep(0.05)
                        await write(sse("ping", {"type": "ping"}))
                    return response
                if index == 0 and self.hold_after_first:
                    deadline = time.monotonic() + HOLD_LIMIT
                    while not self.release.is_set():
                        if time.monotonic() > deadline:
                            self.hold_timed_out = True
                            break
                        await asyncio.sleep(0.01)
            if compressor is not None:
                tail = compressor.flush()
                sent.extend(tail)
                await response.write(tail)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            # The proxy closed the connection (the client went away).
            self.stream_closed_at = time.monotonic()
        finally:
            self.sent_bodies.append(bytes(sent))
        return response


@contextlib.contextmanager
def serve_fake_anthropic() -> Iterator[FakeAnthropic]:
    """The fake upstream on a free loopback port, served from its own thread and loop."""
    fake = FakeAnthropic()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def start() -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", fake.handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        fake.url = f"http://127.0.0.1:{port}"
        holder["runner"] = runner

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield fake
    finally:
        fake.release.set()
        asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with serve_fake_anthropic() as fake:
        yield fake


@dataclass
class Registered:
    machine: Machine
    token: str


@pytest.fixture
def machine(member: Member) -> Registered:
    machine, token = machine_register(account=member.account, hostname="laptop", platform="linux")
    return Registered(machine, token)


@dataclass
class Proxy:
    server: ServerProcess
    base_url: str  # what `ccas init` sets as ANTHROPIC_BASE_URL
    sent: list[httpx2.Request] = field(default_factory=list)
    clients: list[anthropic.Anthropic] = field(default_factory=list)

    def client(self, **kwargs: Any) -> anthropic.Anthropic:
        """The official SDK pointed at the proxy; every request it sends is kept in ``sent``."""
        http_client = httpx2.Client(timeout=30, event_hooks={"request": [self.sent.append]})
        kwargs.setdefault("api_key", CLIENT_API_KEY)
        kwargs.setdefault("max_retries", 0)
        client = anthropic.Anthropic(base_url=self.base_url, http_client=http_client, **kwargs)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()


CLIENT_API_KEY = "sk-ant-api03-client-secret-Zq9xW2vB7nK4mL1pR8tY6u"


@pytest.fixture
def start_proxy(
    hepgg_server: Callable[..., ServerProcess], fake_anthropic: FakeAnthropic, machine: Registered
) -> Iterator[Callable[..., Proxy]]:
    """Factory: hepgg (daphne unless told) in front of the fake, and the machine's base URL."""

    proxies: list[Proxy] = []

    def start(*, server: str = "daphne", env: dict[str, str] | None = None) -> Proxy:
        handle = hepgg_server(
            server=server,
            env={
                "ANTHROPIC_UPSTREAM_URL": fake_anthropic.url,
                "PROXY_RATELIMIT_FLUSH_SECONDS": "0.1",
                **(env or {}),
            },
        )
        proxy = Proxy(handle, f"{handle.base_url}/anthropic/{machine.token}")
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.close()
