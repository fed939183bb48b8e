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

``record_to_dict``/``record_from_dict`` are the records' form in the spill and rejected files.
"""

from __future__ import annotations

import functools
import itertools
import math
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


# -- the records' form on disk ------------------------------------------------------------------
def record_to_dict(record: UsageRecord) -> dict[str, Any]:
    values = {name: getattr(record, name) for name in FIELDS}
    values["occurred_at"] = record.occurred_at.isoformat()
    return values


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
