"""Metering of ``/v1/messages`` from a copy of the response, read as it passes.

The proxy forwards every chunk first and only then hands the same bytes to ``MessagesMeter.feed``;
nothing here can hold a byte back. The meter decodes a private copy when the upstream compressed
the body (the client still gets the compressed bytes), and reads:

- SSE: ``message_start.message.usage``, then every non-null field of each ``message_delta.usage``
  *replaces* the value so far (the counts are cumulative: summing the frames double-counts);
- JSON: the message's ``usage`` (or an error body's ``error.type``).

Only the few events that carry usage are parsed as JSON; content deltas and pings are skipped by
their ``event:`` line, which keeps the per-chunk cost to a ``find`` and a ``startswith``.
"""

from __future__ import annotations

import json
import re
import zlib
from typing import Any

from hepgg.lib.sse import SSEDecoder
from hepgg.lib.tokencount import storable_count

# A runaway non-SSE body is not kept whole just to be metered (Messages responses are far smaller).
MAX_JSON_COPY = 16 * 1024 * 1024
_USAGE_EVENTS = frozenset({b"message_start", b"message_delta", b"error"})
_USAGE_EVENT_NAMES = frozenset(name.decode() for name in _USAGE_EVENTS)


def _inflater(encoding: bytes) -> Any:
    """A decompressor for the copy, None for identity; raises ValueError for unknown codings."""
    if encoding in (b"", b"identity"):
        return None
    if encoding in (b"gzip", b"x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == b"deflate":
        return _Deflate()
    try:  # brotli is optional (aiohttp's speedups extra); without it a br body goes unmetered
        import brotli  # type: ignore[import-not-found]
    except ImportError:
        brotli = None
    if encoding == b"br" and brotli is not None:
        return brotli.Decompressor()
    raise ValueError(f"cannot meter a body with Content-Encoding {encoding!r}")


class _Deflate:
    """HTTP "deflate" is zlib-wrapped by the spec but raw deflate in the wild: accept both."""

    def __init__(self) -> None:
        self._inner: Any = None

    def decompress(self, data: bytes) -> bytes:
        if self._inner is None:
            wbits = zlib.MAX_WBITS if data[:1] and (data[0] & 0x0F) == 8 else -zlib.MAX_WBITS
            self._inner = zlib.decompressobj(wbits)
        return self._inner.decompress(data)


class MessagesMeter:
    """Usage of one ``/v1/messages`` response, accumulated from copies of its chunks."""

    def __init__(self, *, content_type: bytes, content_encoding: bytes) -> None:
        self.streaming = content_type.split(b";", 1)[0].strip().lower() == b"text/event-stream"
        self.usage: dict[str, Any] = {}
        self.model = ""
        self.message_id = ""
        self.stop_reason = ""
        self.error_type = ""  # an error event in the stream, or an error body
        self.unreadable = ""  # why the copy could not be read, if it could not
        self._json_parts: list[bytes] = []
        self._json_size = 0
        self._tail = b""
        self._slow: SSEDecoder | None = None
        try:
            self._inflate = _inflater(content_encoding)
        except ValueError as exc:
            self._inflate, self.unreadable = None, str(exc)

    # -- feeding ------------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        """Read a copy of ``chunk``. Never raises: a copy we cannot read only loses metering."""
        if self.unreadable:
            return
        try:
            if self._inflate is not None:
                chunk = self._inflate.decompress(chunk)
            if self.streaming:
                self._feed_sse(chunk)
            elif self._json_size + len(chunk) <= MAX_JSON_COPY:
                self._json_parts.append(chunk)
                self._json_size += len(chunk)
            else:
                self.unreadable = "body too large to meter"
                self._json_parts = []
        except Exception as exc:  # a corrupt compressed stream, say
            self.unreadable = f"unreadable body copy: {type(exc).__name__}"

    def finish(self) -> None:
        """The body ended (or was cut): read whatever is complete."""
        if self.unreadable:
            return
        try:
            if self.streaming:
                if self._slow is not None:
                    for event in self._slow.close():
                        self._sse_event(event.event, event.data.encode())
                elif self._tail.strip():
                    self._sse_block(self._tail)
                    self._tail = b""
            elif self._json_parts:
                self._json_body(json.loads(b"".join(self._json_parts)))
                self._json_parts = []
        except Exception as exc:
            self.unreadable = f"unreadable body copy: {type(exc).__name__}"

    # -- SSE ----------------------------------------------------------------------------------
    def _feed_sse(self, data: bytes) -> None:
        if self._slow is None and b"\r" in data:
            # Anthropic frames events with \n; anything else goes through the full parser.
            self._slow, data, self._tail = SSEDecoder(), self._tail + data, b""
        if self._slow is not None:
            for event in self._slow.feed(data):
                self._sse_event(event.event, event.data.encode())
            return
        buffer = self._tail + data if self._tail else data
        start = 0
        while (end := buffer.find(b"\n\n", start)) != -1:
            self._sse_block(buffer[start:end])
            start = end + 2
        self._tail = buffer[start:]
        if len(self._tail) > MAX_JSON_COPY:  # no event is this large: stop rather than grow
            self.unreadable, self._tail = "SSE event too large to meter", b""

    def _sse_block(self, block: bytes) -> None:
        block = block.lstrip(b"\n")
        name = b""
        if block.startswith(b"event:"):
            line_end = block.find(b"\n")
            name = (block[6:] if line_end == -1 else block[6:line_end]).strip()
            if name not in _USAGE_EVENTS:
                return  # content deltas, pings, block boundaries: nothing to meter
        data = [line[5:].removeprefix(b" ") for line in block.split(b"\n") if line[:5] == b"data:"]
        if data:
            self._sse_event(name.decode("latin-1"), b"\n".join(data))

    def _sse_event(self, name: str, data: bytes) -> None:
        if name and name not in _USAGE_EVENT_NAMES:
            return
        payload = json.loads(data)
        if not isinstance(payload, dict):
            return
        kind = payload.get("type") or name
        if kind == "message_start":
            self._message(payload.get("message") or {})
        elif kind == "message_delta":
            delta = payload.get("delta") or {}
            if delta.get("stop_reason"):
                self.stop_reason = str(delta["stop_reason"])
            self._merge_usage(payload.get("usage"))
        elif kind == "error":
            self.error_type = str((payload.get("error") or {}).get("type") or "error")

    # -- JSON ---------------------------------------------------------------------------------
    def _json_body(self, body: Any) -> None:
        if not isinstance(body, dict):
            return
        if body.get("type") == "error":
            self.error_type = str((body.get("error") or {}).get("type") or "error")
            return
        self._message(body)
        if body.get("stop_reason"):
            self.stop_reason = str(body["stop_reason"])

    # -- shared -------------------------------------------------------------------------------
    def _message(self, message: dict[str, Any]) -> None:
        self.model = str(message.get("model") or self.model)
        self.message_id = str(message.get("id") or self.message_id)
        usage = message.get("usage")
        if isinstance(usage, dict):
            self.usage = dict(usage)

    def _merge_usage(self, usage: Any) -> None:
        # Cumulative counts: each non-null field replaces the value so far.
        if isinstance(usage, dict):
            for key, value in usage.items():
                if value is not None:
                    self.usage[key] = value

    # -- results ------------------------------------------------------------------------------
    def tokens(self, field: str) -> int:
        return storable_count(self.usage.get(field))

    @property
    def cache_creation_split(self) -> dict[str, int] | None:
        """The 5-minute / 1-hour split of cache writes, when the upstream reports it."""
        split = self.usage.get("cache_creation")
        if isinstance(split, dict):
            return {k: storable_count(v) for k, v in split.items()}
        return None


# -- attribution read from the request body ---------------------------------------------------
_SEPARATOR = re.compile(rb"\s*:\s*")
_LEGACY_SESSION = re.compile(r"_session_([0-9A-Za-z-]+)$")
_decoder = json.JSONDecoder()
_MAX_METADATA = 64 * 1024


def metadata_user_id(body: bytes) -> str | None:
    """``metadata.user_id`` of a Messages request body, without parsing the whole body.

    A request can be tens of MiB of JSON; parsing all of it on the event loop to read one field
    would stall every other stream. ``"metadata"`` with unescaped quotes can only be an object
    key, and Claude Code writes the top-level one after the messages and tools, so the search
    runs backwards and takes the first ``metadata`` object holding a string ``user_id``.
    """
    end = len(body)
    for _ in range(16):
        at = body.rfind(b'"metadata"', 0, end)
        if at == -1:
            return None
        end = at
        separator = _SEPARATOR.match(body, at + 10)
        if separator is None:
            continue
        start = separator.end()
        if body[start : start + 1] != b"{":
            continue
        try:
            value, _ = _decoder.raw_decode(
                body[start : start + _MAX_METADATA].decode("utf-8", errors="replace")
            )
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("user_id"), str):
            return value["user_id"]
    return None


def session_from_user_id(user_id: str) -> str:
    """The Claude Code session in ``metadata.user_id``: a JSON string since Claude Code 2.1.78
    (``{"device_id": …, "account_uuid": …, "session_id": …}``), ``user_…_session_<uuid>`` before."""
    text = user_id.strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            return ""
        session = parsed.get("session_id") if isinstance(parsed, dict) else None
        return session if isinstance(session, str) else ""
    match = _LEGACY_SESSION.search(text)
    return match.group(1) if match else ""


def request_model(body: bytes) -> str:
    """The request's ``model``, for events the response does not name one (errors, cut streams).

    Claude Code and the SDKs write ``model`` first, so the first ``"model"`` key is the top one.
    """
    at = body.find(b'"model"', 0, 4096)
    if at == -1:
        return ""
    separator = _SEPARATOR.match(body, at + 7)
    if separator is None or body[separator.end() : separator.end() + 1] != b'"':
        return ""
    try:
        value, _ = _decoder.raw_decode(body[separator.end() : separator.end() + 512].decode())
    except ValueError:
        return ""
    return value if isinstance(value, str) else ""
