"""The batched usage writer: nothing lost, one write per batch, last-used at most once a minute."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.services import api_key_mint, machine_register
from catalog.models import Price
from catalog.pricing import forget_prices, price_table
from hepgg.lib.batching import close_writer_connections, in_writer_thread
from tests.waits import wait_until
from usage.models import UsageEvent
from usage.writer import UsageRecord, UsageWriter

pytestmark = pytest.mark.django_db(transaction=True)


def record(member, **fields) -> UsageRecord:
    return UsageRecord(account_id=member.account.id, source="gateway", **fields)


def test_records_wait_in_memory_until_a_flush_writes_them_in_one_batch(
    member, catalog_model
) -> None:
    writer = UsageWriter()
    for n in range(50):
        writer.record(record(member, model="cf-gpt-oss-20b", input_tokens=n, output_tokens=1))
    assert UsageEvent.objects.count() == 0  # nothing on the request path
    with CaptureQueriesContext(connection) as queries:
        assert writer.flush() == 50
    inserts = [q["sql"] for q in queries.captured_queries if "INSERT" in q["sql"]]
    assert len(inserts) == 1  # one statement for all 50
    assert UsageEvent.objects.count() == 50
    assert sum(UsageEvent.objects.values_list("input_tokens", flat=True)) == sum(range(50))


def test_costs_come_from_the_price_table(member, catalog_model, prices) -> None:
    Price.objects.filter(pattern="cf-gpt-oss-20b").update(input=Decimal(2), output=Decimal(4))
    writer = UsageWriter()
    writer.record(record(member, model="cf-gpt-oss-20b", input_tokens=1000, output_tokens=500))
    writer.record(record(member, model="not-in-catalog", input_tokens=10))
    writer.flush()
    costs = dict(UsageEvent.objects.values_list("model", "cost_usd"))
    assert costs["cf-gpt-oss-20b"] == Decimal("0.004")
    assert costs["not-in-catalog"] is None


@contextlib.contextmanager
def database_unreachable() -> Iterator[None]:
    """New connections to the database are refused (its port points at a socket that does not
    listen) until the block ends; every thread's connections share these settings."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = connection.settings_dict["PORT"]
        connection.close()
        connection.settings_dict["PORT"] = closed.getsockname()[1]
        try:
            yield
        finally:
            connection.settings_dict["PORT"] = port
            connection.close()


@pytest.mark.usefixtures("requires_postgres")
def test_records_of_a_process_with_no_prices_yet_are_spilled_in_an_outage_then_priced(
    member, catalog_model, prices, settings, tmp_path
) -> None:
    Price.objects.filter(pattern="cf-gpt-oss-20b").update(input=Decimal(2), output=Decimal(4))
    settings.USAGE_SPILL_DIR = str(tmp_path)
    settings.USAGE_FLUSH_SECONDS = 0.2  # the drainer's pause between tries
    forget_prices()  # a process that has not priced anything yet
    writer = UsageWriter()
    writer.record(record(member, model="cf-gpt-oss-20b", input_tokens=1000, output_tokens=500))

    with database_unreachable():
        assert writer.flush() == 0  # no price table to be had: the record goes to disk
        assert writer.pending == 0 and list(tmp_path.glob("spill-*"))
        time.sleep(0.5)  # the drainer tries, and fails, meanwhile

    # Back: the drainer writes it, priced now.
    wait_until(lambda: UsageEvent.objects.exists(), timeout=30)
    assert UsageEvent.objects.get().cost_usd == Decimal("0.004")
    wait_until(lambda: not list(tmp_path.glob("spill-*")), what="the drainer to finish")


def test_records_encoded_on_the_loop_while_more_arrive_are_each_written_once(
    member, catalog_model, prices
) -> None:
    price_table()  # this process has a price table: the flusher encodes on the event loop
    writer = UsageWriter()

    def usage(n: int) -> UsageRecord:
        return record(member, model="cf-gpt-oss-20b", input_tokens=n, output_tokens=1)

    async def requests_during_a_flush() -> int:
        for n in range(250):
            writer.record(usage(n))

        async def more_requests() -> None:  # served between the flush's slices
            for n in range(250, 500):
                writer.record(usage(n))
                if n % 10 == 0:
                    await asyncio.sleep(0)

        arriving = asyncio.create_task(more_requests())
        written = await writer.aflush()
        await arriving
        return written + await writer.aflush()

    assert asyncio.run(requests_during_a_flush()) == 500
    assert sorted(UsageEvent.objects.values_list("input_tokens", flat=True)) == list(range(500))
    assert not UsageEvent.objects.filter(cost_usd__isnull=True).exists()


def test_the_flusher_task_writes_without_being_asked(member, settings) -> None:
    settings.USAGE_FLUSH_SECONDS = 0.05
    writer = UsageWriter()

    async def serve_a_request() -> None:
        writer.record(record(member, model="m", output_tokens=7))
        for _ in range(100):
            await asyncio.sleep(0.02)
            if writer.pending == 0:
                break

    asyncio.run(serve_a_request())
    assert list(UsageEvent.objects.values_list("output_tokens", flat=True)) == [7]


