"""The analytics page reads pre-aggregated tables the rollup writes (``DailySeries``,
``SessionTotal``): its figures must still be the raw events summed, after a late event too, and a
session that straddles the window counts only its days inside it."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from accounts.services import api_key_mint, machine_register
from tests.usage.rollup_helpers import T0, event, history
from usage.models import TOKEN_FIELDS, UsageEvent
from usage.rollups import usage_rollup

pytestmark = pytest.mark.django_db

DAYS = 4


@pytest.fixture(autouse=True)
def _no_settle(settings) -> None:
    settings.USAGE_ROLLUP_SETTLE_SECONDS = 0


@pytest.fixture
def admin_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def two_accounts(member, other_member, catalog_model):
    machine, _ = machine_register(account=member.account, hostname="laptop")
    key, _ = api_key_mint(account=member.account, model="cf-gpt-oss-20b", name="ci")
    other_machine, _ = machine_register(account=other_member.account, hostname="desktop")
    history(member.account, machine=machine, key=key, days=DAYS, per_day=40)
    history(other_member.account, machine=other_machine, days=DAYS, per_day=25, seed=5)
    usage_rollup()
    return member, other_member


def _page(client: Client, account=None, since=T0, days=DAYS) -> dict:
    until = since + timedelta(days=days - 1)
    query = f"?since={since.date()}&until={until.date()}"
    if account is not None:
        query += f"&account={account.public_id}"
    response = client.get(f"/admin/analytics/{query}")
    assert response.status_code == 200
    return response.context["data"]


def _raw(account=None, since=T0, days=DAYS) -> dict:
    """What the page must show, summed here from the raw events."""
    events = UsageEvent.objects.filter(
        occurred_at__gte=since, occurred_at__lt=since + timedelta(days=days)
    ).select_related("machine", "api_key__model", "account")
    if account is not None:
        events = events.filter(account=account)
    per_model: dict[tuple[str, int], int] = defaultdict(int)
    per_machine: dict[str, int] = defaultdict(int)
    requests = [0] * days
    cost = Decimal(0)
    for e in events:
        day = (e.occurred_at - since).days
        tokens = sum(getattr(e, name) for name in TOKEN_FIELDS)
        per_model[(e.model, day)] += tokens
        if e.machine is not None:
            label = e.machine.hostname if account else f"{e.machine.hostname} ({e.account.email})"
            per_machine[label] += tokens
        requests[day] += 1
        cost += e.cost_usd or 0
    return {
        "per_model": dict(per_model),
        "per_machine": dict(per_machine),
        "requests": requests,
        "cost": float(cost),
        "output": sum(e.output_tokens for e in events),
    }


def _shown(data: dict) -> dict:
    charts = data["charts"]
    per_model = {
        (series["label"], day): tokens
        for series in charts["by_model"]["series"]
        for day, tokens in enumerate(series["tokens"])
        if tokens
    }
    per_machine = {s["label"]: sum(s["tokens"]) for s in charts["by_machine"]["series"]}
    return {
        "per_model": per_model,
        "per_machine": per_machine,
        "requests": charts["requests"],
        "cost": data["totals"]["cost"],
        "output": data["totals"]["output"],
    }


@pytest.mark.parametrize("one_account", [False, True])
def test_the_page_shows_the_raw_events_summed_and_late_ones_too(
    admin_client, two_accounts, one_account
) -> None:
    member, _other = two_accounts
    account = member.account if one_account else None
    shown, raw = _shown(_page(admin_client, account)), _raw(account)
    assert shown["cost"] == pytest.approx(raw.pop("cost"))
    assert {k: v for k, v in shown.items() if k != "cost"} == raw
    assert len(shown["per_machine"]) == (1 if one_account else 2)

    # A late `ccas sync`: recorded now, on day two; the rollup reopens that day's figures.
    event(member.account, T0 + timedelta(days=1, hours=3), source="sync", model="claude-late-1",
          output_tokens=1234, cost_usd=Decimal("2.5"), recorded_at=timezone.now())  # fmt: skip
    usage_rollup()

    shown, raw = _shown(_page(admin_client, account)), _raw(account)
    assert shown["per_model"][("claude-late-1", 1)] == 1234
    assert shown["cost"] == pytest.approx(raw.pop("cost"))
    assert {k: v for k, v in shown.items() if k != "cost"} == raw


def test_top_sessions_count_only_their_days_inside_the_window(admin_client, member) -> None:
    machine, _ = machine_register(account=member.account, hostname="laptop")

    def spend(session: str, day: int, cost: str, output: int = 10) -> None:
        event(member.account, T0 + timedelta(days=day, hours=12), machine=machine,
              session_id=session, cost_usd=Decimal(cost), output_tokens=output)  # fmt: skip

    spend("long", 0, "50")  # the day before the window: not counted
    spend("long", 1, "1")
    spend("long", 3, "2")  # a gap on day 2, still inside
    spend("long", 5, "50")  # the day after the window: not counted
    spend("inside", 2, "4", output=7)
    spend("inside", 3, "1", output=8)
    spend("before", 0, "100")  # wholly outside
    spend("tail", 3, "3")
    spend("tail", 4, "40")  # straddles the window's last day
    usage_rollup()

    sessions = _page(admin_client, member.account, since=T0 + timedelta(days=1), days=3)["sessions"]

    assert [(s["session_id"], s["cost"], s["requests"]) for s in sessions] == [
        ("inside", 5.0, 2),
        ("long", 3.0, 2),
        ("tail", 3.0, 1),
    ]
    inside = sessions[0]
    assert inside["tokens"] == 15 and inside["machines"] == ["laptop"]
    assert inside["first_at"] == T0 + timedelta(days=2, hours=12)
    assert sessions[1]["last_at"] == T0 + timedelta(days=3, hours=12)

    # Over every day, each session counts whole.
    whole = _page(admin_client, member.account, since=T0, days=6)["sessions"]
    assert [(s["session_id"], s["cost"]) for s in whole] == [
        ("long", 103.0), ("before", 100.0), ("tail", 43.0), ("inside", 5.0),
    ]  # fmt: skip

    # A late event for the long session on day 2 is counted the next rollup.
    event(member.account, T0 + timedelta(days=2, hours=1), machine=machine, session_id="long",
          cost_usd=Decimal("9"), recorded_at=timezone.now())  # fmt: skip
    usage_rollup()
    sessions = _page(admin_client, member.account, since=T0 + timedelta(days=1), days=3)["sessions"]
    assert (sessions[0]["session_id"], sessions[0]["cost"]) == ("long", 12.0)
