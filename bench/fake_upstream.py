"""A fast fake LLM upstream for benchmarks: OpenAI Chat Completions + Anthropic Messages.

Bare asyncio protocol + httptools parser (+ uvloop when installed), HTTP/1.1 keep-alive.
Responses are built from cached templates, so the fake costs far less CPU per request
than any proxy in front of it.

    python bench/fake_upstream.py --port 18080 [--chunk-delay-ms 0]

Routes (POST):
    /v1/chat/completions
    /client/v4/accounts/{account_id}/ai/v1/chat/completions   (Cloudflare Workers AI)
    /accounts/{account_id}/ai/v1/chat/completions
    /v1/messages                 (Anthropic; query string ignored, e.g. ?beta=true)
    /v1/messages/count_tokens
GET /healthz and GET /v1/models answer 200.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import secrets
import signal
import time
from typing import Any, cast

import httptools

N_CHUNKS = 20
WORDS = [f" word{i}" for i in range(N_CHUNKS)]
COMPLETION_TEXT = "".join(WORDS)
ID_MARK = b"@@ID@@"
STATUS_TEXT = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
OPENAI_PATH = re.compile(
    r"^(?:/client/v4)?/accounts/[^/]+/ai/v1/chat/completions$|^/v1/chat/completions$"
)

_ids = itertools.count(1)
_run = secrets.token_hex(6)  # ids stay unique across restarts (gateways may dedupe on them)


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _ident(n: int | None) -> bytes:
    return f"{_run}{n if n is not None else next(_ids):08d}".encode()


def _prompt_tokens(body: bytes) -> int:
    return max(1, len(body) // 4)


# ---------------------------------------------------------------- OpenAI bodies
def openai_json(model: str, prompt_tokens: int) -> bytes:
    return _json(
        {
            "id": "chatcmpl-@@ID@@",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": COMPLETION_TEXT, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": N_CHUNKS,
                "total_tokens": prompt_tokens + N_CHUNKS,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
            },
            "system_fingerprint": "fp_bench",
        }
    )


def openai_events(model: str, prompt_tokens: int, include_usage: bool) -> list[bytes]:
    base: dict[str, Any] = {
        "id": "chatcmpl-@@ID@@",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_bench",
    }
    extra: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + _json({**base, "choices": [choice], **extra}) + b"\n\n"

    events = [chunk({"role": "assistant", "content": WORDS[0]}, None)]
    events += [chunk({"content": w}, None) for w in WORDS[1:]]
    events.append(chunk({}, "stop"))
    if include_usage:
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": N_CHUNKS,
            "total_tokens": prompt_tokens + N_CHUNKS,
        }
        events.append(b"data: " + _json({**base, "choices": [], "usage": usage}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


# ------------------------------------------------------------- Anthropic bodies
def _anthropic_usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def anthropic_json(model: str, input_tokens: int) -> bytes:
    return _json(
        {
            "id": "msg_bench@@ID@@",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": COMPLETION_TEXT}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": _anthropic_usage(input_tokens, N_CHUNKS),
        }
    )


def anthropic_events(model: str, input_tokens: int) -> list[bytes]:
    def ev(name: str, data: dict[str, Any]) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + _json(data) + b"\n\n"

    message = {
        "id": "msg_bench@@ID@@",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _anthropic_usage(input_tokens, 1),
    }
    events = [
        ev("message_start", {"type": "message_start", "message": message}),
        ev(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        ev("ping", {"type": "ping"}),
    ]
    for w in WORDS:
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": w},
        }
        events.append(ev("content_block_delta", delta))
    events += [
        ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ev(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": N_CHUNKS},
            },
        ),
        ev("message_stop", {"type": "message_stop"}),
    ]
    return events


# ------------------------------------------------------------------ templates
_cache: dict[tuple[Any, ...], list[bytes]] = {}


def template(key: tuple[Any, ...], build: Any) -> list[bytes]:
    """Bounded cache of response bodies (split into SSE events) keyed by kind/model/tokens."""
    hit = _cache.get(key)
    if hit is None:
        if len(_cache) >= 256:
            _cache.clear()
        hit = _cache[key] = build()
    return hit


def head(status: int, content_type: str, extra: list[tuple[str, str]], length: int | None) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {STATUS_TEXT.get(status, 'Error')}",
        f"content-type: {content_type}",
    ]
    if length is None:
        lines += ["transfer-encoding: chunked", "cache-control: no-cache"]
    else:
        lines.append(f"content-length: {length}")
    lines += [f"{k}: {v}" for k, v in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class HttpProtocol(asyncio.Protocol):
    """One connection; requests answered in order; reading pauses while a delayed stream runs."""

    chunk_delay: float = 0.0

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.task: asyncio.Task[None] | None = None

    # -- transport callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(
            asyncio.Transport, transport
        )  # uvloop's is no asyncio.Transport subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.send_simple(400, {"error": "bad request"}, keep_alive=False)

    # -- parser callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = self.parser.should_keep_alive()
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        body = b"".join(self.body)
        if method == b"GET" and path in ("/healthz", "/v1/models"):
            self.send_simple(
                200,
                {"object": "list", "data": [{"id": "bench-model", "object": "model"}]},
                keep_alive,
            )
        elif method != b"POST":
            self.send_simple(405, {"error": "method not allowed"}, keep_alive)
        elif path == "/v1/messages":
            self.anthropic(body, keep_alive)
        elif path == "/v1/messages/count_tokens":
            self.send_simple(200, {"input_tokens": _prompt_tokens(body)}, keep_alive)
        elif OPENAI_PATH.match(path):
            self.openai(body, keep_alive)
        else:
            self.send_simple(404, {"error": f"no route {path}"}, keep_alive)

    # -- handlers
    def openai(self, raw: bytes, keep_alive: bool) -> None:
        req = self.parse_json(raw, keep_alive)
        if req is None:
            return
        model = str(req.get("model", "unknown"))
        tokens = _prompt_tokens(raw)
        if req.get("stream"):
            include = bool((req.get("stream_options") or {}).get("include_usage"))
            events = template(
                ("oai-sse", model, tokens, include), lambda: openai_events(model, tokens, include)
            )
            self.send_stream(events, [], keep_alive)
        else:
            body = template(("oai", model, tokens), lambda: [openai_json(model, tokens)])[0]
            self.send_body(200, body, [], keep_alive)

    def anthropic(self, raw: bytes, keep_alive: bool) -> None:
        req = self.parse_json(raw, keep_alive)
        if req is None:
            return
        model = str(req.get("model", "unknown"))
        tokens = _prompt_tokens(raw)
        n = next(_ids)
        extra = [
            ("request-id", f"req_bench{_run}{n:08d}"),
            ("anthropic-organization-id", "bench-org"),
        ]
        if req.get("stream"):
            events = template(("ant-sse", model, tokens), lambda: anthropic_events(model, tokens))
            self.send_stream(events, extra, keep_alive, n)
        else:
            body = template(("ant", model, tokens), lambda: [anthropic_json(model, tokens)])[0]
            self.send_body(200, body, extra, keep_alive, n)

    def parse_json(self, raw: bytes, keep_alive: bool) -> dict[str, Any] | None:
        try:
            req = json.loads(raw)
        except ValueError:
            req = None
        if not isinstance(req, dict):
            self.send_simple(400, {"error": "body must be a JSON object"}, keep_alive)
            return None
        return req

    # -- writers
    def send_simple(self, status: int, obj: Any, keep_alive: bool) -> None:
        self.send_body(status, _json(obj), [], keep_alive)

    def send_body(
        self,
        status: int,
        body: bytes,
        extra: list[tuple[str, str]],
        keep_alive: bool,
        n: int | None = None,
    ) -> None:
        if self.transport is None:
            return
        body = body.replace(ID_MARK, _ident(n))
        self.transport.write(head(status, "application/json", extra, len(body)) + body)
        if not keep_alive:
            self.transport.close()

    def send_stream(
        self,
        events: list[bytes],
        extra: list[tuple[str, str]],
        keep_alive: bool,
        n: int | None = None,
    ) -> None:
        if self.transport is None:
            return
        ident = _ident(n)
        parts = [chunked(e.replace(ID_MARK, ident)) for e in events]
        header = head(200, "text/event-stream; charset=utf-8", extra, None)
        if self.chunk_delay <= 0:
            self.transport.write(header + b"".join(parts) + b"0\r\n\r\n")
            if not keep_alive:
                self.transport.close()
            return
        self.transport.pause_reading()
        self.task = asyncio.get_running_loop().create_task(self.drip(header, parts, keep_alive))

    async def drip(self, header: bytes, parts: list[bytes], keep_alive: bool) -> None:
        first = True
        for part in parts:
            if self.transport is None:
                return
            if not first:
                await asyncio.sleep(self.chunk_delay)
            self.transport.write(header + part if first else part)
            first = False
        if self.transport is None:
            return
        self.transport.write(b"0\r\n\r\n")
        if keep_alive:
            self.transport.resume_reading()
        else:
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HttpProtocol, host, port, reuse_address=True, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"fake upstream listening on http://{host}:{port}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument(
        "--chunk-delay-ms", type=float, default=0.0, help="sleep between SSE events (default 0)"
    )
    args = ap.parse_args()
    HttpProtocol.chunk_delay = args.chunk_delay_ms / 1000.0
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
