"""schemathesis fuzzes a live hepgg from its own schema (``/api/schema/``), once per credential
type: no 5xx, no answer that breaks the schema (status, content type, headers, body), no request
slower than ``--max-response-time`` (a hang fails the run rather than stalling it).

Bounded so that CI stays within minutes: a few examples per operation, one worker, a per-request
timeout and a timeout on the whole run, and a fixed seed so that a failure reproduces (the same
command, or ``st replay`` of the printed case). Not run: ``positive_data_acceptance`` (a schema
cannot know which model slugs exist, so a well-formed unknown model is rightly a 400) and
``negative_data_rejection`` (DRF coerces a scalar to a string field's text, which the contract
allows). ``tests/surface/test_found_by_fuzzing.py`` keeps what the fuzzing found.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from accounts.services import api_key_mint, machine_register, skills_key_issue
from catalog.models import CatalogModel
from tests.conftest import Member
from tests.llm_gateway.fake_upstream import CF_ACCOUNT, CF_TOKEN, FakeUpstream
from tests.servers import ServerProcess

EXAMPLES = os.environ.get("HEPGG_FUZZ_EXAMPLES", "10")
SEED = os.environ.get("HEPGG_FUZZ_SEED", "20261128")


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def live(
    hepgg_server: Callable[..., ServerProcess], upstream: FakeUpstream, catalog_model: CatalogModel
) -> ServerProcess:
    return hepgg_server(
        env={
            "CLOUDFLARE_API_BASE": f"{upstream.url}/client/v4",
            "CLOUDFLARE_ACCOUNT_ID": CF_ACCOUNT,
            "CLOUDFLARE_API_TOKEN": CF_TOKEN,
            "GATEWAY_UPSTREAM_READ_TIMEOUT": "5",
        }
    )


def _credentials(member: Member, model: CatalogModel) -> dict[str, str | None]:
    _, api_key = api_key_mint(account=member.account, model=model.slug, name="fuzz")
    _, proxy = machine_register(account=member.account, hostname="fuzz")
    _, skills = skills_key_issue(account=member.account, name="fuzz")
    return {
        "none": None,
        "master token": member.master_token,
        "API key": api_key,
        "proxy token": proxy,
        "skills access key": skills,
    }


def schemathesis(
    base_url: str, credential: str | None, report: Path
) -> subprocess.CompletedProcess:
    argv = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{base_url}/api/schema/",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance,negative_data_rejection",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        EXAMPLES,
        "--seed",
        SEED,
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--max-response-time",
        "10",
        "--generation-database",
        "none",
        "--report-dir",
        str(report),
    ]
    if credential is not None:
        argv += ["--header", f"Authorization: Bearer {credential}"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


def test_fuzzing_with_every_credential_type_finds_nothing(
    live: ServerProcess, member: Member, catalog_model: CatalogModel, tmp_path: Path
) -> None:
    failures = []
    for label, credential in _credentials(member, catalog_model).items():
        run = schemathesis(live.base_url, credential, tmp_path / label.replace(" ", "-"))
        if run.returncode != 0:
            failures.append(f"--- with {label} (exit {run.returncode}) ---\n{run.stdout[-6000:]}")
    assert not failures, "\n".join(failures) + f"\n--- server log ---\n{live.logs()[-3000:]}"
