"""Usage waiting on disk: written back oldest first in bounded batches, resumed where a crash
left off, never drained by two processes at once, capped in bytes, and replayed by a server
that finds spill files at start-up."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

from tests.conftest import Member
from tests.waits import wait_for_events, wait_until
from usage.records import UsageRecord, record_line
from usage.spill import SpillFolder


def folder(path: Path, max_bytes: int = 10**9) -> SpillFolder:
    return SpillFolder(lambda: path, lambda: max_bytes)


def records(start: int, count: int, account_id: int = 1) -> list[bytes]:
    """Records as the writer spills them: one JSON line each."""
    return [
        record_line(
            UsageRecord(account_id, "gateway", output_tokens=n, event_id=f"req_{n}"),
            cost=None,
            dedupe_key=f"ev:req_{n}",
        )
        for n in range(start, start + count)
    ]


class Sink:
    """Where drained records go: a list, and a switch that makes the database 'go away'."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_after = fail_after

    def write(self, batch: list[UsageRecord]) -> int:
        if self.fail_after is not None and len(self.batches) >= self.fail_after:
            raise ConnectionError("the database went away")
        self.batches.append([r.output_tokens for r in batch])
        return len(batch)


def drain(spill: SpillFolder, sink: Sink, batch_size: int = 4) -> int:
    return spill.drain(sink.write, batch_size=batch_size, seconds=60, on_unreadable=spill.set_aside)


def test_spilled_records_go_back_oldest_first_in_bounded_batches(tmp_path: Path) -> None:
    spill = folder(tmp_path)
    spill.append(records(0, 6))
    spill.append(records(6, 5))
    sink = Sink()

    assert spill.has_backlog()
    assert drain(spill, sink) == 11
    assert sink.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert not spill.has_backlog()
    assert not list(tmp_path.glob("spill-*"))


def test_a_drain_cut_short_resumes_after_the_last_written_batch(tmp_path: Path) -> None:
    spill = folder(tmp_path)
    spill.append(records(0, 10))

    with pytest.raises(ConnectionError):
        drain(spill, Sink(fail_after=1))
    later = Sink()
    drain(spill, later)

    assert later.batches == [[4, 5, 6, 7], [8, 9]]  # the first batch is not written twice


def test_a_file_another_process_holds_is_left_to_it(tmp_path: Path) -> None:
    spill = folder(tmp_path)
    spill.append(records(0, 3))
    spill._seal()
    [path] = tmp_path.glob("spill-*")
    with path.open("rb") as other:  # another process draining it (flock is per open file)
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        sink = Sink()
        assert drain(spill, sink) == 0
        assert path.exists()
    assert drain(folder(tmp_path), Sink()) == 3


def test_records_beyond_the_cap_are_dropped(tmp_path: Path) -> None:
    spill = folder(tmp_path, max_bytes=2_000)
    kept = spill.append(records(0, 100))

    assert 0 < kept < 100
    assert spill.size() <= 2_000
    sink = Sink()
    drain(spill, sink, batch_size=1000)
    assert sink.batches == [list(range(kept))]


def test_an_unreadable_line_is_set_aside_and_the_rest_is_written(tmp_path: Path) -> None:
    spill = folder(tmp_path)
    spill.append(records(0, 2))
    spill._seal()
    [path] = tmp_path.glob("spill-*")
    with path.open("ab") as handle:
        handle.write(b'{"account_id": 1, "source": "gate')  # a crash mid-write
    sink = Sink()

    assert drain(spill, sink) == 2
    assert "unreadable" in spill.rejected_path.read_text()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_a_server_replays_spill_files_it_finds_at_start_up(
    hepgg_server, member: Member, tmp_path: Path, server: str
) -> None:
    # What a process killed during a database outage leaves behind.
    left = folder(tmp_path / "usage")
    left.append(records(0, 25, member.account.id))
    left._seal()

    hepgg_server(server=server, env={"USAGE_SPILL_DIR": str(tmp_path / "usage")})

    events = wait_for_events(25, account=member.account)
    assert sorted(e.output_tokens for e in events) == list(range(25))
    assert wait_until(lambda: not list((tmp_path / "usage").glob("spill-*")))
