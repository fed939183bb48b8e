"""Property tests (Hypothesis) for the stream parsers we own: ``hepgg.lib.sse.SSEDecoder`` and
``proxy.metering.MessagesMeter``. Any chunking of a stream reads the same; garbage never raises."""

from __future__ import annotations

import gzip
import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hepgg.lib.sse import ServerSentEvent, SSEDecoder
from proxy.metering import MessagesMeter

PROPERTIES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Field values: any text without line breaks (SSE cannot carry them inside a field).
_value = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=40
)
_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20)


@st.composite
def _events(draw: st.DrawFn) -> list[ServerSentEvent]:
    events = []
    for _ in range(draw(st.integers(0, 6))):
        lines = draw(st.lists(_value, min_size=1, max_size=3))
        events.append(ServerSentEvent(draw(_name), "\n".join(lines), None))
    return events


def _encode(events: list[ServerSentEvent], newline: str) -> bytes:
    out = []
    for event in events:
        out.append(f"event: {event.event}{newline}")
        out.extend(f"data: {line}{newline}" for line in event.data.split("\n"))
        out.append(newline)
    return "".join(out).encode()


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return pieces


@PROPERTIES
@given(_events(), st.sampled_from(["\n", "\r\n", "\r"]), st.lists(st.integers(0, 10**6)))
def test_any_chunking_of_an_sse_stream_decodes_to_the_same_events(
    events: list[ServerSentEvent], newline: str, cuts: list[int]
) -> None:
    data = _encode(events, newline)
    decoder = SSEDecoder()
    decoded = [e for chunk in _chunks(data, cuts) for e in decoder.feed(chunk)]
    decoded += decoder.close()
    assert decoded == events


@PROPERTIES
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_the_sse_decoder_never_raises_and_never_grows_past_its_bound(chunks: list[bytes]) -> None:
    decoder = SSEDecoder(max_buffer=256)
    for chunk in chunks:
        decoder.feed(chunk)
        assert len(decoder._buffer) <= 256 + len(chunk)
    decoder.close()


# -- the Messages meter ------------------------------------------------------------------------
_count = st.integers(0, 2**31)


@st.composite
def _messages_stream(draw: st.DrawFn) -> tuple[bytes, dict[str, int]]:
    start_usage = {
        "input_tokens": draw(_count),
        "cache_creation_input_tokens": draw(_count),
        "cache_read_input_tokens": draw(_count),
        "output_tokens": 1,
    }
    final_output = draw(_count)
    texts = draw(st.lists(st.text(max_size=30), max_size=5))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    events: list[tuple[str, dict]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {"id": "msg_1", "model": "claude-x", "usage": start_usage},
            },
        ),
        ("content_block_start", {"type": "content_block_start", "index": 0}),
    ]
    for text in texts:
        events.append(("ping", {"type": "ping"}))
        events.append(
            (
                "content_block_delta",
                {"type": "content_block_delta", "delta": {"type": "text_delta", "text": text}},
            )
        )
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": final_output, "input_tokens": None},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    body = "".join(
        f"event: {name}{newline}data: {json.dumps(payload)}{newline}{newline}"
        for name, payload in events
    ).encode()
    return body, {**start_usage, "output_tokens": final_output}


def _meter(
    chunks: list[bytes], *, encoding: bytes = b"", content_type: bytes = b"text/event-stream"
) -> MessagesMeter:
    meter = MessagesMeter(content_type=content_type, content_encoding=encoding)
    for chunk in chunks:
        meter.feed(chunk)
    meter.finish()
    return meter


@PROPERTIES
@given(_messages_stream(), st.lists(st.integers(0, 10**6), max_size=30))
def test_any_chunking_of_a_messages_stream_meters_the_same_usage(
    stream: tuple[bytes, dict[str, int]], cuts: list[int]
) -> None:
    body, expected = stream
    meter = _meter(_chunks(body, cuts))
    assert not meter.unreadable
    for field, value in expected.items():
        assert meter.tokens(field) == value
    assert meter.model == "claude-x" and meter.stop_reason == "end_turn"


@PROPERTIES
@given(_messages_stream(), st.lists(st.integers(0, 10**6), max_size=10))
def test_a_gzipped_messages_stream_meters_the_same_in_any_chunking(
    stream: tuple[bytes, dict[str, int]], cuts: list[int]
) -> None:
    body, expected = stream
    meter = _meter(_chunks(gzip.compress(body), cuts), encoding=b"gzip")
    for field, value in expected.items():
        assert meter.tokens(field) == value


@PROPERTIES
@given(
    st.sampled_from([b"text/event-stream", b"application/json"]),
    st.sampled_from([b"", b"gzip", b"deflate", b"br", b"zstd"]),
    st.lists(st.binary(max_size=300), max_size=20),
)
@example(b"application/json", b"", [b'{"usage": {"input_tokens": 1e400}}'])
@example(b"application/json", b"", [b'{"usage": {"input_tokens": 99999999999999999999999}}'])
@example(b"application/json", b"", [b'{"usage": {"input_tokens": true}}'])
def test_the_meter_never_raises_on_garbage_and_counts_only_storable_tokens(
    content_type: bytes, encoding: bytes, chunks: list[bytes]
) -> None:
    meter = _meter(chunks, encoding=encoding, content_type=content_type)
    for field in ("input_tokens", "output_tokens", "cache_read_input_tokens"):
        value = meter.tokens(field)
        assert type(value) is int and 0 <= value < 2**63  # fits usage's BigIntegerField


@PROPERTIES
@given(st.dictionaries(st.sampled_from(["input_tokens", "output_tokens"]), st.integers()))
def test_the_meter_keeps_only_counts_the_database_can_store(usage: dict[str, int]) -> None:
    body = json.dumps({"type": "message", "id": "m", "model": "c", "usage": usage}).encode()
    meter = MessagesMeter(content_type=b"application/json", content_encoding=b"")
    meter.feed(body)
    meter.finish()
    for field, value in usage.items():
        assert meter.tokens(field) == (value if 0 <= value < 2**63 else 0)


@PROPERTIES
@given(
    st.one_of(
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.none(),
        st.text(max_size=30),
    )
)
@example(float("inf"))
@example(10**30)
def test_the_gateway_tally_never_raises_on_odd_upstream_counts(value: object) -> None:
    from accounts.credentials import ApiKeyIdentity
    from llm_gateway.metering import Tally

    identity = ApiKeyIdentity(1, "k", 1, 1, "m", None, None, None)
    tally = Tally(identity=identity, request={}, stream=False, started=0.0)
    tally.take_completion({"usage": {"prompt_tokens": value, "completion_tokens": value}})
    counts = tally.reported()
    assert counts is not None
    for count in (counts.input_tokens, counts.output_tokens, counts.cache_read_input_tokens):
        assert type(count) is int and 0 <= count < 2**63
