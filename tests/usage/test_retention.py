"""Raw events older than USAGE_RAW_RETENTION_DAYS go once rolled up; the rollups stay and keep
answering for those days."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from tests.usage.rollup_helpers import event
from usage.models import RollupState, UsageBucket, UsageEvent
from usage.rollups import floor_day, usage_events_purge, usage_rollup

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _settings(settings) -> None:
    settings.USAGE_ROLLUP_SETTLE_SECONDS = 0
    settings.USAGE_RAW_RETENTION_DAYS = 90


@pytest.fixture
def old_and_new(member):
    now = timezone.now()
    old = event(member.account, now - timedelta(days=100), output_tokens=7, cost_usd=Decimal(1))
    recent = event(member.account, now - timedelta(days=3), output_tokens=5)
    return old, recent


def test_old_raw_events_go_and_their_rollups_keep_answering(client: Client, member,
                                                            old_and_new) -> None:  # fmt: skip
    usage_rollup()
    before = client.get("/usage?group_by=day", **member.auth).json()

    out = StringIO()
    call_command("purge_usage_events", stdout=out)

    assert "Deleted 1 usage event(s)" in out.getvalue()
    assert list(UsageEvent.objects.values_list("output_tokens", flat=True)) == [5]
    assert UsageBucket.objects.filter(output_tokens=7).exists()
    assert client.get("/usage?group_by=day", **member.auth).json() == before
    horizon = floor_day(timezone.now() - timedelta(days=90))
    assert RollupState.objects.get().purged_before == horizon


def test_nothing_is_deleted_before_it_is_rolled_up(old_and_new) -> None:
    assert usage_events_purge() == 0  # never rolled up: the raw rows are the only copy
    usage_rollup()
    late = event(old_and_new[0].account, timezone.now() - timedelta(days=95),
                 recorded_at=timezone.now())  # fmt: skip
    assert usage_events_purge() == 1  # the late one waits for the rollup to see it
    assert UsageEvent.objects.filter(pk=late.pk).exists()


def test_a_late_event_for_a_purged_day_does_not_wipe_its_rollup(client, member, old_and_new):
    usage_rollup()
    usage_events_purge()
    before = client.get("/usage?group_by=day", **member.auth).json()
    # A `ccas sync` of a day whose raw events are gone: recomputing that day from what is left
    # would erase it, so the rollup is final and the late event ignored.
    event(member.account, old_and_new[0].occurred_at + timedelta(minutes=1), output_tokens=1000,
          recorded_at=timezone.now())  # fmt: skip
    assert client.get("/usage?group_by=day", **member.auth).json() == before
    result = usage_rollup()
    assert result.ignored_late == 1
    assert client.get("/usage?group_by=day", **member.auth).json() == before
    assert UsageBucket.objects.filter(period="day", output_tokens=7).exists()


def test_a_retention_of_zero_keeps_every_raw_event(settings, old_and_new) -> None:
    settings.USAGE_RAW_RETENTION_DAYS = 0
    usage_rollup()
    assert usage_events_purge() == 0
    assert UsageEvent.objects.count() == 2


def test_recomputing_before_the_retention_window_is_refused(old_and_new) -> None:
    usage_rollup()
    usage_events_purge()
    with pytest.raises(ValueError, match="retention"):
        usage_rollup(since=timezone.now() - timedelta(days=120))
