"""``ccas sync``: upload the usage in the transcripts to ``POST /sync/usage``, resumably.

``sync-state.json`` keeps, per transcript file, how many bytes were read and uploaded (only whole
lines), with the file's inode and the SHA-256 of its first KiB: a file that was rotated or
rewritten is read again from the start (the server dedupes what it already has). The offset of a
file only moves once the batch holding its lines was accepted, so a run that is interrupted
(killed, a network error, a refused batch) resumes where the last accepted batch ended, and one
run after another uploads nothing new. The server dedupes by request id (then message id)
against the proxy's own records, which always win.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from ccas import config
from ccas.errors import CcasError
from ccas.gateway import Gateway, GatewayError
from ccas.transcripts import SYNTHETIC, Entry, parse_line, transcript_files

STATE_FILE = "sync-state.json"
BATCH = 500
_HEAD = 1024


def record(entry: Entry) -> dict[str, Any]:
    """The upload shape of one entry (``usage.sync`` on the server reads it)."""
    item: dict[str, Any] = {
        "request_id": entry.request_id,
        "message_id": entry.message_id,
        "session_id": entry.session_id,
        "model": entry.model,
        "timestamp": entry.timestamp.isoformat().replace("+00:00", "Z"),
        "input_tokens": entry.input_tokens,
        "output_tokens": entry.output_tokens,
        "cache_creation_input_tokens": entry.cache_write,
        "cache_read_input_tokens": entry.cache_read,
    }
    if entry.write_5m is not None and entry.write_1h is not None:
        item["cache_creation"] = {
            "ephemeral_5m_input_tokens": entry.write_5m,
            "ephemeral_1h_input_tokens": entry.write_1h,
        }
    return item


def _tokens(item: dict[str, Any]) -> int:
    return sum(
        item[k]
        for k in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        )
    )


def _identity(path: Path) -> tuple[int, str]:
    with path.open("rb") as handle:
        head = handle.read(_HEAD)
    return os.stat(path).st_ino, hashlib.sha256(head).hexdigest()


def _start(path: Path, state: dict[str, Any]) -> int:
    """Where to resume reading ``path``: its saved offset if it is still the same file."""
    saved = state.get(str(path))
    if not isinstance(saved, dict):
        return 0
    try:
        size = os.stat(path).st_size
        inode, head = _identity(path)
    except OSError:
        return 0
    offset = saved.get("offset", 0)
    if not isinstance(offset, int) or offset > size or saved.get("inode") != inode:
        return 0
    if offset >= _HEAD and saved.get("head") != head:
        return 0
    return offset


def _main_messages(path: Path, cache: dict[Path, set[str]]) -> set[str]:
    """Message ids of the non-sidechain responses in ``path``'s session: its own file and, for
    a sub-agent's file (``<session>/subagents/*.jsonl``), the session's main transcript. A
    sidechain line with one of these ids replays a response already counted (ccusage's rule)."""
    files = [path]
    if path.parent.name == "subagents":
        files.append(path.parent.parent.with_suffix(".jsonl"))
    ids: set[str] = set()
    for file in files:
        if file not in cache:
            found: set[str] = set()
            try:
                with file.open("rb") as handle:
                    for line in handle:
                        entry = parse_line(line) if b'"usage"' in line else None
                        if entry is not None and entry.message_id and not entry.is_sidechain:
                            found.add(entry.message_id)
            except OSError:
                pass
            cache[file] = found
        ids |= cache[file]
    return ids


def _lines(path: Path, start: int) -> Iterator[tuple[int, bytes]]:
    """(end offset, line) for each complete line after ``start``; a partial last line waits."""
    with path.open("rb") as handle:
        handle.seek(start)
        offset = start
        for line in handle:
            if not line.endswith(b"\n"):
                return
            offset += len(line)
            yield offset, line


class Progress:
    def __init__(self, stream: TextIO, total_files: int) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.total_files = total_files
        self.files = 0
        self.sent = 0

    def show(self) -> None:
        if self.tty:
            self.stream.write(
                f"\rfiles read {self.files}/{self.total_files}, records sent {self.sent}"
            )
            self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """One sync at a time per user (a second one would send the same lines twice)."""
    folder = config.ensure_dir()
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock, the server's dedupe still holds
        yield
        return
    with open(folder / "sync.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise CcasError("another `ccas sync` is running: wait for it to finish") from exc
        yield


def run(
    gateway: Gateway, machine_id: str, *, stream: TextIO = sys.stderr, batch_size: int = BATCH
) -> dict[str, int]:
    """Upload what is new; returns counts (files, records, accepted, duplicates, rejected)."""
    with _lock():
        return _run(gateway, machine_id, stream, batch_size)


def _run(gateway: Gateway, machine_id: str, stream: TextIO, batch_size: int) -> dict[str, int]:
    state = config.read_json(STATE_FILE)
    files = transcript_files()
    progress = Progress(stream, len(files))
    counts = {"files": len(files), "records": 0, "accepted": 0, "duplicates": 0, "rejected": 0}
    batch: dict[tuple[str | None, str | None], dict[str, Any]] = {}
    reached: dict[str, int] = {}  # per file: the offset the pending batch covers
    parents: dict[Path, set[str]] = {}

    def commit() -> None:
        nonlocal batch
        if batch:
            try:
                answer = gateway.post(
                    "/sync/usage", {"machine_id": machine_id, "records": list(batch.values())}
                )
            except GatewayError as exc:
                if exc.http_status == 404:
                    raise CcasError(
                        "the gateway does not know this machine: run `ccas init`"
                    ) from exc
                raise
            counts["accepted"] += int(answer.get("accepted", 0))
            counts["duplicates"] += int(answer.get("duplicates", 0))
            counts["rejected"] += len(answer.get("rejected") or [])
            progress.sent += len(batch)
            batch = {}
        for name, offset in reached.items():
            try:
                inode, head = _identity(Path(name))
            except OSError:
                continue
            state[name] = {"offset": offset, "inode": inode, "head": head}
        reached.clear()
        config.write_json(STATE_FILE, state)
        progress.show()

    try:
        for path in files:
            start = _start(path, state)
            try:
                for end, line in _lines(path, start):
                    reached[str(path)] = end
                    if b'"usage"' not in line:
                        continue
                    entry = parse_line(line, path.parent.name)
                    if entry is None or (entry.request_id is None and entry.message_id is None):
                        continue
                    if entry.model == SYNTHETIC:
                        continue
                    if entry.is_sidechain and entry.message_id in _main_messages(path, parents):
                        continue
                    # Claude Code writes one line per content block, each with the usage:
                    # send one copy (the largest, as ccusage keeps), not one per block.
                    key = (entry.message_id, entry.request_id)
                    earlier = batch.get(key)
                    if earlier is None:
                        counts["records"] += 1
                    elif _tokens(earlier) >= entry.total:
                        continue
                    batch[key] = record(entry)
                    if len(batch) >= batch_size:
                        commit()
            except OSError as exc:
                stream.write(f"ccas sync: skipped {path}: {exc.strerror or exc}\n")
            progress.files += 1
            progress.show()
        commit()
    finally:
        progress.done()
    return counts


def reset() -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(config.config_dir() / STATE_FILE)


def describe(counts: dict[str, int]) -> str:
    return json.dumps(counts)
