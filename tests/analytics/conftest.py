"""A usage history with every kind of traffic the dashboard draws, rolled up."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from accounts.models import ApiKey, Machine
from accounts.services import api_key_mint, machine_register
from proxy.models import MachineRateLimit
from tests.conftest import Member
from usage.models import UsageEvent
from usage.rollups import usage_rollup


@dataclass
class Seeded:
    machine: Machine
    other_machine: Machine
    key: ApiKey
    start: datetime


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw-12345678")


@pytest.fixture
def seeded(member: Member, other_member: Member, catalog_model, settings) -> Seeded:
    settings.USAGE_ROLLUP_SETTLE_SECONDS = 0
    machine, _ = machine_register(account=member.account, hostname="ada-laptop")
    other_machine, _ = machine_register(account=other_member.account, hostname="grace-desktop")
    key, _ = api_key_mint(account=member.account, model="cf-gpt-oss-20b", name="ci")
    today = timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=6)
    rows = []
    for day in range(6):
        when = start + timedelta(days=day, hours=10)
        for n, model in enumerate(["claude-sonnet-5-5", "claude-opus-4-8", "claude-haiku-5-5"]):
            rows.append(
                UsageEvent(
                    account=member.account,
                    source="proxy",
                    model=model,
                    machine=machine,
                    occurred_at=when + timedelta(minutes=n),
                    recorded_at=when,
                    input_tokens=1000 * (n + 1) * (day + 1),
                    output_tokens=500 * (day + 1),
                    cache_read_input_tokens=20_000 * (n + 1),
                    cost_usd=Decimal("0.05") * (n + 1) * (day + 1),
                    status_code=529 if (day, n) == (2, 1) else 200,
                    latency_ms=1000.0 * (n + 1) + day,
                    ttfb_ms=300.0 + 10 * n,
                    session_id=f"session-{day % 2}",
                )
            )
        rows.append(
            UsageEvent(
                account=member.account,
                source="gateway",
                model="cf-gpt-oss-20b",
                api_key=key,
                occurred_at=when,
                recorded_at=when,
                input_tokens=300,
                output_tokens=200,
                cost_usd=Decimal("0.0001"),
                status_code=200,
                latency_ms=400.0,
                ttfb_ms=120.0,
            )
        )
        rows.append(
            UsageEvent(
                account=other_member.account,
                source="proxy",
                model="claude-fable-5-2",
                machine=other_machine,
                occurred_at=when,
                recorded_at=when,
                input_tokens=9999,
                output_tokens=1,
                cost_usd=Decimal(1),
                status_code=200,
                latency_ms=50.0,
                session_id="grace-session",
            )
        )
    UsageEvent.objects.bulk_create(rows)
    MachineRateLimit.objects.create(
        machine=machine,
        observed_at=timezone.now(),
        values={
            "status": "allowed",
            "representative-claim": "five_hour",
            "5h-utilization": "0.42",
            "5h-reset": str(int((timezone.now() + timedelta(hours=2)).timestamp())),
            "7d-utilization": "0.17",
            "7d-reset": str(int((timezone.now() + timedelta(days=3)).timestamp())),
        },
    )
    usage_rollup()
    return Seeded(machine, other_machine, key, start)
