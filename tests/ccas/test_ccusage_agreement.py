"""On the same transcripts, ``ccas report daily --local --json`` agrees with ccusage (npm), the
local tool people use today: per day and in total, every token count and the cost.

ccusage 20.0.24 is pinned: 20.0.26 (the newest) ships no linux-x64 native package on the npm
registry, and 20.x runs on the machines' Node 20 (it needs >= 20.19.4). In CI a missing npm is a
failure, elsewhere a skip, as for the skills CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings

from tests.ccas.fixtures import (
    R3,
    SESSION_1,
    SONNET,
    Req,
    assistant_lines,
    dump,
    write_transcripts,
)
from tests.conftest import IN_CI

CCUSAGE_VERSION = "20.0.24"


@pytest.fixture(scope="session")
def ccusage() -> Path:
    if not shutil.which("node") or not shutil.which("npm"):
        if IN_CI:
            pytest.fail("node and npm are needed for the ccusage comparison")
        pytest.skip("needs node and npm")
    prefix = Path(settings.DATA_DIR) / "test-tools" / f"ccusage-{CCUSAGE_VERSION}"
    entry = prefix / "node_modules" / "ccusage" / "src" / "cli.js"
    if not entry.exists():
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "npm",
                "install",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(prefix),
                f"ccusage@{CCUSAGE_VERSION}",
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return entry


def ccusage_daily(cli: Path, home: Path) -> dict:
    result = subprocess.run(
        ["node", str(cli), "daily", "--json", "--offline"],
        env={"PATH": os.environ["PATH"], "HOME": str(home), "TZ": "UTC", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def ccas_daily(zipapp: Path, home: Path) -> dict:
    result = subprocess.run(
        [str(zipapp), "report", "daily", "--local", "--json"],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "TZ": "UTC"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def comparable(ours: dict, theirs: dict) -> tuple[list, list]:
    mine = [
        (
            r["period"],
            r["input_tokens"],
            r["output_tokens"],
            r["cache_creation_input_tokens"],
            r["cache_read_input_tokens"],
            r["total_tokens"],
            round(r["cost_usd"] or 0, 9),
        )
        for r in ours["rows"]
    ]
    other = [
        (
            r.get("period") or r.get("date"),
            r["inputTokens"],
            r["outputTokens"],
            r["cacheCreationTokens"],
            r["cacheReadTokens"],
            r["totalTokens"],
            round(r["totalCost"], 9),
        )
        for r in theirs["daily"]
    ]
    return mine, other


def test_local_daily_totals_agree_with_ccusage(ccusage, zipapp_file, tmp_path) -> None:
    home = tmp_path / "home"
    files = write_transcripts(home)
    # and the shapes real histories have beyond the basics: a response whose later block line
    # carries more tokens (the larger copy counts), a synthetic assistant message
    bigger = Req("msg_GROW", "req_GROW", SONNET, "2026-11-22T09:00:00Z", 4, 1, 0, 0, 100)
    grown = Req("msg_GROW", "req_GROW", SONNET, "2026-11-22T09:00:00Z", 4, 90, 0, 0, 100)
    synthetic = Req("msg_SYN", "req_SYN", "<synthetic>", "2026-11-22T09:01:00Z", 0, 0, 0, 0, 0)
    with files["s1"].open("a") as handle:
        handle.write(
            dump(
                [
                    *assistant_lines(bigger, SESSION_1, "/a"),
                    *assistant_lines(grown, SESSION_1, "/a"),
                    *assistant_lines(synthetic, SESSION_1, "/a"),
                ]
            )
        )
    ours, theirs = ccas_daily(zipapp_file, home), ccusage_daily(ccusage, home)
    mine, other = comparable(ours, theirs)
    assert mine == other
    assert ours["totals"]["total_tokens"] == theirs["totals"]["totalTokens"]
    assert Decimal(str(ours["totals"]["cost_usd"])).quantize(Decimal("1e-9")) == Decimal(
        str(theirs["totals"]["totalCost"])
    ).quantize(Decimal("1e-9"))
    # ccusage prices an unknown model at 0 and flags it; ccas leaves it out of the cost
    assert R3.model in theirs["totals"].get("unpricedModels", [R3.model])
