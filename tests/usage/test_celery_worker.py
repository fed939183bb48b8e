"""With Redis, a real Celery worker and beat roll usage up on schedule: events in, /usage out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone

from tests.servers import ROOT, server_env
from tests.usage.rollup_helpers import event
from tests.waits import wait_until as wait_for
from usage.models import RollupPending, RollupState, UsageBucket

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def celery(requires_redis: str) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """``celery worker`` and ``celery beat`` on the test database and the real Redis."""
    env = server_env({"USAGE_ROLLUP_SECONDS": "1", "USAGE_ROLLUP_SETTLE_SECONDS": "0"})
    env.pop("CELERY_TASK_ALWAYS_EAGER", None)
    workdir = Path(tempfile.mkdtemp(prefix="hepgg-celery-"))
    celery_bin = [sys.executable, "-m", "celery", "-A", "hepgg.celery"]
    # Tasks a previous run's beat left in this Redis database's queue are not ours to run.
    subprocess.run([*celery_bin, "purge", "-f"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    processes = {}
    for name, args in (
        ("worker", ["worker", "--pool=solo", "--loglevel=INFO", "--without-gossip",
                    "--without-mingle", "--without-heartbeat"]),
        ("beat", ["beat", "--loglevel=INFO", "--schedule", str(workdir / "beat-schedule")]),
    ):  # fmt: skip
        with (workdir / f"{name}.log").open("wb") as log:  # the child keeps its own descriptor
            processes[name] = subprocess.Popen(
                [*celery_bin, *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
    yield processes
    for process in processes.values():
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for name, process in processes.items():
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        print(f"--- celery {name} log ---\n{(workdir / f'{name}.log').read_text()[-3000:]}")


def test_beat_schedules_the_rollup_and_the_worker_runs_it(celery, member) -> None:
    now = timezone.now()
    for minutes, tokens in ((90, 100), (30, 20), (5, 3)):
        event(member.account, now - timedelta(minutes=minutes), output_tokens=tokens,
              recorded_at=timezone.now())  # fmt: skip
    written = timezone.now()

    def rolled_up() -> bool:
        state = RollupState.objects.filter(pk=1).first()
        return bool(
            state
            and state.recorded_through
            and state.recorded_through >= written
            and not RollupPending.objects.exists()
            and UsageBucket.objects.filter(period="day").exists()
        )

    for name, process in celery.items():
        assert process.poll() is None, f"celery {name} exited"
    wait_for(rolled_up, timeout=90, what="the worker to roll up the events beat scheduled")

    day = UsageBucket.objects.filter(period="day").order_by("start").last()
    assert day is not None and day.account_id == member.account.id
    body = Client().get("/usage?group_by=day", **member.auth).json()
    assert body["totals"]["output_tokens"] == 123
    assert body["totals"]["requests"] == 3
