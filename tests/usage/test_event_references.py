"""Events reference their account, API key and machine without constraints in the database (the
writer checks a batch once, ``usage.writer._check_references``). A deletion racing a batch being
written must still leave no event pointing at nothing: the account's events go with it, a key's or
machine's events stay without it. Both orders are forced here, on real PostgreSQL connections."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connections, transaction
from django.db.models.signals import pre_delete

from accounts.models import Account, ApiKey, Machine
from accounts.services import api_key_mint, machine_register
from tests.waits import backend_waiting_on_a_lock, wait_until
from usage.models import UsageEvent
from usage.records import UsageRecord
from usage.sync import usage_sync
from usage.writer import UsageWriter, lines_of

# The lock order is PostgreSQL's; SQLite has one writer at a time. In CI a missing PostgreSQL
# fails these tests (``requires_postgres``), it does not skip them.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("requires_postgres")]


class Racer(threading.Thread):
    """``work`` in a thread of its own, on its own database connection."""

    def __init__(self, work: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.work, self.result, self.error = work, None, None

    def run(self) -> None:
        try:
            self.result = self.work()
        except BaseException as exc:  # re-raised by finish(), in the test's thread
            self.error = exc
        finally:
            connections.close_all()

    def finish(self) -> Any:
        self.join(timeout=30)
        assert not self.is_alive(), "the racing thread did not finish"
        if self.error is not None:
            raise self.error
        return self.result


@contextmanager
def deletion_paused_after_its_locks(model: type[Any]) -> Iterator[tuple[Any, Any]]:
    """A ``pre_delete`` receiver connected after the writer's guard: it holds the deletion there,
    its row locked, until released."""
    locked, release = threading.Event(), threading.Event()

    def pause(**_: Any) -> None:
        locked.set()
        assert release.wait(30)

    pre_delete.connect(pause, sender=model, dispatch_uid="test-pause", weak=False)
    try:
        yield locked, release
    finally:
        release.set()
        pre_delete.disconnect(sender=model, dispatch_uid="test-pause")


def references(member: Any, catalog_model: Any) -> dict[str, Any]:
    key, _ = api_key_mint(account=member.account, model=catalog_model.slug)
    machine, _ = machine_register(account=member.account, hostname="box")
    return {"account": member.account, "key": key, "machine": machine}


def records_of(refs: dict[str, Any]) -> list[UsageRecord]:
    account = refs["account"].id
    return [
        *(
            UsageRecord(account, "gateway", api_key_id=refs["key"].id, output_tokens=n)
            for n in range(5)
        ),
        *(
            UsageRecord(account, "proxy", machine_id=refs["machine"].id, output_tokens=n)
            for n in range(5, 10)
        ),
    ]


def references_left() -> dict[str, list[int | None]]:
    """The key of each gateway event and the machine of each proxy event."""
    events = UsageEvent.objects.order_by("output_tokens")
    return {
        "key": list(events.filter(source="gateway").values_list("api_key_id", flat=True)),
        "machine": list(events.filter(source="proxy").values_list("machine_id", flat=True)),
    }


def kept_without(refs: dict[str, Any], deleted: str) -> dict[str, list[int | None]]:
    """What ``references_left`` should be once the key or the machine is deleted."""
    key = None if deleted == "key" else refs["key"].id
    machine = None if deleted == "machine" else refs["machine"].id
    return {"key": [key] * 5, "machine": [machine] * 5}


@pytest.mark.parametrize("deleted", ["account", "key", "machine"])
def test_a_batch_committed_while_a_deletion_waits_is_deleted_or_kept_without_it(
    member, catalog_model, deleted
) -> None:
    refs = references(member, catalog_model)
    lines = lines_of(records_of(refs))
    written, release = threading.Event(), threading.Event()

    def write_and_hold() -> int:
        with transaction.atomic():  # the batch's locks are held until this commits
            count = UsageWriter().write_lines(lines)
            written.set()
            assert release.wait(30)
        return count

    writer = Racer(write_and_hold)
    writer.start()
    assert written.wait(30)
    deletion = Racer(refs[deleted].delete)
    deletion.start()
    wait_until(backend_waiting_on_a_lock, what="the deletion to wait for the batch's commit")
    assert not UsageEvent.objects.exists()  # the batch is not committed yet
    release.set()
    assert writer.finish() == 10
    deletion.finish()

    if deleted == "account":
        assert not Account.objects.filter(id=refs["account"].id).exists()
        assert not UsageEvent.objects.exists()  # the batch's events went with their account
        return
    assert references_left() == kept_without(refs, deleted)


@pytest.mark.parametrize("deleted", ["account", "key", "machine"])
def test_a_batch_written_while_a_deletion_holds_its_row_sees_the_row_gone(
    member, catalog_model, deleted
) -> None:
    refs = references(member, catalog_model)
    model = {"account": Account, "key": ApiKey, "machine": Machine}[deleted]
    usage = UsageWriter()
    for record in records_of(refs):
        usage.record(record)

    with deletion_paused_after_its_locks(model) as (locked, release):
        deletion = Racer(refs[deleted].delete)
        deletion.start()
        assert locked.wait(30)
        flush = Racer(usage.flush)
        flush.start()
        wait_until(backend_waiting_on_a_lock, what="the batch to wait for the deletion's commit")
        release.set()
        deletion.finish()
        written = flush.finish()

    if deleted == "account":
        assert written == 0
        assert not UsageEvent.objects.exists()
        refused = usage.spill.rejected_path.read_text().splitlines()
        assert len(refused) == 10 and all("account" in line for line in refused)
        return
    assert written == 10
    assert references_left() == kept_without(refs, deleted)
    assert not usage.spill.rejected_path.exists()


@pytest.mark.parametrize("deleted", ["account", "machine"])
def test_a_sync_that_waits_for_a_deletion_respects_it(member, deleted) -> None:
    machine, _ = machine_register(account=member.account, hostname="box")
    row = {"account": member.account, "machine": machine}[deleted]
    upload = [
        {
            "request_id": "req_1",
            "model": "claude-sonnet-4-5",
            "output_tokens": 4,
            "timestamp": "2026-11-28T10:00:00Z",
        }
    ]

    with deletion_paused_after_its_locks(type(row)) as (locked, release):
        deletion = Racer(row.delete)
        deletion.start()
        assert locked.wait(30)
        sync = Racer(
            lambda: usage_sync(account_id=member.account.id, machine_id=machine.id, records=upload)
        )
        sync.start()
        wait_until(backend_waiting_on_a_lock, what="the sync to wait for the deletion's commit")
        release.set()
        deletion.finish()
        outcome = sync.finish()

    events = list(UsageEvent.objects.values_list("output_tokens", "machine_id"))
    if deleted == "account":
        assert outcome.accepted == 0 and events == []
    else:
        assert outcome.accepted == 1 and events == [(4, None)]
