"""The analytics pages of the admin: every account or one, a date range, CSV export; staff only."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from tests.analytics.conftest import Seeded

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def test_the_page_draws_every_account_from_the_rollups(admin_client, seeded: Seeded) -> None:
    response = admin_client.get("/admin/analytics/")
    assert response.status_code == 200
    charts = response.context["data"]["charts"]
    labels = {s["label"] for s in charts["by_model"]["series"]}
    assert labels == {
        "claude-sonnet-5-5", "claude-opus-4-8", "claude-haiku-5-5", "cf-gpt-oss-20b",
        "claude-fable-5-2",
    }  # fmt: skip
    machines = {s["label"] for s in charts["by_machine"]["series"]}
    assert machines == {"ada-laptop (ada@example.com)", "grace-desktop (grace@example.com)"}
    assert [s["label"] for s in charts["by_key"]["series"]] == [
        "ci · cf-gpt-oss-20b (ada@example.com)"
    ]
    assert sum(charts["requests"]) == 30 and sum(charts["errors"]) == 1
    assert response.context["data"]["totals"]["cost"] == pytest.approx(
        6 * 1 + 0.05 * 6 * 21 + 0.0006
    )
    assert "Server-Timing" in response
    body = response.content.decode()
    assert "grace-session" in body and "ada-laptop" in body
    assert 'id="analytics-data"' in body and "chart.umd.min.js" in body


def test_an_accounts_page_shows_only_that_account(admin_client, member, seeded: Seeded) -> None:
    response = admin_client.get(f"/admin/analytics/?account={member.account.public_id}")
    assert response.status_code == 200
    data = response.context["data"]
    assert "claude-fable-5-2" not in {s["label"] for s in data["charts"]["by_model"]["series"]}
    body = response.content.decode()
    assert "grace" not in body  # neither the other account's machine nor its session
    assert data["totals"]["requests"] == 24
    [limit] = data["subscriptions"]
    assert (limit["machine"], limit["five_hour"], limit["weekly"]) == ("ada-laptop", 42.0, 17.0)
    sessions = {s["session_id"]: s for s in data["sessions"]}
    assert set(sessions) == {"session-0", "session-1"}
    assert sessions["session-0"]["models"] == [
        "claude-haiku-5-5",
        "claude-opus-4-8",
        "claude-sonnet-5-5",
    ]


def test_the_date_range_picks_the_days(admin_client, seeded: Seeded) -> None:
    since = (seeded.start + timedelta(days=2)).date()
    until = (seeded.start + timedelta(days=3)).date()
    response = admin_client.get(f"/admin/analytics/?since={since}&until={until}")
    charts = response.context["data"]["charts"]
    assert charts["days"] == [since.isoformat(), until.isoformat()]
    assert sum(charts["requests"]) == 10


@pytest.mark.parametrize("query", ["since=2026-13-01", "since=2026-11-20&until=2026-11-01",
                                   "since=2020-01-01&until=2026-01-01"])  # fmt: skip
def test_a_bad_range_is_explained_and_the_default_shown(admin_client, seeded, query) -> None:
    response = admin_client.get(f"/admin/analytics/?{query}")
    assert response.status_code == 200
    assert response.context["form"].errors
    assert len(response.context["data"]["charts"]["days"]) == 30


def test_an_unknown_account_is_a_404(admin_client, seeded) -> None:
    response = admin_client.get("/admin/analytics/?account=00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404


def test_csv_export_lists_the_day_buckets(admin_client, member, seeded: Seeded) -> None:
    response = admin_client.get(f"/admin/analytics/export.csv?account={member.account.public_id}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == 6 * 4  # six days x (three Claude models + the gateway key)
    assert {r["account"] for r in rows} == {"ada@example.com"}
    assert sum(int(r["requests"]) for r in rows) == 24
    gateway = [r for r in rows if r["source"] == "gateway"]
    assert {r["api_key"] for r in gateway} == {f"ci ({seeded.key.prefix}…)"}


def test_only_staff_with_the_view_permission_see_it(client: Client, member, seeded) -> None:
    response = client.get("/admin/analytics/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    from django.contrib.auth import get_user_model

    clerk = get_user_model().objects.create_user("clerk", password="pw-12345678", is_staff=True)
    client.force_login(clerk)
    assert client.get("/admin/analytics/").status_code == 403
    assert client.get("/admin/analytics/export.csv").status_code == 403


def test_the_account_page_links_to_its_analytics(admin_client, member) -> None:
    page = admin_client.get(f"/admin/accounts/account/{member.account.pk}/change/").content.decode()
    assert f'href="/admin/analytics/?account={member.account.public_id}"' in page


def test_without_a_worker_the_page_rolls_up_on_demand(admin_client, member, settings) -> None:
    from tests.usage.rollup_helpers import event

    settings.USAGE_ROLLUP_IN_WEB = True
    settings.USAGE_ROLLUP_SETTLE_SECONDS = 0
    event(member.account, timezone.now() - timedelta(minutes=1), output_tokens=42,
          recorded_at=timezone.now() - timedelta(seconds=1))  # fmt: skip
    response = admin_client.get("/admin/analytics/")
    assert response.context["data"]["totals"]["output"] == 42


def test_beyond_the_top_eight_machines_the_rest_is_other(admin_client, member, settings) -> None:
    from accounts.services import machine_register
    from tests.usage.rollup_helpers import event
    from usage.rollups import usage_rollup

    settings.USAGE_ROLLUP_SETTLE_SECONDS = 0
    when = timezone.now() - timedelta(hours=2)
    for n in range(10):
        machine, _ = machine_register(account=member.account, hostname=f"box-{n}")
        event(member.account, when, machine=machine, input_tokens=1000 * (n + 1))
    usage_rollup()
    series = admin_client.get(f"/admin/analytics/?account={member.account.public_id}").context[
        "data"
    ]["charts"]["by_machine"]["series"]
    assert [s["label"] for s in series] == [f"box-{n}" for n in range(9, 1, -1)] + ["other"]
    assert sum(series[-1]["tokens"]) == 1000 + 2000  # box-0 and box-1
