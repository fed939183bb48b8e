"""Usage on disk: records the database could not take yet, and records it refused.

Both live in one folder (``USAGE_SPILL_DIR``, in the data folder by default), as JSON lines an
operator can read:

- ``spill-<time_ns>-<pid>.jsonl``: records written while the database was unreachable, waiting
  to be written to it, oldest file first, in batches. Each line is the writer's line as it was
  buffered: a JSON array of the values named by ``usage.records.LINE_FIELDS`` (an older
  version's JSON objects are read too). A process appends to its own current file
  and holds an exclusive ``flock`` on it; a file is drained by whichever process takes its lock
  first, so files left by a process that died (its locks died with it) are drained by the next
  one, and no two processes ever drain one file. Progress through a file is kept in
  ``<file>.offset`` after each batch; a batch written again after a crash between the two is
  dropped by the events' dedupe keys.
- ``rejected.jsonl``: records the database refused even once cleaned, one JSON object per line
  with the record by field name and the reason, set aside so that one bad record never blocks
  the others. ``manage.py replay_usage`` writes both again.

The folder is capped at ``USAGE_SPILL_MAX_BYTES`` of spill files; beyond it new records are
dropped, and the log says how many.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from usage.records import UsageRecord, line_values, record_from_line, record_to_dict

logger = logging.getLogger(__name__)

SPILL_PATTERN = "spill-*.jsonl"
REJECTED_NAME = "rejected.jsonl"
_ROLL_BYTES = 16 * 1024 * 1024  # a new spill file after this many bytes


def _lock(handle: IO[bytes]) -> bool:
    """Take ``handle``'s file for this open file (exclusive, never waits); False if taken."""
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _offset_path(path: Path) -> Path:
    return path.with_name(path.name + ".offset")


