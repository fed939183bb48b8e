"""A rollup run killed in the middle of a day loses only that day: the next run redoes it, and
the days the killed run finished are not redone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from tests.servers import ROOT, server_env
from tests.usage.rollup_helpers import T0, history
from tests.waits import wait_until as wait_for
from usage.models import Period, RollupPending, UsageBucket, UsageEvent
from usage.rollups import floor_day, usage_rollup

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_killed_run_redoes_only_its_last_day(member, requires_postgres, settings) -> None:
    settings.USAGE_ROLLUP_SETTLE_SECONDS = 0
    history(member.account, days=2, per_day=30)
    usage_rollup()
    day_a, day_b = T0, T0 + timedelta(days=1)
    # New events on both days: both must be recomputed by the next run.
    now = timezone.now()
    for day in (day_a, day_b):
        event = UsageEvent.objects.filter(occurred_at__gte=day).order_by("occurred_at").first()
        UsageEvent.objects.filter(pk=event.pk).update(output_tokens=99_999, recorded_at=now)

    env = server_env({"USAGE_ROLLUP_SETTLE_SECONDS": "0", "USAGE_ROLLUP_LEASE_SECONDS": "2"})
    with transaction.atomic():
        # Hold a row of day B's buckets: the run finishes day A, then waits inside day B.
        UsageBucket.objects.select_for_update().filter(period=Period.DAY, start=day_b).first()
        run = subprocess.Popen(
            [sys.executable, "manage.py", "rollup_usage"], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            wait_for(
                lambda: (
                    RollupPending.objects.exists()
                    and {floor_day(h) for h in RollupPending.objects.values_list("hour", flat=True)}
                    == {day_b}
                ),
                timeout=60,
                what="the run to finish day A",
            )
            with connection.cursor() as cursor:

                def blocked() -> bool:
                    cursor.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock'"
                    )
                    return cursor.fetchone()[0] > 0

                wait_for(blocked, timeout=60, what="the run to block inside day B")
            done_a = sorted(
                UsageBucket.objects.filter(start__gte=day_a, start__lt=day_b).values_list("pk")
            )
            os.killpg(run.pid, signal.SIGKILL)  # the crash, in the middle of day B
            run.wait(timeout=30)
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
    # The killed run's transaction rolled back: day B is still pending, day A is done.
    wait_for(lambda: not _killed_backend_alive(), timeout=30, what="the killed run's backend")
    assert {floor_day(h) for h in RollupPending.objects.values_list("hour", flat=True)} == {day_b}
    assert UsageBucket.objects.get(period=Period.DAY, start=day_a, output_tokens__gte=99_999)

    time.sleep(2.1)  # its lease expires
    result = usage_rollup()

    assert (result.ran, result.days) == (True, 1)  # only day B is redone
    assert (
        sorted(UsageBucket.objects.filter(start__gte=day_a, start__lt=day_b).values_list("pk"))
        == done_a
    )  # day A's rows are the killed run's, untouched
    assert UsageBucket.objects.filter(period=Period.DAY, start=day_b, output_tokens__gte=99_999)
    assert not RollupPending.objects.exists()


def _killed_backend_alive() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state = 'active'"
        )
        return cursor.fetchone()[0] > 0
