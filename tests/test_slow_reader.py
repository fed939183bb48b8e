"""A slow reader of a long stream does not grow the memory of the server ``make run`` starts, and
the upstream is paced to the reader (``send()`` waits while the client's socket is full, so the
relay stops reading the upstream). ``bench/slow_reader.py`` measures it; this runs a short version
against ``scripts/serve.sh``, the command ``make run`` ends with."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests import servers

STREAM_MB = 64


@pytest.mark.django_db(transaction=True)
def test_a_slow_reader_of_a_long_stream_keeps_make_runs_server_bounded_and_the_upstream_paced(
    settings,
) -> None:
    env = {**os.environ, "DATABASE_URL": servers.test_database_url()}
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    done = subprocess.run(
        [sys.executable, "bench/slow_reader.py", "--server", "make-run", "--surface", "both",
         "--stream-mb", str(STREAM_MB), "--seconds", "6"],
        cwd=servers.ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]

    assert [r["surface"] for r in results] == ["anthropic", "openai"]
    for result in results:
        assert result["status"] == "HTTP/1.1 200 OK", result
        # Without backpressure the whole stream is pulled in at once and held in memory.
        assert result["upstream_sent_mb"] < STREAM_MB / 2, result
        assert result["rss_growth_mb"] < STREAM_MB / 4, result
