"""PostgreSQL goes away (a TCP relay in front of it is cut) and comes back.

While it is away, requests whose credentials are warm are served on ``/v1``, ``/anthropic`` and
the skills site; a request that needs the database gets a quick 503 in its surface's shape;
``/readyz`` says so within 2 s; usage goes to spill files. When it is back, with no restart,
every event arrives exactly once, with the right tokens, written in bounded batches, oldest
first. A server killed during the outage leaves its spill files to the next one.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from django.utils import timezone

from accounts.services import api_key_mint, machine_register
from catalog.models import CatalogModel
from skills.services import skills_import
from tests import servers
from tests.conftest import Member
from tests.llm_gateway.conftest import MESSAGES, _fake_server, fake, gateway_env  # noqa: F401
from tests.llm_gateway.fake_upstream import WORDS, FakeUpstream
from tests.proxy.conftest import (  # noqa: F401
    CACHE_READ,
    CACHE_WRITE,
    CLIENT_API_KEY,
    INPUT,
    MODEL,
    OUTPUT,
    FakeAnthropic,
    fake_anthropic,
)
from tests.servers import ServerProcess
from tests.tcprelay import TcpRelay
from tests.waits import wait_for_events, wait_until
from usage.models import UsageEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("requires_postgres")]

WARM = 20  # requests per surface before the cut: every cache of the one server process is warm
DURING = 15  # requests per surface during the outage
PROMPT = 7 * len(MESSAGES)  # the fake provider's prompt_tokens


@pytest.fixture
def relay() -> Iterator[TcpRelay]:
    port = urlsplit(servers.test_database_url()).port or 5432
    relay = TcpRelay(port).start()
    yield relay
    relay.stop()


def through(relay: TcpRelay) -> str:
    parts = urlsplit(servers.test_database_url())
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{relay.port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


class Cast:
    """Everything one outage run uses: credentials warm and cold, a skill, the server."""

    def __init__(self, member: Member, model: CatalogModel) -> None:
        account = member.account
        self.member = member
        _, self.key = api_key_mint(account=account, model=model.slug, name="warm")
        _, self.cold_key = api_key_mint(account=account, model=model.slug, name="cold")
        self.machine, self.token = machine_register(account=account, hostname="warm")
        _, self.cold_token = machine_register(account=account, hostname="cold")
        self.skill = f"outage-probe-{secrets.token_hex(4)}"
        skills_import(
            account=account,
            files={
                f"{self.skill}/SKILL.md": (
                    f"---\nname: {self.skill}\ndescription: Answers during an outage.\n---\n"
                    "# Probe\n"
                ).encode()
            },
        )

    def chat(self, server: ServerProcess, *, key: str | None = None, stream: bool = False):
        return httpx.post(
            f"{server.base_url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key or self.key}"},
            json={"model": "cf-gpt-oss-20b", "messages": MESSAGES, "stream": stream},
            timeout=30,
        )

    def message(self, server: ServerProcess, *, token: str | None = None):
        return httpx.post(
            f"{server.base_url}/anthropic/{token or self.token}/v1/messages",
            headers={  # what Claude Code sends: its attribution is part of what is metered
                "x-api-key": CLIENT_API_KEY,
                "anthropic-version": "2023-06-01",
                "x-claude-code-session-id": "5e1d0c3b-9a8f-4c2d-8e7f-6a5b4c3d2e1f",
                "x-claude-code-agent-id": "agent-7f3a",
            },
            json={"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]},
            timeout=30,
        )

    def skill_md(self, server: ServerProcess, name: str | None = None):
        return httpx.get(f"{server.base_url}/skills/{name or self.skill}/SKILL.md", timeout=30)

    def traffic(self, server: ServerProcess, count: int) -> None:
        """``count`` requests per surface, one after another; every one must be served."""
        for n in range(count):
            assert self.chat(server, stream=n % 2 == 1).status_code == 200
            assert self.message(server).status_code == 200
            assert self.skill_md(server).status_code == 200


@pytest.fixture
def cast(member: Member, catalog_model: CatalogModel) -> Cast:
    return Cast(member, catalog_model)


@pytest.fixture
def start(
    hepgg_server: Callable[..., ServerProcess],
    fake: FakeUpstream,  # noqa: F811
    fake_anthropic: FakeAnthropic,  # noqa: F811
    relay: TcpRelay,
) -> Callable[..., ServerProcess]:
    def start_server(*, server: str, **env: str) -> ServerProcess:
        return hepgg_server(
            server=server,
            env=gateway_env(
                fake,
                DATABASE_URL=through(relay),
                ANTHROPIC_UPSTREAM_URL=fake_anthropic.url,
                DB_CONNECT_TIMEOUT="2",
                USAGE_FLUSH_SECONDS="0.2",
                USAGE_BATCH_SIZE="8",  # the backlog goes back in several transactions
                GATEWAY_CATALOG_CACHE_SECONDS="1",  # the route expires during the outage
                **env,
            ),
        )

    return start_server


def spilled(server: ServerProcess) -> int:
    """Records waiting in the server's spill files."""
    folder = Path(server.env["USAGE_SPILL_DIR"])
    return sum(len(p.read_bytes().splitlines()) for p in folder.glob("spill-*.jsonl"))