def _read_offset(path: Path) -> int:
    try:
        return int(_offset_path(path).read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _write_offset(path: Path, offset: int) -> None:
    target = _offset_path(path)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(str(offset))
    os.replace(temporary, target)


def _entry(item: bytes | UsageRecord | str) -> dict[str, Any]:
    if isinstance(item, str):
        return {"raw": item}
    if isinstance(item, bytes):
        try:
            return {"record": line_values(item)}
        except orjson.JSONDecodeError:
            return {"raw": item.decode("utf-8", "replace")}
    return {"record": record_to_dict(item)}


def _lines(payloads: list[Any]) -> bytes:
    return b"".join(orjson.dumps(payload) + b"\n" for payload in payloads)


class SpillFolder:
    def __init__(self, directory: Callable[[], Path], max_bytes: Callable[[], int]) -> None:
        self._directory = directory
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._current: IO[bytes] | None = None
        self._current_size = 0
        self._backlog: bool | None = None  # None: the folder was not looked at yet

    @property
    def directory(self) -> Path:
        return self._directory()

    # -- state ------------------------------------------------------------------------------
    def has_backlog(self) -> bool:
        """True while spilled records wait; the first call looks at the folder (I/O)."""
        if self._backlog is None:
            self._backlog = any(self.directory.glob(SPILL_PATTERN))
        return self._backlog

    @property
    def backlog_known(self) -> bool:
        """``has_backlog()`` without I/O: True only when this process knows of a backlog."""
        return bool(self._backlog)

    def size(self) -> int:
        total = 0
        for path in self.directory.glob(SPILL_PATTERN):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size - _read_offset(path)
        return total

    # -- spilling ---------------------------------------------------------------------------
    def append(self, lines: list[bytes]) -> int:
        """Append the writer's ``lines`` (``usage.writer``: one JSON object each, a record and
        its cost) to this process's spill file (and fsync it); returns how many fit under the
        cap, the rest are dropped. Raises ``OSError`` when the folder is unwritable."""
        if not lines:
            return 0
        with self._lock:
            room = self._max_bytes() - self.size()
            data = bytearray()
            kept = 0
            for line in lines:
                if len(data) + len(line) + 1 > room:
                    break
                data += line
                data += b"\n"
                kept += 1
            if data:
                handle = self._open_current()
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
                self._current_size += len(data)
                self._backlog = True
        return kept

    def _open_current(self) -> IO[bytes]:
        if self._current is not None and self._current_size < _ROLL_BYTES:
            return self._current
        self._seal()
        directory = self.directory
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"spill-{time.time_ns():020d}-{os.getpid()}.jsonl"
        handle = path.open("ab")
        _lock(handle)  # a new name: nobody else can hold it
        self._current, self._current_size = handle, 0
        return handle

    def _seal(self) -> None:
        """Stop appending to the current file (and let go of its lock) so it can be drained."""
        if self._current is not None:
            self._current.close()
            self._current = None

    # -- draining ---------------------------------------------------------------------------
    def drain(
        self,
        write: Callable[[list[UsageRecord]], int],
        *,
        batch_size: int,
        seconds: float,
        on_unreadable: Callable[[list[tuple[str, str]]], None],
    ) -> int:
        """Hand spilled records to ``write``, oldest first, ``batch_size`` at a time, for about
        ``seconds``; returns how many ``write`` took. Whatever ``write`` raises (the database
        went away) propagates, and the batch it was given stays on disk."""
        deadline = time.monotonic() + seconds
        written = 0
        with self._lock:
            self._seal()
        for path in sorted(self.directory.glob(SPILL_PATTERN)):
            try:
                handle = path.open("rb")
            except FileNotFoundError:  # another process finished it meanwhile
                continue
            with handle:
                if not _lock(handle):
                    continue  # another process appends to it or drains it
                if not path.exists():  # drained and removed between our listing and our lock
                    continue
                for batch, offset, unreadable in self._batches(handle, path, batch_size):
                    if unreadable:
                        on_unreadable(unreadable)
                    written += write(batch)
                    _write_offset(path, offset)
                    if time.monotonic() > deadline:
                        return written
                path.unlink()
                _offset_path(path).unlink(missing_ok=True)
        with self._lock:
            if self._current is None:  # nothing was spilled while we drained
                self._backlog = False
        return written

    @staticmethod
    def _batches(
        handle: IO[bytes], path: Path, batch_size: int
    ) -> Iterator[tuple[list[UsageRecord], int, list[tuple[str, str]]]]:
        handle.seek(_read_offset(path))
        while True:
            batch: list[UsageRecord] = []
            unreadable: list[tuple[str, str]] = []
            while len(batch) < batch_size:
                line = handle.readline()
                if not line:
                    break
                try:
                    batch.append(record_from_line(line))
                except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
                    unreadable.append((line.decode("utf-8", "replace"), f"unreadable: {exc}"))
            if not batch and not unreadable:
                return
            yield batch, handle.tell(), unreadable

    # -- records the database refused ------------------------------------------------------
    @property
    def rejected_path(self) -> Path:
        return self.directory / REJECTED_NAME

    def set_aside(self, rejected: list[tuple[bytes | UsageRecord | str, str]]) -> None:
        """Append refused records (the writer's lines, or records) or unreadable lines (text)
        with their reasons to the rejected file."""
        if not rejected:
            return
        now = datetime.now(UTC).isoformat()
        payloads = [
            {"rejected_at": now, "reason": reason, **_entry(item)} for item, reason in rejected
        ]
        self.directory.mkdir(parents=True, exist_ok=True)
        # O_APPEND and one write: lines from several processes never interleave.
        fd = os.open(self.rejected_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, _lines(payloads))
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def claim_rejected(self) -> Iterator[list[dict[str, Any]]]:
        """The rejected file's entries, for an operator's replay: the file is moved aside (new
        rejections start a new one), and removed once the block ends; if the block raises,
        the entries go back to the rejected file."""
        path = self.rejected_path
        claimed = path.with_name(f"{path.name}.replaying-{os.getpid()}")
        try:
            os.replace(path, claimed)
        except FileNotFoundError:
            yield []
            return
        data = claimed.read_bytes()
        entries = []
        for line in data.splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                entries.append(orjson.loads(line))
        try:
            yield entries
        except BaseException:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            raise
        finally:
            claimed.unlink()
