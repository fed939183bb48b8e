"""``ccas report``: usage grouped by day, week, month, session, model or 5-hour block.

The same aggregation serves both sources: the gateway's events (every machine of the account,
``GET /sync/usage``) and the local transcripts (``--local``). Days, weeks (starting Monday) and
months are taken in ``--timezone`` (default: this machine's). Costs are estimates in USD: the
gateway's own where it priced an event, else the price table's; a request no row prices leaves
the cost of its bucket incomplete (``unpriced_requests``), never silently zero.

``--json`` (stable; new keys may be added, none renamed or removed)::

    {"report": "daily", "source": "gateway" | "local", "timezone": "Europe/Paris",
     "since": "2026-11-01" | null, "until": null, "prices": "gateway" | "cache" | "bundled",
     "rows": [{"period": "2026-11-20",          # "session_id" / "model" / "start" for the others
               "requests": 3, "input_tokens": 1, "output_tokens": 2,
               "cache_creation_input_tokens": 3, "cache_read_input_tokens": 4,
               "total_tokens": 10, "cost_usd": 0.0123 | null, "unpriced_requests": 0,
               "models": ["claude-sonnet-4-5-20250929"],
               "breakdown": [{"model": …, same token and cost keys}]}],   # with --breakdown
     "totals": {same token and cost keys}}

Sessions add ``first_activity``/``last_activity``; blocks have ``start``, ``end``,
``last_activity``, ``active`` and, from the gateway, ``"rate_limits"`` with the plan's real
utilisation per machine.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any

BLOCK = timedelta(hours=5)
KINDS = ("daily", "weekly", "monthly", "session", "model", "blocks")
_LABEL = {
    "daily": "period",
    "weekly": "period",
    "monthly": "period",
    "session": "session_id",
    "model": "model",
    "blocks": "start",
}


@dataclass
class Usage:
    """One request, from either source."""

    timestamp: datetime
    model: str | None
    session_id: str
    machine: str
    input_tokens: int
    output_tokens: int
    cache_write: int
    cache_read: int
    cost: Decimal | None


@dataclass
class Bucket:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write: int = 0
    cache_read: int = 0
    cost: Decimal = Decimal(0)
    priced: int = 0
    unpriced: int = 0
    first: datetime | None = None
    last: datetime | None = None
    models: dict[str, Bucket] = field(default_factory=dict)

    def add(self, usage: Usage, *, by_model: bool = True) -> None:
        self.requests += 1
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cache_write += usage.cache_write
        self.cache_read += usage.cache_read
        if usage.cost is not None:
            self.cost += usage.cost
            self.priced += 1
        elif usage.input_tokens or usage.output_tokens or usage.cache_write or usage.cache_read:
            self.unpriced += 1
        self.first = usage.timestamp if self.first is None else min(self.first, usage.timestamp)
        self.last = usage.timestamp if self.last is None else max(self.last, usage.timestamp)
        if by_model and usage.model and usage.model != "<synthetic>":
            self.models.setdefault(usage.model, Bucket()).add(usage, by_model=False)

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_write + self.cache_read

    @property
    def cost_usd(self) -> float | None:
        if self.priced == 0:
            return None
        return float(round(self.cost, 8))

    def numbers(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_write,
            "cache_read_input_tokens": self.cache_read,
            "total_tokens": self.total,
            "cost_usd": self.cost_usd,
            "unpriced_requests": self.unpriced,
        }


def _key(kind: str, usage: Usage, tz: tzinfo | None) -> str:
    local = usage.timestamp.astimezone(tz)
    if kind == "daily":
        return local.date().isoformat()
    if kind == "weekly":
        return (local.date() - timedelta(days=local.weekday())).isoformat()
    if kind == "monthly":
        return local.strftime("%Y-%m")
    if kind == "session":
        return usage.session_id or "(no session)"
    return usage.model or "(unknown)"


def in_range(usage: Usage, tz: tzinfo | None, since: date | None, until: date | None) -> bool:
    day = usage.timestamp.astimezone(tz).date()
    return (since is None or day >= since) and (until is None or day <= until)


def _blocks(usages: list[Usage], now: datetime) -> list[tuple[datetime, Bucket]]:
    """ccusage's session blocks: a block starts at its first request's hour and takes every
    request within five hours of that start, unless five idle hours pass first."""
    blocks: list[tuple[datetime, Bucket]] = []
    for usage in sorted(usages, key=lambda u: u.timestamp):
        moment = usage.timestamp.astimezone(timezone.utc)
        if blocks:
            start, bucket = blocks[-1]
            if moment - start < BLOCK and bucket.last is not None and moment - bucket.last < BLOCK:
                bucket.add(usage)
                continue
        start = moment.replace(minute=0, second=0, microsecond=0)
        bucket = Bucket()
        bucket.add(usage)
        blocks.append((start, bucket))
    return blocks


def build(
    kind: str,
    usages: Iterable[Usage],
    *,
    tz: tzinfo | None,
    breakdown: bool,
    now: datetime | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows and totals of a report (the ``--json`` shape, less its header)."""
    usages = list(usages)
    totals = Bucket()
    for usage in usages:
        totals.add(usage, by_model=False)
    rows: list[dict[str, Any]] = []
    if kind == "blocks":
        now = now or datetime.now(timezone.utc)
        for start, bucket in _blocks(usages, now):
            end = start + BLOCK
            last = bucket.last or start
            rows.append(
                _row(
                    bucket,
                    breakdown,
                    start=start.astimezone(tz).isoformat(),
                    end=end.astimezone(tz).isoformat(),
                    last_activity=last.astimezone(tz).isoformat(),
                    active=now < end and now - last < BLOCK,
                )
            )
        return rows, totals.numbers()
    buckets: dict[str, Bucket] = {}
    for usage in usages:
        buckets.setdefault(_key(kind, usage, tz), Bucket()).add(usage)
    order = sorted(buckets.items())
    if kind == "session":
        order.sort(key=lambda item: item[1].last or datetime.min.replace(tzinfo=timezone.utc))
    elif kind == "model":
        order.sort(key=lambda item: (-(item[1].cost_usd or 0), -item[1].total, item[0]))
    for label, bucket in order:
        extra: dict[str, Any] = {_LABEL[kind]: label}
        if kind == "session":
            extra["first_activity"] = (
                bucket.first.astimezone(tz).isoformat() if bucket.first else None
            )
            extra["last_activity"] = bucket.last.astimezone(tz).isoformat() if bucket.last else None
        rows.append(_row(bucket, breakdown and kind != "model", **extra))
    return rows, totals.numbers()


