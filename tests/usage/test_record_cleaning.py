"""Whatever a client or an upstream puts in a usage record, the cleaned record fits its columns
and the database takes it: text cut to size without NUL bytes or lone surrogates, counts and
statuses in range, ``details`` bounded in depth and size."""

from __future__ import annotations

import copy
import json
import math
from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from catalog.pricing import PriceRow, PriceTable, Rates
from usage.models import UsageEvent
from usage.records import (
    BIGINT_MAX,
    DETAILS_MAX_CHARS,
    DETAILS_MAX_DEPTH,
    UsageRecord,
    clean_details,
    dedupe_key,
    line_values,
    record_line,
    usage_record_clean,
)
from usage.writer import UsageWriter, _line, record_cost

# Every code point, surrogates and NUL included (Hypothesis leaves surrogates out by default).
hostile_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=400) | st.just(
    "a\x00b"
)
hostile_numbers = (
    st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.none()
    | st.text(max_size=5)
)
json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=True, allow_infinity=True)
    | hostile_text
    | st.binary(max_size=50),
    lambda children: (
        st.lists(children, max_size=8)
        | st.dictionaries(hostile_text | st.integers(), children, max_size=8)
    ),
    max_leaves=60,
)
records = st.builds(
    UsageRecord,
    account_id=st.just(0),
    source=st.sampled_from(["gateway", "proxy"]),
    model=hostile_text,
    input_tokens=hostile_numbers,
    output_tokens=hostile_numbers,
    cache_creation_input_tokens=hostile_numbers,
    cache_read_input_tokens=hostile_numbers,
    estimated=hostile_numbers,
    status_code=hostile_numbers,
    stop_reason=hostile_text,
    latency_ms=hostile_numbers,
    ttfb_ms=hostile_numbers,
    request_id=hostile_text,
    message_id=hostile_text,
    session_id=hostile_text | st.just("s" * 300),
    event_id=hostile_text,
    details=json_like,
)


# Records the surfaces could make: every field of its type and size, so that only the line's own
# checks (NUL, lone surrogates, numbers orjson refuses, details' size and depth) stand between
# them and the fast path.
def _sized(limit: int) -> st.SearchStrategy[str]:
    return hostile_text.map(lambda text: text[:limit])


counts = st.integers(min_value=0, max_value=BIGINT_MAX)
durations = st.none() | st.floats(min_value=0, max_value=1e12)
typed_records = st.builds(
    UsageRecord,
    account_id=st.just(1),
    source=st.sampled_from(["gateway", "proxy", "sync"]),
    model=st.sampled_from(["cf-gpt-oss-20b", "claude-sonnet-4-5", "unknown"]) | _sized(200),
    input_tokens=counts,
    output_tokens=counts,
    cache_creation_input_tokens=counts,
    cache_read_input_tokens=counts,
    estimated=st.booleans(),
    status_code=st.none() | st.integers(min_value=0, max_value=32767),
    stop_reason=_sized(64),
    latency_ms=durations,
    ttfb_ms=durations,
    api_key_id=st.none() | st.integers(min_value=1, max_value=BIGINT_MAX),
    request_id=_sized(200),
    message_id=_sized(200),
    session_id=_sized(200),
    event_id=_sized(64),
    details=json_like
    | st.just({"stream": True, "cache_creation": {"ephemeral_1h_input_tokens": 5}}),
)
prices = PriceTable(
    [
        PriceRow(
            pattern=pattern,
            effective_from=datetime(2020, 1, 1).date(),
            rates=Rates(*(Decimal(n) for n in ("0.2", "0.3", "1.25", "2", "0.1"))),
        )
        for pattern in ("cf-gpt-oss-20b", "claude-*")
    ]
)


@given(typed_records)
@example(UsageRecord(1, "proxy", details={"a": {"b": {"c": {"d": {"e": 1}}}}}))  # too deep
@example(UsageRecord(1, "proxy", details={"big": "x" * DETAILS_MAX_CHARS}))  # too big
@settings(max_examples=400, deadline=None)
def test_the_writers_line_is_the_cleaned_records_line(record: UsageRecord) -> None:
    # The writer skips cleaning when a record needs none (its fields' types and sizes, then its
    # line's own checks): what it writes must be what cleaning first would have written.
    cleaned = usage_record_clean(copy.deepcopy(record))
    expected = record_line(
        cleaned,
        cost=record_cost(cleaned, prices),
        dedupe_key=dedupe_key(
            source=cleaned.source,
            request_id=cleaned.request_id,
            message_id=cleaned.message_id,
            event_id=cleaned.event_id,
        ),
        cleaned=True,
    )

    line, cost = _line(record, prices)

    assert line_values(line) == line_values(expected)
    assert cost == record_cost(cleaned, prices)


def depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def fits(text: str, limit: int) -> bool:
    return len(text) <= limit and "\x00" not in text and text.encode("utf-8") is not None


def strings(value: object) -> list[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for k, v in value.items() for text in [*strings(k), *strings(v)]]
    if isinstance(value, list):
        return [text for item in value for text in strings(item)]
    return []


@given(records)
@settings(max_examples=300, deadline=None)
def test_every_cleaned_field_fits_its_column(record: UsageRecord) -> None:
    usage_record_clean(record)

    for name in ("model", "stop_reason", "request_id", "message_id", "session_id"):
        assert fits(getattr(record, name), UsageEvent._meta.get_field(name).max_length)
    for name in ("input_tokens", "output_tokens", "cache_read_input_tokens"):
        assert 0 <= getattr(record, name) <= BIGINT_MAX
    assert record.status_code is None or 0 <= record.status_code <= 32767
    for timing in (record.latency_ms, record.ttfb_ms):
        assert timing is None or (math.isfinite(timing) and timing >= 0)
    assert isinstance(record.estimated, bool)
    assert isinstance(record.occurred_at, datetime) and record.occurred_at.tzinfo is not None
    raw = json.dumps(record.details, allow_nan=False)  # no NaN: jsonb refuses it
    assert not any("\x00" in text for text in strings(record.details))  # keys included
    raw.encode("utf-8")  # no lone surrogate left
    assert len(raw) <= DETAILS_MAX_CHARS + 64
    assert depth(record.details) <= DETAILS_MAX_DEPTH


def test_details_beyond_the_bounds_are_cut_and_marked() -> None:
    deep: dict = {"leaf": 1}
    for _ in range(20):
        deep = {"down": deep}
    huge = {f"k{n}": "x" * 900 for n in range(200)}

    assert clean_details(deep)["truncated"] is True
    assert depth(clean_details(deep)) <= DETAILS_MAX_DEPTH
    cut = clean_details(huge)
    assert cut["truncated"] is True
    assert len(json.dumps(cut)) <= DETAILS_MAX_CHARS + 64
    assert clean_details({"stream": True, "n": 3}) == {"stream": True, "n": 3}


@pytest.mark.django_db(transaction=True)
@given(st.lists(records, min_size=1, max_size=5))
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_database_takes_every_cleaned_record(member, batch: list[UsageRecord]) -> None:
    writer = UsageWriter()
    for record in batch:
        record.account_id = member.account.id
        writer.record(record)

    written = writer.flush()

    assert written == len(batch)
    assert not writer.spill.rejected_path.exists()
    UsageEvent.objects.all().delete()
