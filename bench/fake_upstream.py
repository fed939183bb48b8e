"""A fast fake LLM upstream for benchmarks: OpenAI Chat Completions + Anthropic Messages.

Bare asyncio protocol + httptools parser (+ uvloop when installed), HTTP/1.1 keep-alive.
Responses are built from cached templates, so the fake costs far less CPU per request
than any proxy in front of it.

    python bench/fake_upstream.py --port 18080 [--chunk-delay-ms 0] [--stream-bytes N]
        [--seed 1 --reset-rate 0.0125 --error-rate 0.0125 --stall-rate 0.0125
         --malformed-rate 0.0125 --stall-seconds 3]

Faults (for ``bench/fault_load.py``), each with its own rate, decided per request from the seed and
the request's tag (``[req:<tag>]`` anywhere in the body; a counter when there is none; a tag that
starts with ``calm-`` never fails), so a run is reproducible whatever the arrival order:

- ``reset``: the connection is aborted, before the headers (JSON, and half the streams) or
  mid-stream after a few events (the other half of the streams);
- ``error``: 500 or 529 (half each) with the provider's error body;
- ``stall``: nothing is sent for ``--stall-seconds``, then the connection is closed;
- ``malformed`` (streams only): a data line that is not JSON in the middle of a stream that
  otherwise completes.

``--stream-bytes N`` pads every stream with content deltas to at least N bytes, written with the
socket's flow control (the fake never buffers more than a transport's high-water mark), for the
slow-reader measurement. Request headers: ``x-fake-chunk-delay-ms`` overrides the chunk delay,
``x-fake-hold-ms`` spreads the stream over that long with keep-alives (pings) between its events.

``GET /_fake/stats`` answers what the fake saw and sent: requests per surface, one record per
request (tag, surface, stream, fault, status, the input/output tokens of the usage it delivered,
request id) and the body bytes written; ``POST /_fake/reset`` clears them.

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
import random
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
STATUS_TEXT = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    529: "Overloaded",
}
OPENAI_PATH = re.compile(
    r"^(?:/client/v4)?/accounts/[^/]+/ai/v1/chat/completions$|^/v1/chat/completions$"
)

_ids = itertools.count(1)
_run = secrets.token_hex(6)  # ids stay unique across restarts (gateways may dedupe on them)
TAG = re.compile(rb"\[req:([A-Za-z0-9_-]{1,64})\]")
FAULTS = ("reset", "error", "stall", "malformed")


class Plan:
    """The fault knobs (rates per fault kind, a seed) and what the fake saw and sent."""

    seed = 1
    rates: dict[str, float] = dict.fromkeys(FAULTS, 0.0)
    stall_seconds = 3.0
    stream_bytes = 0
    untagged = itertools.count(1)
    records: list[dict[str, Any]] = []
    bytes_sent = 0

    @classmethod
    def draw(cls, body: bytes) -> tuple[str, str, float]:
        """(tag, fault, a second uniform number for the fault's variant) for this request."""
        match = TAG.search(body)
        tag = match.group(1).decode() if match else f"untagged-{next(cls.untagged)}"
        if tag.startswith("calm-"):
            return tag, "", 0.0  # a request that must not fail (the open-streams phase)
        rng = random.Random(f"{cls.seed}:{tag}")
        u, variant = rng.random(), rng.random()
        edge = 0.0
        for fault in FAULTS:
            edge += cls.rates[fault]
            if u < edge:
                return tag, fault, variant
        return tag, "", variant

    @classmethod
    def stats(cls) -> dict[str, Any]:
        surfaces: dict[str, int] = {}
        for record in cls.records:
            surfaces[record["surface"]] = surfaces.get(record["surface"], 0) + 1
        return {"requests": surfaces, "records": cls.records, "bytes_sent": cls.bytes_sent}


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


def padding_events(kind: str, model: str, size: int) -> list[bytes]:
    """Content deltas to pad a stream with: ``size`` bytes' worth, in events of about 1 KiB."""
    text = " pad" * 240
    if kind == "oai":
        choice = {"index": 0, "delta": {"content": text}, "finish_reason": None}
        data = {"object": "chat.completion.chunk", "model": model, "choices": [choice]}
        event = b"data: " + _json(data) + b"\n\n"
    else:
        delta = {"type": "content_block_delta", "index": 0,
                 "delta": {"type": "text_delta", "text": text}}  # fmt: skip
        event = b"event: content_block_delta\ndata: " + _json(delta) + b"\n\n"
    return [event] * max(0, size // len(event))


KEEPALIVE = {"oai": b": keep-alive\n\n", "ant": b'event: ping\ndata: {"type": "ping"}\n\n'}
MALFORMED = {
    "oai": b"data: {this is not json\n\n",
    "ant": b"event: content_block_delta\ndata: {this is not json\n\n",
}


class HttpProtocol(asyncio.Protocol):
    """One connection; requests answered in order; reading pauses while a slow answer runs."""

    chunk_delay: float = 0.0

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.delay_header: float | None = None
        self.hold_header: float | None = None
        self.task: asyncio.Task[None] | None = None
        self.writable = asyncio.Event()
        self.writable.set()

    # -- transport callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(
            asyncio.Transport, transport
        )  # uvloop's is no asyncio.Transport subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.writable.set()  # wake a writer waiting for a reader that is gone

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.send_simple(400, {"error": "bad request"}, keep_alive=False)

    # -- parser callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []
        self.delay_header = None
        self.hold_header = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"x-fake-chunk-delay-ms":
            self.delay_header = float(value) / 1000.0
        elif name == b"x-fake-hold-ms":
            self.hold_header = float(value) / 1000.0

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
        elif method == b"GET" and path == "/_fake/stats":
            self.send_simple(200, Plan.stats(), keep_alive)
        elif method == b"POST" and path == "/_fake/reset":
            Plan.records.clear()
            Plan.bytes_sent = 0
            self.send_simple(200, {"ok": True}, keep_alive)
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
        stream = bool(req.get("stream"))
        include = stream and bool((req.get("stream_options") or {}).get("include_usage"))
        if stream:
            events = template(
                ("oai-sse", model, tokens, include), lambda: openai_events(model, tokens, include)
            )
        n = next(_ids)
        extra = [("x-request-id", f"req_oai{_run}{n:08d}")]
        record = self.record(raw, "openai", stream, extra[0][1])
        if record["fault"] == "error":
            status = 529 if record["variant"] < 0.5 else 500
            kind = "overloaded" if status == 529 else "server_error"
            body = {"error": {"message": f"injected {status}", "type": kind, "code": None}}
            record["status"] = status
            self.send_body(status, _json(body), extra, keep_alive)
            return
        if self.fails_before_headers(record):
            return
        if stream:
            # The usage chunk (when asked for) is the last event before [DONE].
            usage_at = len(events) - 2 if include else None
            self.stream(events, extra, keep_alive, n, record, "oai", model, tokens, usage_at)
        else:
            body = template(("oai", model, tokens), lambda: [openai_json(model, tokens)])[0]
            record.update(status=200, input=tokens, output=N_CHUNKS)
            self.send_body(200, body, extra, keep_alive, n)

    def anthropic(self, raw: bytes, keep_alive: bool) -> None:
        req = self.parse_json(raw, keep_alive)
        if req is None:
            return
        model = str(req.get("model", "unknown"))
        tokens = _prompt_tokens(raw)
        n = next(_ids)
        request_id = f"req_bench{_run}{n:08d}"
        extra = [("request-id", request_id), ("anthropic-organization-id", "bench-org")]
        stream = bool(req.get("stream"))
        record = self.record(raw, "anthropic", stream, request_id)
        if record["fault"] == "error":
            status = 529 if record["variant"] < 0.5 else 500
            kind = "overloaded_error" if status == 529 else "api_error"
            body = {"type": "error", "error": {"type": kind, "message": f"injected {status}"},
                    "request_id": request_id}  # fmt: skip
            record["status"] = status
            self.send_body(status, _json(body), extra, keep_alive)
            return
        if self.fails_before_headers(record):
            return
        if stream:
            events = template(("ant-sse", model, tokens), lambda: anthropic_events(model, tokens))
            # message_start (event 0) carries the input tokens and 1 output token, message_delta
            # (third from the end) the final output count.
            self.stream(events, extra, keep_alive, n, record, "ant", model, tokens, None)
        else:
            body = template(("ant", model, tokens), lambda: [anthropic_json(model, tokens)])[0]
            record.update(status=200, input=tokens, output=N_CHUNKS)
            self.send_body(200, body, extra, keep_alive, n)

    def record(self, raw: bytes, surface: str, stream: bool, request_id: str) -> dict[str, Any]:
        tag, fault, variant = Plan.draw(raw)
        if fault == "malformed" and not stream:
            fault = ""  # a JSON answer has no events to spoil
        record = {"tag": tag, "surface": surface, "stream": stream, "fault": fault,
                  "variant": variant, "status": None, "input": 0, "output": 0,
                  "request_id": request_id}  # fmt: skip
        Plan.records.append(record)
        return record

    def fails_before_headers(self, record: dict[str, Any]) -> bool:
        """A stall (silence, then close), or a reset (abort now; for half the streams it comes
        mid-stream instead), before any byte of an answer. True when the answer is that."""
        fault = record["fault"]
        mid_stream_reset = fault == "reset" and record["stream"] and record["variant"] >= 0.5
        if fault not in ("stall", "reset") or mid_stream_reset:
            return False
        if self.transport is None:
            return True
        if fault == "reset":
            self.transport.abort()
            return True
        self.transport.pause_reading()
        self.task = asyncio.get_running_loop().create_task(self.stall())
        return True

    async def stall(self) -> None:
        await asyncio.sleep(Plan.stall_seconds)
        if self.transport is not None:
            self.transport.close()

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
        Plan.bytes_sent += len(body)
        if not keep_alive:
            self.transport.close()

    def stream(
        self,
        events: list[bytes],
        extra: list[tuple[str, str]],
        keep_alive: bool,
        n: int,
        record: dict[str, Any],
        kind: str,
        model: str,
        tokens: int,
        usage_at: int | None,
    ) -> None:
        """Send ``events`` as SSE, with the record's fault, padding and delay applied."""
        if self.transport is None:
            return
        ident = _ident(n)
        parts = [e.replace(ID_MARK, ident) for e in events]
        record["status"] = 200
        cut = None  # events sent before a mid-stream reset
        if record["fault"] == "reset":
            cut = 3 if kind == "ant" else len(parts) // 2
        if record["fault"] == "malformed":
            parts.insert(len(parts) // 2, MALFORMED[kind])
            if usage_at is not None:
                usage_at += 1
        if Plan.stream_bytes:
            pad = padding_events(kind, model, Plan.stream_bytes)
            parts[len(parts) // 2 : len(parts) // 2] = pad
            if usage_at is not None:
                usage_at += len(pad)
        # What the client will have been told about usage once the stream ends (or is cut).
        sent = parts if cut is None else parts[:cut]
        if kind == "ant":
            record["input"], record["output"] = tokens, N_CHUNKS if cut is None else 1
        elif usage_at is not None and usage_at < len(sent):
            record["input"], record["output"] = tokens, N_CHUNKS
        header = head(200, "text/event-stream; charset=utf-8", extra, None)
        delay = self.chunk_delay if self.delay_header is None else self.delay_header
        if self.hold_header:  # pings after the first events spread the stream over the hold time
            delay = delay or 0.25
            pings = [KEEPALIVE[kind]] * max(0, int(self.hold_header / delay) - len(parts))
            parts[3:3] = pings
            if usage_at is not None:
                usage_at += len(pings)
        if delay <= 0 and cut is None and not Plan.stream_bytes:
            data = header + b"".join(chunked(p) for p in parts) + b"0\r\n\r\n"
            self.transport.write(data)
            Plan.bytes_sent += len(data)
            if not keep_alive:
                self.transport.close()
            return
        self.transport.pause_reading()
        self.task = asyncio.get_running_loop().create_task(
            self.drip(header, parts, keep_alive, delay, cut)
        )

    async def drip(
        self, header: bytes, parts: list[bytes], keep_alive: bool, delay: float, cut: int | None
    ) -> None:
        """Write the stream event by event: after a delay, and only while the reader keeps up."""
        transport = self.transport
        if transport is None:
            return
        transport.write(header)
        for i, part in enumerate(parts):
            if cut is not None and i == cut:
                transport.abort()
                return
            if delay > 0 and i:
                await asyncio.sleep(delay)
            await self.writable.wait()
            if self.transport is None:
                return
            data = chunked(part)
            transport.write(data)
            Plan.bytes_sent += len(data)
        transport.write(b"0\r\n\r\n")
        if keep_alive:
            transport.resume_reading()
        else:
            transport.close()


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
    ap.add_argument("--stream-bytes", type=int, default=0, help="pad every stream to N bytes")
    ap.add_argument("--seed", type=int, default=1, help="the faults' seed")
    for fault in FAULTS:
        ap.add_argument(f"--{fault}-rate", type=float, default=0.0, help=f"share of {fault}s")
    ap.add_argument("--stall-seconds", type=float, default=3.0)
    args = ap.parse_args()
    HttpProtocol.chunk_delay = args.chunk_delay_ms / 1000.0
    Plan.seed, Plan.stall_seconds, Plan.stream_bytes = (
        args.seed,
        args.stall_seconds,
        args.stream_bytes,
    )
    Plan.rates = {fault: getattr(args, f"{fault}_rate") for fault in FAULTS}
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
