"""A usage record as the surfaces make it, and the one function that makes it fit the database.

``UsageRecord`` is what the gateway and the proxy hand to ``usage_writer.record``; much of it
comes from the client or the upstream (a model name, a session id, header values, an upstream's
usage object). ``usage_record_clean`` runs on every record the writer accepts, so that no value
can make the database refuse a batch:

- text is cut to its column's size, loses NUL bytes (PostgreSQL text and jsonb refuse
  ``\\x00``/``\\u0000``) and lone surrogates (not encodable as UTF-8);
- counts become integers in ``[0, 2**63 - 1]``, a status an integer in ``[0, 32767]`` or None,
  timings finite non-negative floats or None, ``occurred_at`` an aware datetime;
- ``details`` becomes JSON of bounded depth and size (``DETAILS_MAX_DEPTH``,
  ``DETAILS_MAX_CHARS``), with ``"truncated": true`` when something had to go.

``record_line`` writes a record, with the cost and dedupe key the writer worked out, as one JSON
array at C speed (orjson): the writer's buffer entry, a spill file's line, and a row of the batch
PostgreSQL unpacks. The usual record needs no cleaning (``fits_unchanged`` and the line's own
checks say so); only one that fails them goes through ``usage_record_clean``.
``record_from_line``/``record_from_dict`` read a record back from a line or a rejected entry.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import operator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from django.utils import timezone


@dataclass(slots=True)
class UsageRecord:
    account_id: int
    source: str
    model: str = ""
    api_key_id: int | None = None
    machine_id: int | None = None
    occurred_at: datetime = field(default_factory=timezone.now)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    estimated: bool = False
    status_code: int | None = None
    stop_reason: str = ""
    latency_ms: float | None = None
    ttfb_ms: float | None = None
    request_id: str = ""  # the upstream's id of the request
    message_id: str = ""
    session_id: str = ""
    # The recording surface's own id of the request (the gateway's x-request-id, the proxy's
    # local id): it keys the event when the upstream gave none, so a replay cannot add it twice.
    event_id: str = ""
    details: dict[str, Any] = field(default_factory=dict)


FIELDS = tuple(f.name for f in fields(UsageRecord))
record_values = operator.attrgetter(*FIELDS)  # a record's values as a tuple, in FIELDS order


class RawRecord(bytes):
    """A record's values (``record_values``) as one JSON array, neither cleaned nor priced: what
    a server keeps of a record for its writer process (``usage.writer_process``). Bytes, not
    the record: the record and what it holds are freed at once, and the collector never walks
    what waits (objects waiting in memory cost several per cent of c32, bytes nothing: measured
    in ``bench/README.md``)."""

    __slots__ = ()


def record_from_raw(raw: bytes) -> UsageRecord:
    return record_from_values(orjson.loads(memoryview(raw)))  # orjson refuses bytes subclasses


_TEXT_FIELDS = ("source", "model", "stop_reason", "request_id", "message_id", "session_id")
_COUNT_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
BIGINT_MAX = 2**63 - 1
SMALLINT_MAX = 32767
EVENT_ID_MAX = 64
DETAILS_MAX_DEPTH = 4
DETAILS_MAX_CHARS = 8192  # about the serialized size
_DETAILS_MAX_ITEMS = 64
_DETAILS_TEXT_MAX = 1000
_DETAILS_KEY_MAX = 64


@functools.cache
def _column_sizes() -> dict[str, int]:
    from usage.models import UsageEvent  # the columns are the one source of the sizes

    return {name: UsageEvent._meta.get_field(name).max_length for name in _TEXT_FIELDS}


def clean_text(value: Any, limit: int) -> str:
    """``value`` as text PostgreSQL accepts, at most ``limit`` characters."""
    if not isinstance(value, str):
        value = "" if value is None else str(value)
    if "\x00" in value:
        value = value.replace("\x00", "")
    if not value.isascii():  # a lone surrogate cannot be encoded: it becomes "?"
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value[:limit]


def _count(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return 0
    return min(max(number, 0), BIGINT_MAX)


def _status(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= SMALLINT_MAX else None


def _duration(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) and value >= 0 else None


class _Budget:
    __slots__ = ("chars", "truncated")

    def __init__(self, chars: int) -> None:
        self.chars = chars
        self.truncated = False


_DROP = object()


def _json(value: Any, depth: int, budget: _Budget) -> Any:
    """``value`` as bounded JSON, or ``_DROP`` when the budget or the depth is spent."""
    if budget.chars <= 0:
        budget.truncated = True
        return _DROP
    if value is None or isinstance(value, bool):
        budget.chars -= 5
        return value
    if isinstance(value, int):
        budget.chars -= 20
        # Beyond a bigint a number is noise, and beyond ~4300 digits Python cannot print it.
        return value if -BIGINT_MAX - 1 <= value <= BIGINT_MAX else None
    if isinstance(value, float | Decimal):
        budget.chars -= 24
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, bytes | bytearray):
        value = bytes(value[:_DETAILS_TEXT_MAX]).decode("utf-8", "replace")
    if isinstance(value, str):
        text = clean_text(value, min(_DETAILS_TEXT_MAX, max(budget.chars, 0)))
        if len(text) < len(value):
            budget.truncated = True
        budget.chars -= len(text) + 2
        return text
    if isinstance(value, dict | list | tuple):
        if depth >= DETAILS_MAX_DEPTH:
            budget.truncated = True
            return _DROP
        if isinstance(value, dict):
            return _json_object(value, depth, budget)
        items = []
        for item in itertools.islice(value, _DETAILS_MAX_ITEMS):
            cleaned = _json(item, depth + 1, budget)
            if cleaned is _DROP:
                break
            items.append(cleaned)
        if len(items) < len(value):
            budget.truncated = True
        budget.chars -= 2
        return items
    budget.chars -= 20
    return type(value).__name__  # anything else is our bug; keep a trace of it, not its repr


def _json_object(value: dict[Any, Any], depth: int, budget: _Budget) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in itertools.islice(value.items(), _DETAILS_MAX_ITEMS):
        name = clean_text(key, _DETAILS_KEY_MAX)
        budget.chars -= len(name) + 4
        cleaned = _json(item, depth + 1, budget)
        if cleaned is _DROP:
            if budget.chars <= 0:
                break
            continue
        out[name] = cleaned
    if len(value) > _DETAILS_MAX_ITEMS:
        budget.truncated = True
    budget.chars -= 2
    return out


def clean_details(details: Any) -> dict[str, Any]:
    """``details`` as a JSON object PostgreSQL accepts, bounded in depth and size."""
    if type(details) is dict:
        # The usual case, at C speed: what orjson can write (string keys, valid UTF-8, 64-bit
        # integers) with no NUL, within the size and, counting every bracket, the depth.
        try:
            raw = orjson.dumps(details)
        except TypeError:  # orjson.JSONEncodeError: something only the walk below can fix
            pass
        else:
            if (
                len(raw) <= DETAILS_MAX_CHARS
                and b"\\u0000" not in raw
                and raw.count(b"{") + raw.count(b"[") <= DETAILS_MAX_DEPTH
            ):
                return orjson.loads(raw)  # NaN and infinities are null, tuples lists
    if not isinstance(details, dict):
        details = {} if details is None else {"value": details}
    budget = _Budget(DETAILS_MAX_CHARS)
    cleaned = _json_object(details, 0, budget)
    if budget.truncated:
        cleaned["truncated"] = True
    return cleaned


def usage_record_clean(record: UsageRecord) -> UsageRecord:
    """Make every field of ``record`` fit its column (in place); returns ``record``.

    Runs on the request path: each field has a fast check for the values the surfaces make,
    and only a value that fails it is converted."""
    sizes = _column_sizes()
    for name in _TEXT_FIELDS:
        value = getattr(record, name)
        if not (type(value) is str and len(value) <= sizes[name] and _plain(value)):
            setattr(record, name, clean_text(value, sizes[name]))
    event_id = record.event_id
    if not (type(event_id) is str and len(event_id) <= EVENT_ID_MAX and _plain(event_id)):
        record.event_id = clean_text(event_id, EVENT_ID_MAX)
    for name in _COUNT_FIELDS:
        value = getattr(record, name)
        if not (type(value) is int and 0 <= value <= BIGINT_MAX):
            setattr(record, name, _count(value))
    if type(record.estimated) is not bool:
        record.estimated = bool(record.estimated)
    status = record.status_code
    if status is not None and not (type(status) is int and 0 <= status <= SMALLINT_MAX):
        record.status_code = _status(status)
    for name in ("latency_ms", "ttfb_ms"):
        value = getattr(record, name)
        if value is not None and not (type(value) is float and 0 <= value < math.inf):
            setattr(record, name, _duration(value))
    for name in ("api_key_id", "machine_id"):
        value = getattr(record, name)
        if value is not None and not (type(value) is int and 0 < value <= BIGINT_MAX):
            setattr(record, name, None)
    occurred_at = record.occurred_at
    if type(occurred_at) is not datetime:
        record.occurred_at = (
            timezone.now() if not isinstance(occurred_at, datetime) else occurred_at
        )
    if record.occurred_at.utcoffset() is None:
        record.occurred_at = record.occurred_at.replace(tzinfo=UTC)
    record.details = clean_details(record.details)
    return record


def _plain(text: str) -> bool:
    """ASCII without NUL: nothing to clean."""
    return text.isascii() and "\x00" not in text


# -- the record as one JSON line ----------------------------------------------------------------
# The values of a line, in order: ``UsageEvent``'s columns as the writer inserts them, then the
# record's ``event_id`` (not a column: it is kept so that a line read back keys the same event).
# An array, not an object: PostgreSQL parses half the bytes (its JSON parsing was half the
# database's CPU per event, measured).
LINE_FIELDS = (
    "account_id", "source", "model", "api_key_id", "machine_id", "occurred_at", "input_tokens",
    "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "estimated",
    "cost_usd", "status_code", "stop_reason", "latency_ms", "ttfb_ms", "request_id",
    "message_id", "session_id", "dedupe_key", "details", "event_id",
)  # fmt: skip


@functools.cache
def _fits_unchanged() -> Any:
    sizes = _column_sizes()
    source, model, stop = sizes["source"], sizes["model"], sizes["stop_reason"]
    request, message, session = sizes["request_id"], sizes["message_id"], sizes["session_id"]
    big, small, inf = BIGINT_MAX, SMALLINT_MAX, math.inf

    def fits(r: UsageRecord) -> bool:
        return (
            type(r.source) is str and len(r.source) <= source
            and type(r.model) is str and len(r.model) <= model
            and type(r.stop_reason) is str and len(r.stop_reason) <= stop
            and type(r.request_id) is str and len(r.request_id) <= request
            and type(r.message_id) is str and len(r.message_id) <= message
            and type(r.session_id) is str and len(r.session_id) <= session
            and type(r.event_id) is str and len(r.event_id) <= EVENT_ID_MAX
            and type(r.input_tokens) is int and 0 <= r.input_tokens <= big
            and type(r.output_tokens) is int and 0 <= r.output_tokens <= big
            and type(r.cache_creation_input_tokens) is int
            and 0 <= r.cache_creation_input_tokens <= big
            and type(r.cache_read_input_tokens) is int and 0 <= r.cache_read_input_tokens <= big
            and type(r.estimated) is bool
            and (r.status_code is None
                 or (type(r.status_code) is int and 0 <= r.status_code <= small))
            and (r.latency_ms is None or (type(r.latency_ms) is float and 0 <= r.latency_ms < inf))
            and (r.ttfb_ms is None or (type(r.ttfb_ms) is float and 0 <= r.ttfb_ms < inf))
            and (r.api_key_id is None or (type(r.api_key_id) is int and 0 < r.api_key_id <= big))
            and (r.machine_id is None or (type(r.machine_id) is int and 0 < r.machine_id <= big))
            and type(r.occurred_at) is datetime and r.occurred_at.tzinfo is not None
            and type(r.details) is dict
        )  # fmt: skip

    return fits


def fits_unchanged(record: UsageRecord) -> bool:
    """True when every field but ``details`` already fits its column: the values the surfaces
    make, checked in one expression (an exact type, a bound). Text may hold any Unicode here:
    ``record_line`` catches NUL and lone surrogates on the encoded line."""
    return _fits_unchanged()(record)


def record_line(
    record: UsageRecord, *, cost: Decimal | None, dedupe_key: str, cleaned: bool = False
) -> bytes | None:
    """``record``'s line (``LINE_FIELDS``), or None when the line shows that the record needs
    ``usage_record_clean`` first: a value orjson refuses (a lone surrogate, a huge integer, a
    set...), a NUL, details beyond the size or, counting every bracket, the depth. A record
    that was ``cleaned`` is written whatever its size."""
    r = record
    try:
        line = orjson.dumps(
            (
                r.account_id, r.source, r.model, r.api_key_id, r.machine_id, r.occurred_at,
                r.input_tokens, r.output_tokens, r.cache_creation_input_tokens,
                r.cache_read_input_tokens, r.estimated, None if cost is None else str(cost),
                r.status_code, r.stop_reason, r.latency_ms, r.ttfb_ms, r.request_id,
                r.message_id, r.session_id, dedupe_key, r.details, r.event_id,
            )
        )  # fmt: skip
    except TypeError:  # orjson.JSONEncodeError
        if cleaned:
            raise
        return None
    if cleaned or (
        len(line) <= DETAILS_MAX_CHARS
        and b"\\u0000" not in line
        and line.count(b"{") + line.count(b"[") <= DETAILS_MAX_DEPTH + 1
    ):
        return line
    return None


def line_values(line: bytes) -> dict[str, Any]:
    """A line's values by name (from an array line, or an object line of an older version)."""
    values = orjson.loads(line)
    return dict(zip(LINE_FIELDS, values, strict=False)) if isinstance(values, list) else values


