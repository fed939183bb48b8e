"""Which headers cross the proxy, and what the proxy reads from them on the way.

Headers are an open list: everything passes both ways except the hop-by-hop headers (RFC 9110
§7.6.1, plus any the ``Connection`` header names), ``Host``, and the framing headers the proxy
re-frames (``Content-Length`` of a request it streams, ``Expect`` the ASGI server answered).
``anthropic-beta`` in particular must pass: it carries the OAuth capability of subscription
logins, and those users get a 401 without it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_REQUEST_DROP = HOP_BY_HOP | {b"host", b"content-length", b"expect"}
_CLAUDE_CODE = b"x-claude-code-"
_SESSION_HEADER = b"x-claude-code-session-id"
_UNIFIED_LIMIT = b"anthropic-ratelimit-unified-"
# Attribution headers kept with a usage event: a bound on what a client can make us store.
_MAX_ATTRIBUTION_HEADERS = 16
_MAX_ATTRIBUTION_VALUE = 200


@dataclass(slots=True)
class IncomingHeaders:
    """The request's headers as they go upstream, and what metering reads from them."""

    forward: list[tuple[str, str]]
    content_length: int | None = None
    session_id: str = ""
    # The other x-claude-code-* headers (agent id, request class, …), name without the prefix.
    claude_code: dict[str, str] = field(default_factory=dict)


def _text(value: bytes) -> str:
    # The outbound client writes text back as UTF-8, so a UTF-8 value round-trips byte for byte.
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _connection_tokens(value: bytes) -> set[bytes]:
    return {token.strip().lower() for token in value.split(b",") if token.strip()}


def incoming_headers(raw: Iterable[tuple[bytes, bytes]]) -> IncomingHeaders:
    """Split the ASGI request headers into what goes upstream and what metering keeps."""
    result = IncomingHeaders(forward=[])
    forward = result.forward
    named_by_connection: set[bytes] = set()
    for name, value in raw:
        name = name.lower()  # ASGI servers lowercase already; a cheap guarantee for the rest
        if name in _REQUEST_DROP:
            if name == b"content-length":
                result.content_length = int(value) if value.strip().isdigit() else None
            elif name == b"connection":
                named_by_connection |= _connection_tokens(value)
            continue
        if name.startswith(_CLAUDE_CODE):
            if name == _SESSION_HEADER:
                result.session_id = _text(value)[:_MAX_ATTRIBUTION_VALUE]
            elif len(result.claude_code) < _MAX_ATTRIBUTION_HEADERS:
                key = name[len(_CLAUDE_CODE) :].decode("latin-1")
                result.claude_code[key] = _text(value)[:_MAX_ATTRIBUTION_VALUE]
        forward.append((name.decode("latin-1"), _text(value)))
    if named_by_connection - _REQUEST_DROP:
        extra = {token.decode("latin-1") for token in named_by_connection}
        result.forward = [(n, v) for n, v in forward if n not in extra]
    return result


@dataclass(slots=True)
class OutgoingHeaders:
    """The upstream response's headers as they go to the client."""

    relay: list[tuple[bytes, bytes]]
    content_length: int | None = None
    content_type: bytes = b""
    content_encoding: bytes = b""
    # anthropic-ratelimit-unified-* values (name without the prefix): a subscription's
    # 5-hour and weekly utilisation, kept per machine.
    unified_limits: dict[str, str] = field(default_factory=dict)


def outgoing_headers(raw: Iterable[tuple[bytes, bytes]]) -> OutgoingHeaders:
    """The response headers less hop-by-hop ones; everything else passes as it came."""
    result = OutgoingHeaders(relay=[])
    relay = result.relay
    named_by_connection: set[bytes] = set()
    for name, value in raw:
        name = name.lower()
        if name in HOP_BY_HOP:
            if name == b"connection":
                named_by_connection |= _connection_tokens(value)
            continue
        if name == b"content-length":
            result.content_length = int(value) if value.strip().isdigit() else None
        elif name == b"content-type":
            result.content_type = value
        elif name == b"content-encoding":
            result.content_encoding = value.strip().lower()
        elif name.startswith(_UNIFIED_LIMIT):
            result.unified_limits[name[len(_UNIFIED_LIMIT) :].decode("latin-1")] = _text(value)
        relay.append((name, value))
    if named_by_connection - HOP_BY_HOP:
        result.relay = [(n, v) for n, v in relay if n not in named_by_connection]
    return result
