"""The usage writer's process (``usage.writer_process``): a real child process, on the test
database. What it writes is what the server would have written itself, every batch is written
once whatever happens to the child, and it ends with its server."""

from __future__ import annotations

import asyncio
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction

from catalog.models import Price
from catalog.pricing import price_table
from tests.waits import backend_waiting_on_a_lock, wait_until
from usage.models import UsageEvent
from usage.writer import UsageRecord, UsageWriter

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("requires_postgres")]

COMPARED = (
    "source", "model", "api_key_id", "machine_id", "occurred_at", "input_tokens",
    "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "estimated",
    "cost_usd", "status_code", "stop_reason", "latency_ms", "ttfb_ms", "request_id",
    "message_id", "session_id", "details",
)  # fmt: skip


@pytest.fixture
def writer(settings) -> Any:
    settings.USAGE_WRITER_PROCESS = True
    writer = UsageWriter()
    yield writer
    writer.stop_process()


def flush(writer: UsageWriter) -> int:
    return asyncio.run(writer.aflush())


def records(member, tag: str) -> list[UsageRecord]:
    """Plain records and records that need cleaning, the kinds a server makes."""
    account = member.account.id
    when = datetime(2026, 11, 2, 10, 30, 15, 123456, tzinfo=UTC)
    return [
        UsageRecord(
            account, "gateway", "cf-gpt-oss-20b", occurred_at=when, input_tokens=1000,
            output_tokens=500, status_code=200, stop_reason="stop", latency_ms=12.5,
            ttfb_ms=3.25, message_id="chatcmpl-1", event_id=f"req_{tag}1",
            details={"stream": True, "nested": {"list": [1, 2.5, None]}},
        ),
        UsageRecord(  # NUL bytes, a model name too long, negative and oversized counts
            account, "proxy", "claude-\x00" + "x" * 300, occurred_at=when, input_tokens=-5,
            output_tokens=2**63 + 5, cache_read_input_tokens=7, session_id="s\x00" * 150,
            event_id=f"req_{tag}2", details={"text": "y" * 5000},
        ),
        UsageRecord(  # naive time, no status, a float that is not finite
            account, "gateway", "unpriced-model", occurred_at=datetime(2026, 11, 3, 8),
            input_tokens=3, latency_ms=float("inf"), event_id=f"req_{tag}3",
        ),
    ]  # fmt: skip


def rows(tag: str) -> list[tuple[Any, ...]]:
    events = UsageEvent.objects.filter(dedupe_key__startswith=f"ev:req_{tag}")
    return [
        tuple(event[name] for name in COMPARED)
        for event in events.order_by("dedupe_key").values(*COMPARED)
    ]


def test_the_writer_process_writes_what_the_server_would_have_written(
    writer, member, catalog_model, prices
) -> None:
    Price.objects.filter(pattern="cf-gpt-oss-20b").update(input=Decimal(2), output=Decimal(4))
    for record in records(member, "child"):
        writer.record(record)
    assert flush(writer) == 3
    assert writer._process is not None and writer._process.pid is not None  # it wrote them

    here = UsageWriter()  # the same records written by this process itself
    for record in records(member, "here"):
        here.record(record)
    assert here.flush() == 3

    assert rows("child") == rows("here")
    assert rows("child")[0][COMPARED.index("cost_usd")] == Decimal("0.004")


def test_a_record_json_cannot_hold_is_cleaned_here_and_its_batch_still_handed_over(
    writer, member, prices
) -> None:
    price_table()  # loaded, as in a server that has served a request
    writer.record(UsageRecord(member.account.id, "gateway", details={1: "an int key"}))
    writer.record(UsageRecord(member.account.id, "gateway", input_tokens=5))
    assert flush(writer) == 2
    assert writer._process.pid is not None
    events = UsageEvent.objects.order_by("input_tokens")
    assert [e.input_tokens for e in events] == [0, 5]
    assert events[0].details == {"1": "an int key"}


def test_a_batch_whose_writer_process_dies_before_answering_is_written_here_once(
    writer, member, monkeypatch
) -> None:
    monkeypatch.setattr("usage.writer_process._RESTART_SECONDS", 0.0)
    writer.record(UsageRecord(member.account.id, "gateway", event_id="req_a"))
    assert flush(writer) == 1
    first = writer._process.pid
    assert first is not None

    writer.record(UsageRecord(member.account.id, "gateway", event_id="req_b"))
    writer.record(UsageRecord(member.account.id, "gateway", event_id="req_c"))
    with ThreadPoolExecutor(1) as pool:
        with transaction.atomic():  # inserts wait: the writer process is mid-batch
            with connection.cursor() as cursor:
                cursor.execute("LOCK TABLE usage_usageevent IN SHARE MODE")
            flushed = pool.submit(flush, writer)
            wait_until(backend_waiting_on_a_lock, what="the writer process's insert to wait")
            os.kill(first, signal.SIGKILL)
            wait_until(lambda: writer._process.pid is None, what="the writer process to be gone")
        assert flushed.result(timeout=30) == 2  # written by this process, once

    writer.record(UsageRecord(member.account.id, "gateway", event_id="req_d"))
    assert flush(writer) == 1
    assert writer._process.pid not in (None, first)  # a new writer process wrote this one
    keys = sorted(UsageEvent.objects.values_list("dedupe_key", flat=True))
    assert keys == ["ev:req_a", "ev:req_b", "ev:req_c", "ev:req_d"]


def test_the_writer_process_ends_when_its_server_closes_its_input(writer, member) -> None:
    writer.record(UsageRecord(member.account.id, "gateway"))
    flush(writer)
    process = writer._process._process
    writer.stop_process()
    assert process.returncode == 0
    assert writer._process.pid is None
