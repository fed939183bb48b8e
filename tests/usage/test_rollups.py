"""The rollup recomputes hour and day buckets from the raw events and replaces them, behind a
watermark: late events reopen their buckets, a rerun changes nothing, a price change reprices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.utils import timezone

from accounts.services import api_key_mint, machine_register
from catalog.models import Price
from tests.usage.rollup_helpers import (
    T0,
    bucket_values,
    close,
    event,
    history,
    raw_totals,
)
from usage.models import (
    DailySeries,
    DailyStats,
    Period,
    RollupPending,
    RollupState,
    SessionBucket,
    SessionTotal,
    UsageBucket,
    UsageEvent,
)
from usage.rollups import floor_hour, usage_rollup

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_settle(settings) -> None:
    settings.USAGE_ROLLUP_SETTLE_SECONDS = 0
    settings.GATEWAY_CATALOG_CACHE_SECONDS = 0


@pytest.fixture
def cast(member, catalog_model):
    machine, _ = machine_register(account=member.account, hostname="laptop")
    key, _ = api_key_mint(account=member.account, model="cf-gpt-oss-20b")
    return machine, key


def _dims(bucket) -> dict:
    return {
        "account_id": bucket.account_id,
        "source": bucket.source,
        "model": bucket.model,
        "api_key_id": bucket.api_key_id,
        "machine_id": bucket.machine_id,
    }


def test_every_bucket_holds_exactly_what_its_raw_events_add_up_to(member, cast) -> None:
    machine, key = cast
    history(member.account, machine=machine, key=key, days=2, per_day=60)

    result = usage_rollup()

    assert result.ran and result.pending == 0 and result.days == 2
    buckets = list(UsageBucket.objects.all())
    assert {b.period for b in buckets} == {"hour", "day"}
    for bucket in buckets:
        span = timedelta(hours=1) if bucket.period == Period.HOUR else timedelta(days=1)
        events = UsageEvent.objects.filter(
            occurred_at__gte=bucket.start, occurred_at__lt=bucket.start + span, **_dims(bucket)
        )
        assert close(bucket_values(bucket), raw_totals(events)), bucket
    # Together the day buckets are the whole history, and so are the hour buckets.
    for period in (Period.HOUR, Period.DAY):
        rolled = UsageBucket.objects.filter(period=period).aggregate(
            n=Sum("requests"), out=Sum("output_tokens"), cost=Sum("cost_usd")
        )
        raw = UsageEvent.objects.aggregate(out=Sum("output_tokens"), cost=Sum("cost_usd"))
        assert (rolled["n"], rolled["out"], rolled["cost"]) == (
            UsageEvent.objects.count(), raw["out"], raw["cost"],
        )  # fmt: skip


def test_sessions_and_daily_stats_are_rolled_up_per_day(member, other_member, cast) -> None:
    machine, key = cast
    history(member.account, machine=machine, key=key, days=1, per_day=80)
    history(other_member.account, days=1, per_day=30, seed=3)

    usage_rollup()

    day_events = UsageEvent.objects.filter(occurred_at__gte=T0, occurred_at__lt=T0 + timedelta(1))
    for session in SessionBucket.objects.all():
        events = day_events.filter(
            account_id=session.account_id, source=session.source, session_id=session.session_id
        )
        assert session.requests == events.count() > 0
        assert session.model_names == ",".join(sorted({e.model for e in events}))
        assert session.machine_id == max(
            (e.machine_id for e in events if e.machine_id), default=None
        )
        assert session.cost_usd == raw_totals(events)["cost_usd"]
        assert session.first_at == min(e.occurred_at for e in events)
    everyone = DailyStats.objects.get(start=T0, account=None)
    assert close(
        {"requests": everyone.requests, "errors": everyone.errors, "p95": everyone.latency_p95_ms},
        {
            "requests": day_events.count(),
            "errors": raw_totals(day_events)["errors"],
            "p95": raw_totals(day_events)["latency_p95_ms"],
        },
    )
    mine = DailyStats.objects.get(start=T0, account=member.account)
    assert mine.ttfb_p50_ms == pytest.approx(
        raw_totals(day_events.filter(account=member.account))["ttfb_p50_ms"]
    )


def test_a_second_run_changes_nothing(member, cast) -> None:
    machine, key = cast
    history(member.account, machine=machine, key=key, days=2)
    usage_rollup()
    before = sorted(
        (b.period, b.start, b.model, b.source, b.requests, b.cost_usd)
        for b in UsageBucket.objects.all()
    )

    again = usage_rollup()

    assert again.hours == 0  # nothing new was recorded: no bucket reopened
    after = sorted(
        (b.period, b.start, b.model, b.source, b.requests, b.cost_usd)
        for b in UsageBucket.objects.all()
    )
    assert after == before


def test_a_late_event_reopens_its_bucket_and_only_its_day(member, cast) -> None:
    machine, _key = cast
    history(member.account, machine=machine, days=3, per_day=20)
    usage_rollup()
    day_two = T0 + timedelta(days=1)
    untouched = {b.pk for b in UsageBucket.objects.filter(period=Period.DAY).exclude(start=day_two)}

    # A `ccas sync` of last week: the event happened on day two, it is recorded now.
    late = event(
        member.account, day_two + timedelta(hours=5, minutes=3), source="sync",
        machine=machine, output_tokens=777, cost_usd=Decimal("0.5"), recorded_at=timezone.now(),
    )  # fmt: skip
    result = usage_rollup()

    assert (result.hours, result.days) == (1, 1)
    hour = UsageBucket.objects.get(
        period=Period.HOUR, start=floor_hour(late.occurred_at), source="sync",
        model=late.model, machine=machine,
    )  # fmt: skip
    assert close(
        bucket_values(hour),
        raw_totals(
            UsageEvent.objects.filter(
                occurred_at__gte=hour.start,
                occurred_at__lt=hour.start + timedelta(hours=1),
                **_dims(hour),
            )
        ),
    )
    day_total = UsageBucket.objects.filter(period=Period.DAY, start=day_two).aggregate(
        out=Sum("output_tokens")
    )["out"]
    assert (
        day_total
        == UsageEvent.objects.filter(
            occurred_at__gte=day_two, occurred_at__lt=day_two + timedelta(days=1)
        ).aggregate(out=Sum("output_tokens"))["out"]
    )
    # Replaced, not incremented: the other days' rows are the very same rows.
    assert untouched <= set(UsageBucket.objects.values_list("pk", flat=True))


def test_a_proxy_record_replacing_a_synced_one_is_rolled_up_again(member, cast) -> None:
    from usage.writer import UsageRecord, UsageWriter

    machine, _key = cast
    writer = UsageWriter()
    when = timezone.now() - timedelta(days=2)
    synced = UsageRecord(
        account_id=member.account.id, source="sync", model="claude-sonnet-5", machine_id=machine.id,
        occurred_at=when, request_id="req_1", output_tokens=3,
    )  # fmt: skip
    writer.record(synced)
    writer.flush()
    usage_rollup()
    writer.record(
        UsageRecord(
            account_id=member.account.id,
            source="proxy",
            model="claude-sonnet-5",
            machine_id=machine.id,
            occurred_at=when,
            request_id="req_1",
            output_tokens=120,
        )
    )
    writer.flush()

    usage_rollup()

    [day] = UsageBucket.objects.filter(period=Period.DAY)
    assert (day.source, day.output_tokens, day.requests) == ("proxy", 120, 1)


def test_a_price_change_reprices_past_events_and_their_buckets(member, cast, prices) -> None:
    machine, _key = cast
    when = datetime(2026, 11, 2, 10, tzinfo=UTC)
    event(member.account, when, model="my-llama-3", machine=machine, input_tokens=1_000_000)
    usage_rollup()  # the table as first seen: nothing to reprice
    assert UsageBucket.objects.get(period=Period.DAY).cost_usd is None  # no price for it yet

    Price.objects.create(pattern="my-llama*", effective_from=datetime(2026, 1, 1).date(),
                         input=Decimal("0.5"), output=Decimal(1))  # fmt: skip
    assert usage_rollup().repriced == 0  # edited a moment ago: writers may still hold the old table
    Price.objects.filter(pattern="my-llama*").update(
        updated_at=timezone.now() - timedelta(minutes=1)
    )
    first = usage_rollup()  # reprices (recorded_at moves up) ...
    usage_rollup()  # ... and the next run recomputes the reopened buckets

    assert first.repriced == 1
    assert UsageEvent.objects.get().cost_usd == Decimal("0.5")
    day = UsageBucket.objects.get(period=Period.DAY)
    assert (day.cost_usd, day.unpriced_requests) == (Decimal("0.5"), 0)


def test_a_second_run_waits_for_the_first_ones_lease(member, cast, settings) -> None:
    history(member.account, days=1, per_day=5)
    RollupState.objects.update_or_create(
        pk=1, defaults={"lease_until": timezone.now() + timedelta(minutes=1), "lease_owner": "x"}
    )
    assert usage_rollup().ran is False
    assert not UsageBucket.objects.exists()

    RollupState.objects.filter(pk=1).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert usage_rollup().ran is True  # a crashed run's lease expires
    assert UsageBucket.objects.exists()


def test_a_time_budget_leaves_the_rest_pending_for_the_next_run(member, cast) -> None:
    history(member.account, days=4, per_day=10)
    first = usage_rollup(time_budget=0)
    assert first.days == 0 and first.pending > 0
    assert RollupPending.objects.count() == first.pending
    second = usage_rollup()
    assert second.days == 4 and second.pending == 0


def test_since_recomputes_buckets_that_were_lost_or_wrong(member, cast) -> None:
    history(member.account, days=2, per_day=10)
    usage_rollup()
    expected = sorted(UsageBucket.objects.values_list("period", "start", "model", "requests"))
    UsageBucket.objects.filter(start__gte=T0 + timedelta(days=1)).update(requests=999)

    result = usage_rollup(since=T0 + timedelta(days=1))

    assert result.days == 1
    assert (
        sorted(UsageBucket.objects.values_list("period", "start", "model", "requests")) == expected
    )


def test_events_still_settling_wait_for_the_next_run(member, cast, settings) -> None:
    settings.USAGE_ROLLUP_SETTLE_SECONDS = 60
    event(member.account, timezone.now() - timedelta(minutes=5), recorded_at=timezone.now())
    assert usage_rollup().hours == 0
    settings.USAGE_ROLLUP_SETTLE_SECONDS = 0
    assert usage_rollup().hours == 1


@pytest.mark.django_db(transaction=True)
def test_postgres_and_python_compute_the_same_buckets(member, other_member, requires_postgres):
    machine, _ = machine_register(account=member.account, hostname="box")
    history(member.account, machine=machine, days=2, per_day=120)
    history(other_member.account, days=2, per_day=50, seed=11)

    keys = (
        "period", "start", "account_id", "source", "session_id", "model", "api_key_id",
        "machine_id", "dimension",
    )  # fmt: skip

    def snapshot() -> dict:
        rows = {}
        for model in (UsageBucket, SessionBucket, DailyStats, DailySeries, SessionTotal):
            for row in model.objects.all():
                fields = {f.attname: getattr(row, f.attname) for f in model._meta.concrete_fields}
                key = (model.__name__, *(fields.get(k) for k in keys))
                rows[key] = {k: v for k, v in fields.items() if k not in keys and k != "id"}
        return rows

    usage_rollup(since=T0)
    sql = snapshot()
    usage_rollup(since=T0, engine="python")
    python = snapshot()
    assert sql.keys() == python.keys() and len(sql) > 100
    assert {key[0] for key in sql} == {
        "UsageBucket", "SessionBucket", "DailyStats", "DailySeries", "SessionTotal",
    }  # fmt: skip
    for key, values in sql.items():
        assert close(values, python[key]), (key, values, python[key])
