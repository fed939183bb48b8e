"""Claude Code's transcripts: where they are, what one line holds, and ccusage's dedupe.

Claude Code appends one JSON object a line to ``<config>/projects/<project>/<session>.jsonl``
(sub-agents under ``<session>/subagents/``). An assistant line carries ``message.id``,
``message.model``, ``message.usage`` (input, output, cache creation with its 5m/1h split, cache
read), ``requestId`` (the API's ``request-id``), ``sessionId``, ``timestamp``, ``cwd``. A response
with several content blocks is written as one line per block, each repeating the usage: counted
once. User lines, summaries and other kinds carry no usage and are skipped, as are malformed lines.

Roots, as ccusage reads them: every path of ``CLAUDE_CONFIG_DIR`` (comma-separated; a config
folder holding ``projects/``, or ``projects/`` itself), else ``$XDG_CONFIG_HOME/claude`` (default
``~/.config/claude``) and ``~/.claude``.

Dedupe, as ccusage (v20) does, so that totals agree with it: the key is ``message.id`` plus
``requestId``; a sidechain line (``isSidechain``, e.g. ``/btw``) that replays a parent's message
under a new request id is the same request; of two copies the non-sidechain one wins, then the one
with more tokens. Lines with neither id cannot be deduped and are dropped (ccusage counts them
without dedupe; Claude Code writes none with usage).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

_TIMESTAMP = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?$"
)
SYNTHETIC = "<synthetic>"  # the model of messages Claude Code makes up itself (no API request)
_SEMVER_PREFIX = re.compile(r"^\d+\.\d+\.\d")
# Fields ccusage's schema refuses as null (the whole line is then skipped).
_NOT_NULL_TOP = ("cwd", "costUSD", "version", "sessionId", "requestId", "isApiErrorMessage")
_NOT_NULL_MESSAGE = ("id", "model")
_NOT_NULL_USAGE = ("speed", "cache_read_input_tokens", "cache_creation_input_tokens")


@dataclass
class Entry:
    timestamp: datetime
    model: str | None
    message_id: str | None
    request_id: str | None
    session_id: str | None
    is_sidechain: bool
    input_tokens: int
    output_tokens: int
    cache_write: int
    cache_read: int
    write_5m: int | None
    write_1h: int | None
    speed: str | None
    project: str

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_write + self.cache_read


def roots() -> list[Path]:
    found: list[Path] = []
    configured = os.environ.get("CLAUDE_CONFIG_DIR")
    if configured is not None and configured.strip():
        candidates = []
        for raw in configured.split(","):
            raw = raw.strip()
            if not raw:
                continue
            path = Path(os.path.expanduser(raw))
            if path.name == "projects" and path.is_dir():
                path = path.parent
            candidates.append(path)
    else:
        xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        candidates = [Path(xdg) / "claude", Path.home() / ".claude"]
    for path in candidates:
        if (path / "projects").is_dir() and path not in found:
            found.append(path)
    return found


def transcript_files(folders: Iterable[Path] | None = None) -> list[Path]:
    files: list[Path] = []
    for root in roots() if folders is None else folders:
        for dirpath, _dirnames, filenames in os.walk(root / "projects"):
            files += [Path(dirpath) / name for name in filenames if name.endswith(".jsonl")]
    return sorted(files, key=str)


def parse_timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    match = _TIMESTAMP.match(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=timezone.utc,
        )
    except ValueError:
        return None
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        moment -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return moment


def _count(value: Any, *, required: bool = False) -> int | None:
    if value is None:
        return None if required else 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _optional_text(container: dict[str, Any], key: str) -> tuple[bool, str | None]:
    """(valid, value): present values must be non-empty strings."""
    if key not in container:
        return True, None
    value = container[key]
    if not isinstance(value, str) or not value:
        return False, None
    return True, value


def _usage_line(data: dict[str, Any]) -> dict[str, Any] | None:
    """The object holding timestamp/message/requestId: the line itself, or the nested message of
    an agent progress line (``data.message``)."""
    message = data.get("message")
    if isinstance(message, dict) and isinstance(message.get("usage"), dict) and "timestamp" in data:
        return data
    inner = data.get("data")
    if isinstance(inner, dict) and isinstance(inner.get("message"), dict):
        nested = inner["message"]
        message = nested.get("message")
        if isinstance(message, dict) and isinstance(message.get("usage"), dict):
            return nested
    return None


def parse_line(line: bytes | str, project: str = "") -> Entry | None:
    """The usage of one transcript line, or None for lines without (valid) usage."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    source = _usage_line(data)
    if source is None:
        return None
    message = source["message"]
    usage = message["usage"]
    if any(k in source and source[k] is None for k in _NOT_NULL_TOP):
        return None
    if any(k in message and message[k] is None for k in _NOT_NULL_MESSAGE):
        return None
    if any(k in usage and usage[k] is None for k in _NOT_NULL_USAGE):
        return None
    timestamp = parse_timestamp(source.get("timestamp"))
    if timestamp is None:
        return None
    version = source.get("version")
    if version is not None and (not isinstance(version, str) or not _SEMVER_PREFIX.match(version)):
        return None
    checks = [
        _optional_text(source, "sessionId"),
        _optional_text(source, "requestId"),
        _optional_text(message, "id"),
        _optional_text(message, "model"),
    ]
    if not all(ok for ok, _value in checks):
        return None
    (_, session_id), (_, request_id), (_, message_id), (_, model) = checks
    input_tokens = _count(usage.get("input_tokens"), required=True)
    output_tokens = _count(usage.get("output_tokens"), required=True)
    created = _count(usage.get("cache_creation_input_tokens"))
    cache_read = _count(usage.get("cache_read_input_tokens"))
    if None in (input_tokens, output_tokens, created, cache_read):
        return None
    write_5m = write_1h = None
    split = usage.get("cache_creation")
    if isinstance(split, dict):
        write_5m = _count(split.get("ephemeral_5m_input_tokens"))
        write_1h = _count(split.get("ephemeral_1h_input_tokens"))
        if write_5m is None or write_1h is None:
            return None
    speed = usage.get("speed") if isinstance(usage.get("speed"), str) else None
    cache_write = write_5m + write_1h if write_5m is not None and write_1h is not None else created
    cwd = source.get("cwd")
    return Entry(
        timestamp=timestamp,
        model=model,
        message_id=message_id,
        request_id=request_id,
        session_id=session_id,
        is_sidechain=source.get("isSidechain") is True,
        input_tokens=input_tokens,  # type: ignore[arg-type]
        output_tokens=output_tokens,  # type: ignore[arg-type]
        cache_write=cache_write,  # type: ignore[arg-type]
        cache_read=cache_read,  # type: ignore[arg-type]
        write_5m=write_5m,
        write_1h=write_1h,
        speed=speed,
        project=cwd if isinstance(cwd, str) else project,
    )


