"""GET /usage and GET /me answer from the rollups plus the raw events they do not cover yet, and
the answer is exact whatever state the rollups are in."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts.services import api_key_mint, machine_register
from tests.usage.rollup_helpers import T0, event, history
from usage.models import TOKEN_FIELDS, UsageBucket, UsageEvent
from usage.rollups import usage_rollup

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_settle(settings) -> None:
    settings.USAGE_ROLLUP_SETTLE_SECONDS = 0


def _label(event: UsageEvent, group_by: str) -> str | None:
    day = event.occurred_at.date()
    return {
        "day": lambda: day.isoformat(),
        "week": lambda: (day - timedelta(days=day.weekday())).isoformat(),
        "month": lambda: day.strftime("%Y-%m"),
        "model": lambda: event.model,
        "machine": lambda: str(event.machine.public_id) if event.machine else None,
        "key": lambda: str(event.api_key.public_id) if event.api_key else None,
        "session": lambda: event.session_id,
    }[group_by]()


def expected(account, group_by: str, since=None, until=None, source=None) -> dict[str, Any]:
    """The answer computed from the raw events alone."""
    events = UsageEvent.objects.filter(account=account).select_related("machine", "api_key")
    if since is not None:
        events = events.filter(occurred_at__gte=since)
    if until is not None:
        events = events.filter(occurred_at__lt=until)
    if source:
        events = events.filter(source=source)
    groups: dict[Any, list[UsageEvent]] = defaultdict(list)
    for e in events:
        groups[_label(e, group_by)].append(e)

    def row(items: list[UsageEvent]) -> dict[str, Any]:
        costs = [e.cost_usd for e in items if e.cost_usd is not None]
        return {
            "requests": len(items),
            **{name: sum(getattr(e, name) for e in items) for name in TOKEN_FIELDS},
            "cost_usd": round(float(sum(costs, Decimal(0))), 8) if costs else None,
            "unpriced_requests": len(items) - len(costs),
        }

    data = [
        {"bucket": label, **row(items)}
        for label, items in sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
    ]
    return {"data": data, "totals": row(list(events))}


@pytest.fixture
def account_history(member, other_member, catalog_model):
    machine, _ = machine_register(account=member.account, hostname="laptop")
    key, _ = api_key_mint(account=member.account, model="cf-gpt-oss-20b")
    history(member.account, machine=machine, key=key, days=9, per_day=25)
    history(other_member.account, days=9, per_day=10, seed=2)  # never in member's answers
    return member


RANGES = [
    (None, None),
    (T0, None),
    (None, T0 + timedelta(days=4)),
    (T0 + timedelta(days=1, hours=5, minutes=17), T0 + timedelta(days=6, hours=2, minutes=41)),
    (T0 + timedelta(days=2, hours=3), T0 + timedelta(days=2, hours=7, minutes=30)),
    (T0 + timedelta(days=3, minutes=5), T0 + timedelta(days=3, minutes=50)),
    (T0 + timedelta(days=4), T0 + timedelta(days=6)),
]
GROUPS = ["day", "week", "month", "model", "machine", "key", "session"]


def check_everything(client: Client, member) -> int:
    checked = 0
    for (since, until), group_by in itertools.product(RANGES, GROUPS):
        query = {"group_by": group_by}
        if since:
            query["since"] = since.isoformat()
        if until:
            query["until"] = until.isoformat()
        body = client.get("/usage", query, **member.auth).json()
        want = expected(member.account, group_by, since, until)
        assert body["data"] == want["data"], (since, until, group_by)
        assert body["totals"] == want["totals"], (since, until, group_by)
        checked += 1
    body = client.get("/usage", {"group_by": "model", "source": "sync"}, **member.auth).json()
    assert body["data"] == expected(member.account, "model", source="sync")["data"]
    return checked


def test_the_answer_is_exact_before_any_rollup(client: Client, account_history) -> None:
    assert check_everything(client, account_history) == len(RANGES) * len(GROUPS)


def test_the_answer_is_exact_from_the_rollups(client: Client, account_history) -> None:
    usage_rollup()
    assert UsageBucket.objects.exists()
    check_everything(client, account_history)


def test_the_answer_is_exact_with_late_new_and_pending_events(
    client: Client, account_history, other_member
) -> None:
    member = account_history
    usage_rollup()
    now = timezone.now()  # after the rollup: these are recorded after its watermark
    # Late: a sync of old days, recorded after the watermark; new: this hour's requests.
    for day in (1, 4, 6):
        event(member.account, T0 + timedelta(days=day, hours=3, minutes=day), source="sync",
              output_tokens=1000 + day, cost_usd=Decimal("0.01"), recorded_at=now,
              session_id="late")  # fmt: skip
    event(member.account, now - timedelta(minutes=1), output_tokens=5, recorded_at=now)
    check_everything(client, member)
    # Half-done: some of the reopened days recomputed, the others still pending.
    usage_rollup(time_budget=0)
    check_everything(client, member)
    usage_rollup()
    check_everything(client, member)


def test_whole_days_are_read_from_the_rollups_not_the_raw_events(client, account_history) -> None:
    member = account_history
    usage_rollup()
    before = client.get("/usage?group_by=day", **member.auth).json()
    # Deleting raw events leaves their rollups (as the retention policy does): the answer stands.
    UsageEvent.objects.filter(
        occurred_at__gte=T0 + timedelta(days=2), occurred_at__lt=T0 + timedelta(days=5)
    ).delete()
    assert client.get("/usage?group_by=day", **member.auth).json() == before


def test_me_shows_the_last_30_days_from_the_same_source(client: Client, member) -> None:
    now = timezone.now()
    event(member.account, now - timedelta(days=31), output_tokens=1000)
    event(member.account, now - timedelta(days=29, minutes=30), output_tokens=7,
          cost_usd=Decimal("0.25"))  # fmt: skip
    event(member.account, now - timedelta(days=2), output_tokens=3, cost_usd=None)
    usage_rollup()
    event(member.account, now - timedelta(minutes=2), output_tokens=1, cost_usd=Decimal("0.5"),
          recorded_at=timezone.now())  # fmt: skip

    usage = client.get("/me", **member.auth).json()["usage_30d"]

    assert usage["requests"] == 3
    assert usage["output_tokens"] == 11
    assert usage["cost_usd"] == 0.75
    assert usage["unpriced_requests"] == 1


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "group_by=year",
            'group_by: "year" is not valid; use one of: day, week, month, model, machine, key, '
            "session.",
        ),
        ("source=cli", 'source: "cli" is not valid; use one of: gateway, proxy, sync.'),
        ("since=2026-11-05&until=2026-11-01", "since must not be after until."),
    ],
)
def test_a_bad_parameter_is_named_with_the_valid_values(client, member, query, message) -> None:
    response = client.get(f"/usage?{query}", **member.auth)
    assert response.status_code == 400
    assert response.json() == {"error": message}
