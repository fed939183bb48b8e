"""A record the database refuses never blocks the others: it is set aside with its reason, in a
file an operator can read and replay, and every other record of its batch is written."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from accounts.services import api_key_mint, machine_register
from usage.models import UsageEvent
from usage.records import UsageRecord, record_line
from usage.writer import UsageWriter

pytestmark = pytest.mark.django_db(transaction=True)


def rejected(writer: UsageWriter) -> list[dict]:
    path = writer.spill.rejected_path
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_record_of_a_missing_account_is_set_aside_and_the_rest_of_its_batch_is_written(
    member,
) -> None:
    writer = UsageWriter()
    for n in range(10):
        writer.record(UsageRecord(account_id=member.account.id, source="gateway", output_tokens=n))
    writer.record(UsageRecord(account_id=10**9, source="gateway", output_tokens=99))
    for n in range(10, 20):
        writer.record(UsageRecord(account_id=member.account.id, source="gateway", output_tokens=n))

    assert writer.flush() == 20
    assert writer.pending == 0  # nothing goes back to the queue to block the next flush
    assert sorted(UsageEvent.objects.values_list("output_tokens", flat=True)) == list(range(20))
    [entry] = rejected(writer)
    assert entry["record"]["account_id"] == 10**9
    assert entry["record"]["output_tokens"] == 99
    assert "account" in entry["reason"]

    # The next batch is not held up by anything.
    writer.record(UsageRecord(account_id=member.account.id, source="gateway", output_tokens=100))
    assert writer.flush() == 1


def test_the_events_of_a_key_and_a_machine_deleted_while_buffered_are_kept_without_them(
    member, catalog_model
) -> None:
    key, _ = api_key_mint(account=member.account, model=catalog_model.slug)
    machine, _ = machine_register(account=member.account, hostname="box")
    account = member.account.id
    writer = UsageWriter()
    writer.record(UsageRecord(account, "gateway", api_key_id=key.id, output_tokens=1))
    writer.record(UsageRecord(account, "proxy", machine_id=machine.id, output_tokens=2))
    writer.record(UsageRecord(account, "gateway", output_tokens=3))
    key.delete()
    machine.delete()

    assert writer.flush() == 3
    rows = sorted(UsageEvent.objects.values_list("output_tokens", "api_key_id", "machine_id"))
    assert rows == [(1, None, None), (2, None, None), (3, None, None)]
    assert rejected(writer) == []


def test_several_refused_records_in_one_big_batch_are_all_found(member) -> None:
    writer = UsageWriter()
    bad = {7, 130, 131, 499}
    for n in range(500):
        account = 10**9 + n if n in bad else member.account.id
        writer.record(UsageRecord(account_id=account, source="gateway", output_tokens=n))

    assert writer.flush() == 496
    assert UsageEvent.objects.count() == 496
    assert sorted(e["record"]["output_tokens"] for e in rejected(writer)) == sorted(bad)


def test_a_batch_the_database_refuses_in_part_is_split_until_the_refused_records_are_found(
    member,
) -> None:
    # Lines no cleaning saw (an older version's, say): a negative status breaks the column's
    # CHECK constraint in SQLite and PostgreSQL alike.
    writer = UsageWriter()
    batch = [
        record_line(
            UsageRecord(
                member.account.id,
                "gateway",
                output_tokens=n,
                status_code=-1 if n in (3, 64, 65) else 200,
            ),
            cost=None,
            dedupe_key="",
        )
        for n in range(100)
    ]

    assert writer.write_lines(batch) == 97
    assert UsageEvent.objects.count() == 97
    refused = rejected(writer)
    assert sorted(e["record"]["output_tokens"] for e in refused) == [3, 64, 65]
    assert all(e["reason"].startswith("IntegrityError") for e in refused)


def test_replay_usage_writes_set_aside_records_that_the_database_now_takes(member) -> None:
    writer = UsageWriter()
    writer.record(UsageRecord(account_id=10**9, source="gateway", output_tokens=5))
    writer.flush()
    [entry] = rejected(writer)
    # An operator who found the cause (here: the account id) fixes the line and replays.
    entry["record"]["account_id"] = member.account.id
    writer.spill.rejected_path.write_text(json.dumps(entry) + "\n")

    call_command("replay_usage")

    assert list(UsageEvent.objects.values_list("output_tokens", flat=True)) == [5]
    assert rejected(writer) == []


def test_replay_usage_keeps_aside_what_is_still_refused(member, capsys) -> None:
    writer = UsageWriter()
    writer.record(UsageRecord(account_id=10**9, source="gateway", output_tokens=5))
    writer.flush()

    call_command("replay_usage")

    assert UsageEvent.objects.count() == 0
    assert len(rejected(writer)) == 1
    assert "1 still refused" in capsys.readouterr().out
