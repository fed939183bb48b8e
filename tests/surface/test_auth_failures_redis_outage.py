"""Failed-authentication limits through a Redis outage (``hepgg.lib.authfailures``): with Redis
stopped, failures are counted in each process, so slowing and the 429 keep working; no answer is
a 5xx and none waits for Redis; once Redis is back, the counters are kept in Redis again.

A private ``redis-server`` that the test really stops and starts (``tests/test_redis_outage``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis

from accounts.services import api_key_mint
from catalog.models import CatalogModel
from tests.conftest import Member
from tests.servers import ServerProcess
from tests.surface.test_auth_failures import clear_of_window_end
from tests.test_redis_outage import BOUND, PrivateRedis, private_redis, wait_for_recovery

__all__ = ["private_redis"]  # the fixture, used by name

pytestmark = pytest.mark.django_db(transaction=True)

LIMITS = {
    "AUTH_FAILURES_SLOW_AFTER": "2",
    "AUTH_FAILURES_LIMIT": "4",
    "AUTH_FAILURES_WINDOW_SECONDS": "3600",
    "AUTH_FAILURES_MAX_DELAY": "0.3",
}


def _client(server: ServerProcess, address: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=server.base_url, transport=transport, timeout=20)


def _wrong_api_key(http: httpx.Client) -> httpx.Response:
    wrong = "sk-hyd-" + secrets.token_urlsafe(32)
    return http.get("/v1/models", headers={"authorization": f"Bearer {wrong}"})


def _wrong_master(http: httpx.Client) -> httpx.Response:
    wrong = "hyd_" + secrets.token_urlsafe(32)
    return http.get("/me", headers={"authorization": f"Bearer {wrong}"})


def _wrong_proxy_token(http: httpx.Client) -> httpx.Response:
    return http.post(f"/anthropic/pt_{secrets.token_urlsafe(32)}/v1/messages", content=b"{}")


def _limited(call: Callable[[httpx.Client], httpx.Response], http: httpx.Client, *, slowed: bool):
    """Four refusals (the last two slowed on async surfaces), then 429s; none over ``BOUND``."""
    answers = []
    for attempt in range(1, 7):
        started = time.monotonic()
        response = call(http)
        elapsed = time.monotonic() - started
        assert response.status_code < 500, response.text
        assert elapsed < BOUND, f"attempt {attempt} took {elapsed:.2f} s"
        if attempt <= 4:
            assert response.status_code in (401, 404), (attempt, response.text)
            if slowed and attempt > 2:
                assert elapsed >= 0.2, f"failure {attempt} was not slowed ({elapsed:.3f} s)"
        else:
            assert response.status_code == 429, (attempt, response.text)
            assert int(response.headers["retry-after"]) > 0
        answers.append(response)
    return answers


def _counted_in(server: PrivateRedis, kind: str, address: str) -> int:
    client = redis.Redis.from_url(server.url)
    try:
        keys = list(client.scan_iter(f"hepgg:authfail:{kind}:{address}:*"))
        return sum(int(client.get(key) or 0) for key in keys)
    finally:
        client.close()


@pytest.fixture
def server(
    hepgg_server: Callable[..., ServerProcess], private_redis: PrivateRedis
) -> Iterator[ServerProcess]:
    yield hepgg_server(server="uvicorn", env={**LIMITS, "REDIS_URL": private_redis.url})


def test_failed_auth_limits_hold_per_process_through_a_redis_outage_and_recover(
    server: ServerProcess,
    private_redis: PrivateRedis,
    member: Member,
    catalog_model: CatalogModel,
) -> None:
    _, key = api_key_mint(account=member.account, model=catalog_model.slug)
    good = {"authorization": f"Bearer {key}"}
    clear_of_window_end(int(LIMITS["AUTH_FAILURES_WINDOW_SECONDS"]), margin=120)

    # Redis up: failures are counted there.
    with _client(server, "127.0.0.2") as before:
        assert _wrong_api_key(before).status_code == 401
        assert _wrong_api_key(before).status_code == 401
    assert _counted_in(private_redis, "api_key", "127.0.0.2") == 2

    private_redis.stop()

    # Redis down: the same limits, counted in the process, on async and sync surfaces.
    with _client(server, "127.0.0.3") as http:
        v1 = _limited(_wrong_api_key, http, slowed=True)
        assert v1[-1].json()["error"]["code"] == "too_many_failed_authentications"
        proxy = _limited(_wrong_proxy_token, http, slowed=True)
        assert proxy[-1].json()["error"]["type"] == "rate_limit_error"
        master = _limited(_wrong_master, http, slowed=False)
        assert "Too many failed" in master[-1].json()["error"]
        # Refused before the look-up now: even a good key, until the window ends.
        assert http.get("/v1/models", headers=good).status_code == 429
    # Another client is not limited at all.
    with _client(server, "127.0.0.4") as other:
        assert _wrong_api_key(other).status_code == 401
        assert other.get("/v1/models", headers=good).status_code == 200
        assert (
            other.get("/me", headers={"authorization": f"Bearer {member.master_token}"}).status_code
            == 200
        )

    private_redis.start()
    wait_for_recovery(server)

    # Redis back: failures are counted in Redis again (a fresh client's limit still applies).
    with _client(server, "127.0.0.5") as after:
        _limited(_wrong_api_key, after, slowed=True)
        assert after.get("/v1/models", headers=good).status_code == 429  # limited by address
    assert _counted_in(private_redis, "api_key", "127.0.0.5") >= 5
    assert _counted_in(private_redis, "api_key", "127.0.0.2") == 2  # kept through the outage
    assert "Traceback" not in server.logs()
