"""Loading the price table from its file (``catalog/data/prices.json``, format: its README)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.db import transaction

from catalog.models import Price

PRICE_FILE = Path(__file__).resolve().parent / "data" / "prices.json"
_RATES = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")


class PriceFileError(ValueError):
    """The file, or one of its rows, is not in the price table's format."""


@dataclass
class PriceLoadResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    deleted: list[str] = field(default_factory=list)


def _price(value: Any, where: str) -> Decimal | None:
    if value is None:
        return None
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        raise PriceFileError(f"{where}: {value!r} is not a decimal number") from None
    if not price.is_finite() or price < 0:
        raise PriceFileError(f"{where}: {value!r} is not a price (a number >= 0)")
    return price


def price_fields(row: Any, index: int) -> dict[str, Any]:
    """One file row as ``Price`` field values; raises ``PriceFileError`` naming the problem."""
    if not isinstance(row, dict):
        raise PriceFileError(f"prices[{index}] is not an object")
    pattern = row.get("pattern")
    where = f"prices[{index}] ({pattern!r})"
    if not isinstance(pattern, str) or not pattern.strip() or len(pattern) > 200:
        raise PriceFileError(f"{where}: pattern must be a non-empty string of at most 200 chars")
    try:
        effective_from = date.fromisoformat(str(row.get("effective_from")))
    except ValueError:
        raise PriceFileError(f"{where}: effective_from must be an ISO date") from None
    fields: dict[str, Any] = {
        "pattern": pattern,
        "effective_from": effective_from,
        "name": str(row.get("name") or "")[:200],
        "provider": str(row.get("provider") or "")[:32],
        "notes": str(row.get("notes") or ""),
        "long_prompt_threshold": None,
    }
    for rate in _RATES:
        if rate not in row:
            raise PriceFileError(f"{where}: {rate} is missing (use null for no such price)")
        fields[rate] = _price(row[rate], f"{where}.{rate}")
        fields[f"long_{rate}"] = None
    long_prompt = row.get("long_prompt")
    if long_prompt is not None:
        if not isinstance(long_prompt, dict):
            raise PriceFileError(f"{where}: long_prompt must be an object")
        threshold = long_prompt.get("threshold_tokens")
        if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold <= 0:
            raise PriceFileError(f"{where}: long_prompt.threshold_tokens must be an integer > 0")
        fields["long_prompt_threshold"] = threshold
        for rate in _RATES:
            fields[f"long_{rate}"] = _price(long_prompt.get(rate), f"{where}.long_prompt.{rate}")
    return fields


def price_file_read(path: Path = PRICE_FILE) -> list[dict[str, Any]]:
    """The file's rows as ``Price`` field values; raises ``PriceFileError``."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise PriceFileError(f"{path}: {exc}") from None
    rows = document.get("prices") if isinstance(document, dict) else None
    if not isinstance(rows, list):
        raise PriceFileError(f"{path}: expected an object with a list under 'prices'")
    parsed = [price_fields(row, index) for index, row in enumerate(rows)]
    seen: set[tuple[str, date]] = set()
    for fields in parsed:
        key = (fields["pattern"], fields["effective_from"])
        if key in seen:
            raise PriceFileError(f"{path}: two rows for {key[0]!r} from {key[1]}")
        seen.add(key)
    return parsed


@transaction.atomic
def prices_load(*, rows: list[dict[str, Any]], prune: bool = False) -> PriceLoadResult:
    """Create or update one ``Price`` per row (matched on pattern and effective_from); with
    ``prune``, delete the rows the file does not have (edits made only in the admin included)."""
    result = PriceLoadResult()
    existing = {(p.pattern, p.effective_from): p for p in Price.objects.select_for_update()}
    for fields in rows:
        key = (fields["pattern"], fields["effective_from"])
        label = f"{key[0]} from {key[1]}"
        price = existing.pop(key, None)
        if price is None:
            Price.objects.create(**fields)
            result.created.append(label)
        elif any(getattr(price, name) != value for name, value in fields.items()):
            for name, value in fields.items():
                setattr(price, name, value)
            price.save()
            result.updated.append(label)
        else:
            result.unchanged += 1
    if prune:
        for key, price in existing.items():
            price.delete()
            result.deleted.append(f"{key[0]} from {key[1]}")
    return result
