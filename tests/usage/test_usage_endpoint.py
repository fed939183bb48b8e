"""GET /usage: buckets and totals from the raw events, only the caller's own."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.test import Client

from accounts.services import machine_register
from usage.models import UsageEvent

pytestmark = pytest.mark.django_db


def event(account, when: str, **fields) -> UsageEvent:
    return UsageEvent.objects.create(
        account=account,
        source=fields.pop("source", "gateway"),
        occurred_at=datetime.fromisoformat(when).replace(tzinfo=UTC),
        **fields,
    )


@pytest.fixture
def history(member, other_member):
    machine, _ = machine_register(account=member.account, hostname="box")
    event(member.account, "2026-11-01T10:00", model="a", input_tokens=10, output_tokens=1)
    event(
        member.account,
        "2026-11-01T23:00",
        model="b",
        input_tokens=5,
        output_tokens=2,
        cache_read_input_tokens=100,
        source="proxy",
        machine=machine,
        session_id="s1",
    )
    event(member.account, "2026-11-03T08:00", model="a", input_tokens=1, output_tokens=1)
    event(other_member.account, "2026-11-01T10:00", model="a", input_tokens=999)
    return machine


def test_usage_by_day_sums_each_day(client: Client, member, history) -> None:
    body = client.get("/usage?group_by=day", **member.auth).json()
    assert [(r["bucket"], r["requests"], r["input_tokens"]) for r in body["data"]] == [
        ("2026-11-01", 2, 15),
        ("2026-11-03", 1, 1),
    ]
    assert body["totals"]["input_tokens"] == 16
    assert body["totals"]["cache_read_input_tokens"] == 100


@pytest.mark.parametrize(
    ("group_by", "expected"),
    [("model", {"a": 2, "b": 1}), ("month", {"2026-11": 3}), ("session", {"": 2, "s1": 1})],
)
def test_usage_groups_by_other_dimensions(client, member, history, group_by, expected) -> None:
    data = client.get(f"/usage?group_by={group_by}", **member.auth).json()["data"]
    assert {r["bucket"]: r["requests"] for r in data} == expected


def test_usage_filters_by_time_and_source(client: Client, member, history) -> None:
    body = client.get("/usage?since=2026-11-02&group_by=day", **member.auth).json()
    assert body["totals"]["requests"] == 1
    body = client.get("/usage?source=proxy&group_by=machine", **member.auth).json()
    assert body["data"] == [{**body["data"][0], "bucket": str(history.public_id), "requests": 1}]


def test_bad_parameters_are_a_400(client: Client, member) -> None:
    assert client.get("/usage?group_by=year", **member.auth).status_code == 400
    assert client.get("/usage?since=yesterday", **member.auth).status_code == 400