def record_from_line(line: bytes) -> UsageRecord:
    """The record a line was made from, cleaned again (raises ``ValueError``/``TypeError`` for
    a line that is not one)."""
    values = line_values(line)
    if not isinstance(values, dict):
        raise TypeError("a usage line is a JSON array or object")
    return record_from_dict(values)


def dedupe_key(*, source: str, request_id: str, message_id: str, event_id: str = "") -> str:
    """The key that makes one upstream request one event per account.

    Claude traffic (the proxy, ``ccas sync``) is keyed by the upstream request id, else by the
    message id, so a request metered by the proxy and read again from a transcript counts once.
    Otherwise the recording surface's own id of the request (``UsageRecord.event_id``: the
    gateway's ``x-request-id``) keys it, so that writing a record twice (a replay of spilled
    usage after a crash) cannot count it twice. Events with none of these are not deduped.
    """
    if source == "proxy" or source == "sync":  # Source.PROXY, Source.SYNC
        if request_id:
            return request_id[:200]
        if message_id:
            return f"msg:{message_id[:200]}"
    return f"ev:{event_id[:64]}" if event_id else ""


# -- the records' form on disk ------------------------------------------------------------------
def record_to_dict(record: UsageRecord) -> dict[str, Any]:
    values = {name: getattr(record, name) for name in FIELDS}
    values["occurred_at"] = record.occurred_at.isoformat()
    return values


def record_from_values(values: list[Any]) -> UsageRecord:
    """A record sent as ``record_values`` in JSON (``usage.writer_process``), as it was made:
    the writer cleans it if it needs it, as it would have in the process that made it."""
    if len(values) != len(FIELDS):
        raise ValueError(f"a record has {len(FIELDS)} values, not {len(values)}")
    record = UsageRecord(*values)
    if isinstance(record.occurred_at, str):
        with contextlib.suppress(ValueError):  # left as it is, cleaning makes it now
            record.occurred_at = datetime.fromisoformat(record.occurred_at)
    return record


def record_from_dict(values: dict[str, Any]) -> UsageRecord:
    """A record read back from disk (unknown keys ignored), cleaned again."""
    known = {name: values[name] for name in FIELDS if name in values}
    when = known.get("occurred_at")
    if isinstance(when, str):
        try:
            known["occurred_at"] = datetime.fromisoformat(when)
        except ValueError:
            known.pop("occurred_at")
    return usage_record_clean(UsageRecord(**known))
