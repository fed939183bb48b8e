"""The gateway's cast: a fake provider on loopback, hepgg in a subprocess pointed at it, an API key
for the seeded ``cf-gpt-oss-20b``, and the official OpenAI client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from accounts.services import api_key_mint
from catalog.models import CatalogModel
from hepgg.lib import ratelimit
from tests.conftest import Member
from tests.llm_gateway.fake_upstream import CF_ACCOUNT, CF_TOKEN, OPENAI_KEY, FakeUpstream
from tests.servers import ServerProcess


@pytest.fixture(scope="session")
def _fake_server() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(_fake_server: FakeUpstream) -> Iterator[FakeUpstream]:
    _fake_server.reset()
    yield _fake_server
    _fake_server.reset()


@pytest.fixture(autouse=True)
def _fresh_limits() -> Iterator[None]:
    ratelimit.clear_local()
    yield
    ratelimit.clear_local()


def gateway_env(fake: FakeUpstream, **extra: str) -> dict[str, str]:
    return {
        "CLOUDFLARE_API_BASE": f"{fake.url}/client/v4",
        "CLOUDFLARE_ACCOUNT_ID": CF_ACCOUNT,
        "CLOUDFLARE_API_TOKEN": CF_TOKEN,
        "HEPGG_UPSTREAM_KEY_FAKE_OPENAI": OPENAI_KEY,
        "GATEWAY_UPSTREAM_READ_TIMEOUT": "5",
        **extra,
    }


@pytest.fixture
def start_gateway(
    hepgg_server: Callable[..., ServerProcess], fake: FakeUpstream, catalog_model: CatalogModel
) -> Callable[..., ServerProcess]:
    """Factory: hepgg on a free port, its Cloudflare provider pointed at the fake."""

    def start(*, server: str = "daphne", **env: str) -> ServerProcess:
        return hepgg_server(env=gateway_env(fake, **env), server=server)

    return start


@pytest.fixture
def gateway(start_gateway: Callable[..., ServerProcess]) -> ServerProcess:
    return start_gateway()


@pytest.fixture
def api_key(member: Member, catalog_model: CatalogModel) -> str:
    _, secret = api_key_mint(account=member.account, model=catalog_model.slug, name="tests")
    return secret


_clients: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_sdk_clients() -> Iterator[None]:
    """Close every client ``sdk`` made: an unclosed one leaves a socket for the garbage
    collector, whose ResourceWarning then fails whichever test it lands in."""
    yield
    while _clients:
        _clients.pop().close()


def sdk(server: ServerProcess, key: str, **kwargs: Any) -> openai.OpenAI:
    """The official client as a user would configure it (retries off, to see each answer)."""
    client = openai.OpenAI(
        base_url=f"{server.base_url}/v1", api_key=key, max_retries=0, timeout=20, **kwargs
    )
    _clients.append(client)
    return client


MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello."},
]