def read_file(path: Path) -> Iterator[Entry]:
    """Every usage entry of one transcript (an unreadable file yields nothing)."""
    project = path.parent.name
    try:
        handle = path.open("rb")
    except OSError:
        return
    with handle:
        for line in handle:
            if b'"usage"' not in line:
                continue  # most lines: user turns, tool results, summaries
            entry = parse_line(line, project)
            if entry is not None:
                yield entry


def _better(candidate: Entry, existing: Entry, cost: Callable[[Entry], float]) -> bool:
    if candidate.is_sidechain != existing.is_sidechain:
        return existing.is_sidechain
    if candidate.total != existing.total:
        return candidate.total > existing.total
    candidate_cost, existing_cost = cost(candidate), cost(existing)
    if candidate_cost != existing_cost:
        return candidate_cost > existing_cost
    return candidate.speed is not None and existing.speed is None


def dedupe(entries: Iterable[Entry], cost: Callable[[Entry], float] = lambda e: 0.0) -> list[Entry]:
    """One entry per request (see the module docstring), in first-seen order."""
    kept: list[Entry] = []
    exact: dict[tuple[str, str | None], int] = {}
    by_message: dict[str, list[int]] = {}
    for entry in entries:
        if entry.message_id is None:
            if entry.request_id is not None:
                kept.append(entry)
            continue
        index = exact.get((entry.message_id, entry.request_id))
        if index is None:
            for other in by_message.get(entry.message_id, ()):
                if entry.is_sidechain or kept[other].is_sidechain:
                    index = other
                    break
        if index is not None:
            if _better(entry, kept[index], cost):
                kept[index] = entry
            continue
        kept.append(entry)
        exact[(entry.message_id, entry.request_id)] = len(kept) - 1
        by_message.setdefault(entry.message_id, []).append(len(kept) - 1)
    return kept


def load_local() -> list[Entry]:
    entries: list[Entry] = []
    for path in transcript_files():
        entries.extend(read_file(path))
    return entries
