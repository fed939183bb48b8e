"""The meter reads a copy of a /v1/messages response, however the bytes are split."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest

from proxy.metering import MessagesMeter, metadata_user_id, request_model, session_from_user_id
from tests.proxy.conftest import (
    CACHE_READ,
    CACHE_SPLIT,
    CACHE_WRITE,
    INPUT,
    MODEL,
    OUTPUT,
    message_events,
    message_json,
)

SSE = b"".join(message_events("msg_1"))


def meter_for(chunks: list[bytes], *, content_type: bytes, encoding: bytes = b"") -> MessagesMeter:
    meter = MessagesMeter(content_type=content_type, content_encoding=encoding)
    for chunk in chunks:
        meter.feed(chunk)
    meter.finish()
    return meter


def assert_complete(meter: MessagesMeter) -> None:
    assert meter.unreadable == ""
    assert (meter.model, meter.message_id, meter.stop_reason) == (MODEL, "msg_1", "end_turn")
    assert meter.tokens("input_tokens") == INPUT
    assert meter.tokens("output_tokens") == OUTPUT
    assert meter.tokens("cache_creation_input_tokens") == CACHE_WRITE
    assert meter.tokens("cache_read_input_tokens") == CACHE_READ
    assert meter.cache_creation_split == CACHE_SPLIT


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000])
def test_it_meters_a_stream_split_into_chunks_of_any_size(size: int) -> None:
    chunks = [SSE[i : i + size] for i in range(0, len(SSE), size)]
    assert_complete(meter_for(chunks, content_type=b"text/event-stream; charset=utf-8"))


def test_it_takes_the_cumulative_counts_of_message_delta_rather_than_summing_them() -> None:
    # message_delta repeats input_tokens (cumulative): summing would count INPUT twice.
    meter = meter_for([SSE], content_type=b"text/event-stream")
    assert meter.tokens("input_tokens") == INPUT
    assert meter.tokens("output_tokens") == OUTPUT


def test_null_fields_of_message_delta_keep_the_earlier_value() -> None:
    events = message_events("msg_1")
    start = events[0]
    delta = b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":9,"input_tokens":null}}\n\n'  # noqa: E501
    meter = meter_for([start, delta], content_type=b"text/event-stream")
    assert (meter.tokens("input_tokens"), meter.tokens("output_tokens")) == (INPUT, 9)
    assert meter.stop_reason == "max_tokens"


def test_it_meters_a_stream_framed_with_crlf() -> None:
    crlf = SSE.replace(b"\n", b"\r\n")
    assert_complete(
        meter_for(
            [crlf[i : i + 5] for i in range(0, len(crlf), 5)], content_type=b"text/event-stream"
        )
    )


def test_a_cut_stream_keeps_what_message_start_reported() -> None:
    first_three = b"".join(message_events("msg_1")[:3])
    meter = meter_for([first_three], content_type=b"text/event-stream")
    assert (meter.tokens("input_tokens"), meter.tokens("output_tokens")) == (INPUT, 1)
    assert meter.stop_reason == ""


def test_it_meters_a_json_message() -> None:
    body = json.dumps(message_json("msg_1")).encode()
    assert_complete(meter_for([body[:10], body[10:]], content_type=b"application/json"))


def test_it_meters_a_gzip_copy_of_a_json_message() -> None:
    body = gzip.compress(json.dumps(message_json("msg_1")).encode())
    chunks = [body[i : i + 16] for i in range(0, len(body), 16)]
    assert_complete(meter_for(chunks, content_type=b"application/json", encoding=b"gzip"))


def test_it_meters_a_gzip_stream() -> None:
    compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    chunks = [
        compressor.compress(e) + compressor.flush(zlib.Z_SYNC_FLUSH)
        for e in message_events("msg_1")
    ]
    chunks.append(compressor.flush())
    assert_complete(meter_for(chunks, content_type=b"text/event-stream", encoding=b"gzip"))


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS])
def test_it_meters_deflate_whether_zlib_wrapped_or_raw(wbits: int) -> None:
    compressor = zlib.compressobj(wbits=wbits)
    body = compressor.compress(json.dumps(message_json("msg_1")).encode()) + compressor.flush()
    assert_complete(meter_for([body], content_type=b"application/json", encoding=b"deflate"))


def test_an_unknown_encoding_leaves_the_event_unmetered_instead_of_failing() -> None:
    meter = meter_for(
        [b"\x28\xb5\x2f\xfd garbage"], content_type=b"application/json", encoding=b"zstd"
    )
    assert "zstd" in meter.unreadable
    assert meter.tokens("input_tokens") == 0


def test_a_corrupt_copy_never_raises() -> None:
    meter = meter_for([b"not gzip at all"], content_type=b"application/json", encoding=b"gzip")
    assert meter.unreadable


def test_it_reads_the_error_type_of_an_error_body_and_of_an_error_event() -> None:
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    assert meter_for([body], content_type=b"application/json").error_type == "overloaded_error"
    event = b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"x"}}\n\n'
    assert meter_for([event], content_type=b"text/event-stream").error_type == "api_error"


SESSION = "3f2b8c1e-7a4d-4e0f-9b6a-1c2d3e4f5a6b"


@pytest.mark.parametrize(
    "user_id",
    [
        json.dumps({"device_id": "d" * 64, "account_uuid": "a-b", "session_id": SESSION}),
        f"user_{'e' * 64}_account_0b1c2d3e-0000-4000-8000-000000000000_session_{SESSION}",
    ],
    ids=["json-string-since-2.1.78", "legacy"],
)
def test_it_reads_the_session_from_either_form_of_metadata_user_id(user_id: str) -> None:
    body = json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": 'a "metadata": {"user_id": "decoy"}'}],
            "tools": [
                {"name": "t", "input_schema": {"properties": {"metadata": {"type": "object"}}}}
            ],
            "metadata": {"user_id": user_id},
            "max_tokens": 10,
        }
    ).encode()
    found = metadata_user_id(body)
    assert found == user_id
    assert session_from_user_id(found) == SESSION


def test_a_body_without_metadata_has_no_session() -> None:
    assert metadata_user_id(b'{"model":"m","messages":[]}') is None
    assert session_from_user_id("user_abc") == ""


def test_it_reads_the_requested_model_from_the_start_of_the_body() -> None:
    assert request_model(b'{"model": "claude-opus-4-1", "messages": []}') == "claude-opus-4-1"
    assert request_model(b'{"messages": []}') == ""