def test_last_used_is_written_at_most_once_a_minute(member, catalog_model, settings) -> None:
    settings.LAST_USED_RESOLUTION_SECONDS = 0.5  # "a minute", shortened
    key, _ = api_key_mint(account=member.account, model="cf-gpt-oss-20b")
    machine, _ = machine_register(account=member.account, hostname="box")
    writer = UsageWriter()
    writer.touch_api_key(key.id)
    writer.touch_machine(machine.id)
    with CaptureQueriesContext(connection) as queries:
        writer.flush()
    assert len([q for q in queries.captured_queries if "UPDATE" in q["sql"]]) == 2
    key.refresh_from_db()
    machine.refresh_from_db()
    first = key.last_used_at
    assert first is not None and machine.last_seen_at is not None

    writer.touch_api_key(key.id)
    with CaptureQueriesContext(connection) as queries:
        writer.flush()
    assert queries.captured_queries == []  # touched again within the minute: not even a query
    key.refresh_from_db()
    assert key.last_used_at == first

    # Another process touched the row just now: this one's write, once due, changes nothing.
    time.sleep(0.6)
    type(key).objects.filter(pk=key.pk).update(last_used_at=timezone.now())
    touched_elsewhere = type(key).objects.get(pk=key.pk).last_used_at
    writer.touch_api_key(key.id)
    writer.flush()
    key.refresh_from_db()
    assert key.last_used_at == touched_elsewhere

    # Once the minute has passed, the next request's touch is written.
    time.sleep(0.6)
    writer.touch_api_key(key.id)
    writer.flush()
    key.refresh_from_db()
    assert touched_elsewhere < key.last_used_at <= timezone.now()


def test_one_upstream_request_is_one_event_and_the_proxy_record_wins(member) -> None:
    writer = UsageWriter()
    synced = UsageRecord(
        account_id=member.account.id, source="sync", model="claude-sonnet-4-5",
        request_id="req_01", message_id="msg_01", output_tokens=3,
    )  # fmt: skip
    writer.record(synced)
    writer.flush()
    # The proxy saw the same request: its counts replace the transcript's.
    writer.record(
        UsageRecord(
            account_id=member.account.id, source="proxy", model="claude-sonnet-4-5",
            request_id="req_01", message_id="msg_01", output_tokens=120,
        )
    )  # fmt: skip
    writer.flush()
    # A later sync of the same request, and a replayed proxy record, change nothing.
    writer.record(synced)
    writer.record(
        UsageRecord(
            account_id=member.account.id, source="proxy", request_id="req_01", output_tokens=1
        )
    )
    writer.flush()
    rows = list(UsageEvent.objects.values_list("source", "output_tokens", "dedupe_key"))
    assert rows == [("proxy", 120, "req_01")]


def test_records_without_an_upstream_id_are_never_merged(member, other_member) -> None:
    writer = UsageWriter()
    for account in (member.account, member.account, other_member.account):
        writer.record(UsageRecord(account_id=account.id, source="proxy", output_tokens=1))
        writer.record(UsageRecord(account_id=account.id, source="gateway", request_id="cf-1"))
    # The same upstream id in two accounts is two events.
    writer.record(UsageRecord(account_id=member.account.id, source="proxy", message_id="msg_9"))
    writer.record(
        UsageRecord(account_id=other_member.account.id, source="sync", message_id="msg_9")
    )
    assert writer.flush() == 8
    assert UsageEvent.objects.count() == 8


def test_a_batch_holding_its_own_duplicates_is_written_whole_and_settled_like_one_by_one(
    member, caplog
) -> None:
    # Big enough for PostgreSQL's COPY path: the batch's duplicates must be settled before the
    # one upsert, as row-by-row inserts would (first wins, a proxy record replaces a sync).
    writer = UsageWriter()
    account = member.account.id
    for n in range(10):
        writer.record(UsageRecord(account_id=account, source="gateway", event_id=f"e{n}"))
    writer.record(
        UsageRecord(account_id=account, source="sync", message_id="msg_a", output_tokens=3)
    )
    writer.record(
        UsageRecord(account_id=account, source="proxy", message_id="msg_a", output_tokens=9)
    )
    writer.record(
        UsageRecord(account_id=account, source="sync", message_id="msg_b", output_tokens=4)
    )
    writer.record(
        UsageRecord(account_id=account, source="sync", message_id="msg_b", output_tokens=5)
    )
    writer.record(UsageRecord(account_id=account, source="gateway", event_id="e0"))
    writer.record(UsageRecord(account_id=account, source="proxy", output_tokens=1))  # no id
    writer.record(UsageRecord(account_id=account, source="proxy", output_tokens=1))
    with caplog.at_level("WARNING", logger="usage.writer"):
        writer.flush()
    assert not [r for r in caplog.records if "refused" in r.getMessage()]
    kept = dict(
        UsageEvent.objects.filter(dedupe_key__startswith="msg:").values_list(
            "dedupe_key", "output_tokens"
        )
    )
    assert kept == {"msg:msg_a": 9, "msg:msg_b": 4}
    assert UsageEvent.objects.filter(dedupe_key__startswith="ev:").count() == 10
    assert UsageEvent.objects.filter(dedupe_key="").count() == 2


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def test_flushes_share_one_database_connection_that_is_replaced_when_it_dies(
    member, requires_postgres
) -> None:
    # A connection per flush cost a backend start a dozen times a second under load: the writer
    # thread keeps its own, and one that died (a database restart, an idle timeout) is replaced
    # before the next flush, which loses nothing.
    writer = UsageWriter()

    async def flush_one(n: int) -> int:
        writer.record(record(member, output_tokens=n))
        await writer.aflush()
        return await in_writer_thread(backend_pid)

    first, second = asyncio.run(flush_one(1)), asyncio.run(flush_one(2))
    assert first == second

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [first])
    third = asyncio.run(flush_one(3))

    assert third != first
    assert sorted(UsageEvent.objects.values_list("output_tokens", flat=True)) == [1, 2, 3]
    assert not list(writer.spill.directory.glob("spill-*"))  # written, not spilled

    close_writer_connections()  # as at shutdown: the next flush connects again
    assert asyncio.run(flush_one(4)) != third
