"""The short version of ``bench/fault_load.py``: mixed load with injected upstream faults, then open
streams, against hepgg under uvicorn on the suite's database (and Redis, when configured).

The script judges every answer against the fault its request met and checks the invariants; the
tests read its JSON report. It runs once per session (the first test that needs it); each test is
transactional, so the script's rows are flushed afterwards.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from django.conf import settings

from tests import servers

pytestmark = pytest.mark.django_db(transaction=True)

SHORT = ["--requests", "300", "--warmup", "100", "--concurrency", "16", "--open-streams", "20",
         "--read-timeout", "2", "--hold-seconds", "3", "--settle-seconds", "2"]  # fmt: skip


@functools.cache
def report() -> dict[str, Any]:
    env = {**os.environ, "DATABASE_URL": servers.test_database_url()}
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    done = subprocess.run(
        [sys.executable, "bench/fault_load.py", *SHORT],
        cwd=servers.ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    start = done.stdout.find("{")
    assert start >= 0, f"no report; stderr:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout[start:])


def test_no_answer_under_faults_is_an_unexpected_5xx_or_otherwise_wrong() -> None:
    result = report()

    assert result["faults_injected"], "the run injected no fault: it proves nothing"
    assert result["unexpected_5xx"] == 0, result["unexpected_outcomes"]
    assert result["unexpected_outcomes"] == {}


def test_every_chat_request_that_reached_the_upstream_is_one_usage_event_with_its_tokens() -> None:
    m = report()["metering"]["openai"]

    assert m["usage_events"] == m["upstream_requests"], m
    assert m["event_input_tokens"] == m["upstream_input_tokens"], m
    assert m["event_output_tokens"] == m["upstream_output_tokens"], m
    assert m["estimated_events"] == m["streams_whose_usage_never_came"], m


def test_the_proxys_token_sums_equal_what_the_upstream_reported() -> None:
    m = report()["metering"]["anthropic"]

    assert m["event_input_tokens"] == m["upstream_input_tokens"], m
    assert m["event_output_tokens"] == m["upstream_output_tokens"], m


def test_every_proxy_request_that_reached_the_upstream_is_one_usage_event() -> None:
    m = report()["metering"]["anthropic"]

    assert m["usage_events"] == m["upstream_requests"], m


def test_memory_and_file_descriptors_do_not_grow_and_open_streams_complete() -> None:
    result = report()

    assert abs(float(result["rss_change"].rstrip("%"))) <= 10, result
    after, warm = result["fds_by_kind_after_run"], result["fds_by_kind_after_warmup"]
    assert after.get("upstream", 0) <= 16, after  # idle pooled connections: at most concurrency
    assert all(n <= warm.get(kind, 0) for kind, n in after.items() if kind != "upstream"), after
    assert result["open_streams"]["outcomes"] == {"ok": 20}, result["open_streams"]