def _row(bucket: Bucket, breakdown: bool, **label: Any) -> dict[str, Any]:
    row = {**label, **bucket.numbers(), "models": sorted(bucket.models)}
    if breakdown:
        row["breakdown"] = [
            {"model": model, **part.numbers()}
            for model, part in sorted(bucket.models.items(), key=lambda i: -(i[1].cost_usd or 0))
        ]
    return row


# -- the table --------------------------------------------------------------------------------
WIDTH = 80
_NUMBER = 9
_COST = 9


def _short(n: int) -> str:
    if n < 10_000_000:
        return f"{n:,}"
    for unit, size in (("B", 1_000_000_000), ("M", 1_000_000)):
        if n >= size:
            return f"{n / size:.1f}{unit}" if n < 100 * size else f"{n / size:.0f}{unit}"
    return str(n)


def _money(row: dict[str, Any]) -> str:
    cost = row["cost_usd"]
    if cost is None:
        return "n/a" if row["total_tokens"] else "0.00"
    text = f"{cost:,.2f}"
    return text + "*" if row.get("unpriced_requests") else text


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _model_name(model: str) -> str:
    """``claude-sonnet-4-5-20250929`` → ``sonnet-4-5``: short enough for the table."""
    return re.sub(r"-\d{8}$", "", model.removeprefix("claude-"))


def render(kind: str, rows: list[dict[str, Any]], totals: dict[str, Any]) -> str:
    """A table that fits 80 columns: the label, four token counts, the total and the cost."""
    headers = ["Input", "Output", "Cache wr", "Cache rd", "Total", "Cost $"]
    label_width = WIDTH - (5 * (_NUMBER + 1) + _COST + 1)
    title = {
        "daily": "Day",
        "weekly": "Week of",
        "monthly": "Month",
        "session": "Session",
        "model": "Model",
        "blocks": "Block start",
    }[kind]

    def line(label: str, values: dict[str, Any]) -> str:
        cells = [
            _short(values[k])
            for k in (
                "input_tokens",
                "output_tokens",
                "cache_creation_input_tokens",
                "cache_read_input_tokens",
                "total_tokens",
            )
        ]
        return (
            _fit(label, label_width).ljust(label_width)
            + "".join(" " + c.rjust(_NUMBER) for c in cells)
            + " "
            + _money(values).rjust(_COST)
        )

    out = [
        title.ljust(label_width)
        + "".join(" " + h.rjust(_NUMBER) for h in headers[:5])
        + " "
        + headers[5].rjust(_COST),
        "-" * WIDTH,
    ]
    for row in rows:
        if kind == "blocks":
            label = row["start"][:16].replace("T", " ") + (" ●" if row["active"] else "")
        elif kind == "model":
            label = _model_name(row["model"])
        elif kind == "session":
            label = row["session_id"]
        else:
            label = row["period"]
        out.append(line(label, row))
        if kind not in ("model",) and not row.get("breakdown"):
            models = ", ".join(_model_name(m) for m in row["models"])
            if models and kind in ("session", "blocks"):
                out.append(_fit("  " + models, WIDTH))
        for part in row.get("breakdown", []):
            out.append(line("  " + _model_name(part["model"]), part))
    out.append("-" * WIDTH)
    out.append(line("Total", totals))
    if any(r.get("unpriced_requests") for r in rows):
        out.append("* some requests have no price in the table: their cost is not included")
    return "\n".join(out)
