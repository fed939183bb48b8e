"""ccas report: totals equal to the hand-computed sums of the transcript fixtures, locally and from
the gateway (all machines), in a table that fits 80 columns and a stable --json."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tests.ccas.fixtures import (
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    REQUESTS,
    SESSION_1,
    SESSION_2,
    SESSION_3,
    SONNET,
    UNPRICED,
    day_totals,
    write_transcripts,
)

pytestmark = pytest.mark.django_db(transaction=True)

NUMBER_KEYS = {
    "requests",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "total_tokens",
    "cost_usd",
    "unpriced_requests",
}


def report(home, *args: str, env: dict | None = None) -> dict:
    result = home.run("report", *args, "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def assert_matches_fixtures(document: dict) -> None:
    expected = day_totals(REQUESTS)
    assert [row["period"] for row in document["rows"]] == sorted(expected)
    for row in document["rows"]:
        day = expected[row["period"]]
        assert set(row) == NUMBER_KEYS | {"period", "models"}
        assert row["requests"] == day["requests"]
        assert row["input_tokens"] == day["input"]
        assert row["output_tokens"] == day["output"]
        assert row["cache_creation_input_tokens"] == day["write"]
        assert row["cache_read_input_tokens"] == day["read"]
        assert row["total_tokens"] == day["input"] + day["output"] + day["write"] + day["read"]
        assert Decimal(str(row["cost_usd"])) == day["cost"]
    assert document["rows"][0]["unpriced_requests"] == 1  # R3's model has no price
    assert document["rows"][0]["models"] == [UNPRICED, SONNET]
    totals = document["totals"]
    assert totals["requests"] == 6
    assert totals["input_tokens"] == sum(r.input for r in REQUESTS) == 126
    assert totals["output_tokens"] == sum(r.output for r in REQUESTS) == 603
    assert totals["cache_creation_input_tokens"] == 4200
    assert totals["cache_read_input_tokens"] == 31900
    assert Decimal(str(totals["cost_usd"])) == Decimal("0.036075")


def test_local_daily_totals_are_the_hand_computed_sums(installed) -> None:
    write_transcripts(installed.path)
    document = report(installed, "daily", "--local")
    assert {k: document[k] for k in ("report", "source", "timezone", "since", "until")} == {
        "report": "daily",
        "source": "local",
        "timezone": "UTC",
        "since": None,
        "until": None,
    }
    assert document["prices"] == "bundled"  # offline: nothing fetched
    assert_matches_fixtures(document)


def test_the_gateway_report_after_a_sync_shows_the_same_numbers(initialised) -> None:
    write_transcripts(initialised.path)
    assert initialised.run("sync").returncode == 0
    document = report(initialised, "daily")
    assert document["source"] == "gateway"
    assert_matches_fixtures(document)


def test_the_table_fits_80_columns_and_shows_the_totals(installed) -> None:
    write_transcripts(installed.path)
    for kind in ("daily", "weekly", "monthly", "session", "model", "blocks"):
        result = installed.run("report", kind, "--local", "--breakdown")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert max(len(line) for line in lines) <= 80, result.stdout
        total = next(line for line in lines if line.startswith("Total"))
        assert "36,829" in total  # every token, with thousands separators
        assert total.endswith("0.04*")  # the estimated cost in USD; * for R3, unpriced
    daily = installed.run("report", "daily", "--local").stdout
    assert "2026-11-20" in daily and "2026-11-21" in daily
    assert "0.01*" in daily  # the 20th holds a request the table cannot price


def test_other_groupings_and_breakdown(installed) -> None:
    write_transcripts(installed.path)
    sessions = report(installed, "session", "--local")["rows"]
    assert {r["session_id"]: r["requests"] for r in sessions} == {
        SESSION_1: 4,
        SESSION_2: 1,
        SESSION_3: 1,
    }
    first = next(r for r in sessions if r["session_id"] == SESSION_1)
    assert first["first_activity"].startswith("2026-11-20T10:00:00")
    assert first["last_activity"].startswith("2026-11-20T11:00:00")

    models = report(installed, "model", "--local")["rows"]
    assert [(r["model"], r["requests"]) for r in models] == [(SONNET, 5), (UNPRICED, 1)]
    assert models[1]["cost_usd"] is None  # unpriced: null, never zero

    weeks = report(installed, "weekly", "--local")["rows"]
    assert [(r["period"], r["requests"]) for r in weeks] == [("2026-11-16", 6)]
    months = report(installed, "monthly", "--local")["rows"]
    assert [(r["period"], r["requests"]) for r in months] == [("2026-11", 6)]

    daily = report(installed, "daily", "--local", "--breakdown")["rows"]
    parts = {p["model"]: p for p in daily[0]["breakdown"]}
    assert parts[SONNET]["input_tokens"] == R1.input + R2.input + R5.input
    assert parts[UNPRICED]["input_tokens"] == R3.input


def test_blocks_are_five_hour_windows(installed) -> None:
    write_transcripts(installed.path)
    blocks = report(installed, "blocks", "--local")["rows"]
    assert [(b["start"][:16], b["requests"]) for b in blocks] == [
        ("2026-11-20T10:00", 4),  # R1, R5, R2, R3 within five hours of 10:00
        ("2026-11-21T08:00", 1),  # R6
        ("2026-11-21T23:00", 1),  # R4
    ]
    assert blocks[0]["end"][:16] == "2026-11-20T15:00"
    assert not any(b["active"] for b in blocks)


def test_since_until_and_timezone_choose_the_days(installed) -> None:
    write_transcripts(installed.path)
    only = report(installed, "daily", "--local", "--since", "2026-11-21", "--until", "20261121")
    assert [r["period"] for r in only["rows"]] == ["2026-11-21"]
    assert only["totals"]["requests"] == 2
    # R4 was at 23:30 UTC: the next day in Tokyo
    tokyo = report(installed, "daily", "--local", "--timezone", "Asia/Tokyo")
    assert {r["period"]: r["requests"] for r in tokyo["rows"]} == {
        "2026-11-20": 4,
        "2026-11-21": 1,
        "2026-11-22": 1,
    }
    assert tokyo["timezone"] == "Asia/Tokyo"
    assert R4.timestamp.startswith("2026-11-21T23:30") and R6.timestamp.startswith("2026-11-21")


def test_the_gateway_report_counts_every_machine_of_the_account(
    initialised, installed, gateway, member, tmp_path
) -> None:
    from tests.ccas.conftest import Home

    write_transcripts(initialised.path)
    assert initialised.run("sync").returncode == 0
    # a second machine of the same account, with its own transcripts
    other = Home(tmp_path / "desktop", installed.bin, {**installed.env})
    other.path.mkdir()
    other.env["HOME"] = str(other.path)
    joined = other.run(
        "init", "--host", gateway.url, "--token", member.master_token, "--name", "desktop"
    )
    assert joined.returncode == 0, joined.stdout + joined.stderr
    from tests.ccas.fixtures import Req, assistant_lines, dump

    extra = Req("msg_D1", "req_D1", SONNET, "2026-11-21T12:00:00Z", 1000, 0, 0, 0, 0)
    project = other.path / ".claude" / "projects" / "-desk"
    project.mkdir(parents=True)
    (project / "s.jsonl").write_text(dump(assistant_lines(extra, "sess-d", "/desk")))
    assert other.run("sync").returncode == 0
    totals = report(initialised, "daily")["totals"]
    assert totals["requests"] == 7
    assert totals["input_tokens"] == 126 + 1000
    local = report(initialised, "daily", "--local")["totals"]
    assert local["requests"] == 6  # --local sees this machine's transcripts only