def spilled_bytes(server: ServerProcess) -> int:
    return sum(p.stat().st_size for p in Path(server.env["USAGE_SPILL_DIR"]).glob("spill-*.jsonl"))


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def assert_exact_usage(member: Member, requests: int) -> list[UsageEvent]:
    gateway = wait_for_events(requests, timeout=60, account=member.account, source="gateway")
    proxy = wait_for_events(requests, timeout=60, account=member.account, source="proxy")
    assert sum(e.input_tokens for e in gateway) == requests * PROMPT
    assert sum(e.output_tokens for e in gateway) == requests * len(WORDS)
    assert sum(e.input_tokens for e in proxy) == requests * INPUT
    assert sum(e.output_tokens for e in proxy) == requests * OUTPUT
    assert sum(e.cache_creation_input_tokens for e in proxy) == requests * CACHE_WRITE
    assert sum(e.cache_read_input_tokens for e in proxy) == requests * CACHE_READ
    assert all(e.status_code == 200 for e in gateway + proxy)
    return gateway + proxy


@pytest.mark.parametrize("server", ["uvicorn", "daphne"])
def test_an_outage_serves_warm_requests_refuses_cold_ones_quickly_and_loses_no_usage(
    start,
    relay: TcpRelay,
    cast: Cast,
    fake: FakeUpstream,  # noqa: F811
    server: str,
) -> None:
    hepgg = start(server=server)
    cast.traffic(hepgg, WARM)
    assert_exact_usage(cast.member, WARM)
    assert relay.connections > 0  # the server's database is behind the relay

    relay.cut()
    cut_at = timezone.now()
    time.sleep(1.2)  # past GATEWAY_CATALOG_CACHE_SECONDS: the route must come from the cache
    cast.traffic(hepgg, DURING)
    assert wait_until(lambda: spilled(hepgg) == 2 * DURING, timeout=20, what="usage spilled")
    per_event = spilled_bytes(hepgg) / (2 * DURING)
    print(f"\nspill: {per_event:.0f} bytes per event (as many /v1 as /anthropic events)")

    # Whatever needs the database answers 503 in its surface's shape, and quickly.
    response, took = timed(lambda: cast.chat(hepgg, key=cast.cold_key))
    assert response.status_code == 503 and took < 5
    assert response.json()["error"]["code"] == "database_unavailable"
    assert response.json()["error"]["type"] == "server_error"
    response, took = timed(lambda: cast.message(hepgg, token=cast.cold_token))
    assert response.status_code == 503 and took < 5
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "api_error"
    response, took = timed(
        lambda: httpx.get(
            f"{hepgg.base_url}/keys",
            headers={"Authorization": f"Bearer {cast.member.master_token}"},
            timeout=30,
        )
    )
    assert response.status_code == 503 and took < 5
    assert set(response.json()) == {"error"}
    response, took = timed(lambda: cast.skill_md(hepgg, "never-read-before"))
    assert response.status_code == 503 and took < 5
    ready, took = timed(lambda: httpx.get(f"{hepgg.base_url}/readyz", timeout=30))
    assert ready.status_code == 503 and took < 2
    assert ready.json()["failed"] == ["database"]
    assert len(fake.requests) == WARM + DURING  # the cold key never went upstream

    relay.restore()
    events = assert_exact_usage(cast.member, WARM + DURING)
    assert wait_until(lambda: httpx.get(f"{hepgg.base_url}/readyz").status_code == 200)
    folder = Path(hepgg.env["USAGE_SPILL_DIR"])
    assert wait_until(lambda: not list(folder.glob("spill-*")), what="the spill files drained")

    # The backlog went back oldest first, a few records per transaction (USAGE_BATCH_SIZE=8).
    backlog = sorted((e for e in events if e.occurred_at >= cut_at), key=lambda e: e.id)
    assert len(backlog) == 2 * DURING
    assert [e.occurred_at for e in backlog] == sorted(e.occurred_at for e in backlog)
    assert len({e.recorded_at for e in backlog}) >= 2 * DURING // 8
    # The server recovered by itself: a cold credential works again.
    assert cast.chat(hepgg, key=cast.cold_key).status_code == 200
    assert cast.message(hepgg, token=cast.cold_token).status_code == 200


def test_usage_spilled_by_a_server_killed_during_an_outage_is_written_by_the_next_one(
    start, relay: TcpRelay, cast: Cast
) -> None:
    first = start(server="uvicorn")
    cast.traffic(first, WARM)
    assert_exact_usage(cast.member, WARM)

    relay.cut()
    cast.traffic(first, DURING)
    assert wait_until(lambda: spilled(first) == 2 * DURING, timeout=20, what="usage spilled")
    first.stop(graceful=False)  # SIGKILL: nothing but the spill files survives

    relay.restore()
    start(server="uvicorn", USAGE_SPILL_DIR=first.env["USAGE_SPILL_DIR"])
    assert_exact_usage(cast.member, WARM + DURING)
    assert wait_until(lambda: not list(Path(first.env["USAGE_SPILL_DIR"]).glob("spill-*")))
