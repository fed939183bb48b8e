"""Failed authentication from one address is slowed, then refused with 429 and Retry-After, per
credential type and on every surface, without touching other clients
(``hepgg.lib.authfailures``)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from django.conf import settings

from accounts.services import api_key_mint
from catalog.models import CatalogModel
from hepgg.lib import authfailures
from hepgg.lib.redis import sync_redis
from tests.conftest import Member
from tests.servers import ServerProcess

LIMITS = {
    "AUTH_FAILURES_SLOW_AFTER": "2",
    "AUTH_FAILURES_LIMIT": "4",
    "AUTH_FAILURES_WINDOW_SECONDS": "3600",
    "AUTH_FAILURES_MAX_DELAY": "0.3",
}


@dataclass
class Surface:
    kind: str
    method: str
    path: Callable[[str], str]
    header: Callable[[str], dict[str, str]]
    wrong: Callable[[], str]
    refusal: int  # the answer to one wrong credential
    slowed: bool  # async surfaces wait; sync ones only count

    def call(self, http: httpx.Client, credential: str) -> httpx.Response:
        return http.request(
            self.method,
            self.path(credential),
            headers=self.header(credential),
            content=b"{}",
        )


def _bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}", "content-type": "application/json"}


SURFACES = [
    Surface(
        "api_key",
        "GET",
        lambda _: "/v1/models",
        _bearer,
        lambda: "sk-hyd-" + secrets.token_urlsafe(32),
        401,
        True,
    ),
    Surface(
        "proxy",
        "POST",
        lambda c: f"/anthropic/{c}/v1/messages",
        lambda _: {},
        lambda: "pt_" + secrets.token_urlsafe(32),
        401,
        True,
    ),
    Surface(
        "master",
        "GET",
        lambda _: "/me",
        _bearer,
        lambda: "hyd_" + secrets.token_urlsafe(32),
        401,
        False,
    ),
    Surface(
        "skills",
        "POST",
        lambda c: f"/skills/k/{c}/import",
        lambda _: {"content-type": "application/json"},
        lambda: secrets.token_hex(24),
        404,
        False,
    ),
]


def clear_of_window_end(window: int, margin: float = 60) -> None:
    """Counts start again at each fixed window's end: a test that counts must not straddle one
    (a full run once failed at 13:30:00 UTC, the end of a 600 s window). Waits it out if near."""
    left = window - time.time() % window
    if left < margin:
        time.sleep(left + 0.1)


@pytest.fixture(autouse=True)
def _fresh_counters() -> Iterator[None]:
    """Counters outlive a server in Redis: each test starts from none (this run's Redis DB)."""
    clear_of_window_end(int(LIMITS["AUTH_FAILURES_WINDOW_SECONDS"]))

    def clear() -> None:
        if settings.REDIS_URL:
            client = sync_redis()
            for key in client.scan_iter("hepgg:authfail:*"):
                client.delete(key)

    clear()
    yield
    clear()


@pytest.fixture
def limited(hepgg_server, catalog_model: CatalogModel) -> ServerProcess:
    return hepgg_server(env=LIMITS)


@pytest.fixture
def elsewhere(limited: ServerProcess) -> Iterator[httpx.Client]:
    """A client on another loopback address (127.0.0.2)."""
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=limited.base_url, transport=transport, timeout=20) as http:
        yield http


def _assert_too_many(response: httpx.Response, surface: Surface) -> None:
    assert response.status_code == 429, (surface.kind, response.status_code, response.text)
    assert int(response.headers["retry-after"]) > 0
    body = response.json()
    if surface.kind == "api_key":
        assert body["error"]["code"] == "too_many_failed_authentications"
    elif surface.kind == "proxy":
        assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    elif surface.kind == "master":
        assert set(body) == {"error"} and "Too many failed" in body["error"]
    else:
        assert body["errors"][0]["message"].startswith("too many wrong keys")


@pytest.mark.parametrize("surface", SURFACES, ids=lambda s: s.kind)
def test_repeated_failures_are_slowed_then_refused_without_touching_other_clients(
    limited: ServerProcess,
    elsewhere: httpx.Client,
    member: Member,
    catalog_model: CatalogModel,
    surface: Surface,
) -> None:
    with httpx.Client(base_url=limited.base_url, timeout=20) as http:
        for attempt in range(1, 5):
            started = time.monotonic()
            response = surface.call(http, surface.wrong())
            elapsed = time.monotonic() - started
            assert response.status_code == surface.refusal, (attempt, response.text)
            if surface.slowed and attempt > 2:
                assert elapsed >= 0.2, f"failure {attempt} was not slowed ({elapsed:.3f}s)"
        _assert_too_many(surface.call(http, surface.wrong()), surface)
        _assert_too_many(surface.call(http, surface.wrong()), surface)  # and it stays refused

        # Another credential type from the same address is not limited.
        other = "/me" if surface.kind != "master" else "/models"
        assert http.get(other, headers=_bearer(member.master_token)).status_code == 200

    # Another client: its own failures still get the plain refusal, its credentials work.
    assert surface.call(elsewhere, surface.wrong()).status_code == surface.refusal
    _, key = api_key_mint(account=member.account, model=catalog_model.slug)
    assert elsewhere.get("/v1/models", headers=_bearer(key)).status_code == 200
    assert elsewhere.get("/me", headers=_bearer(member.master_token)).status_code == 200


def test_counters_are_shared_by_every_process(
    hepgg_server, requires_redis: str, catalog_model: CatalogModel
) -> None:
    first, second = hepgg_server(env=LIMITS), hepgg_server(env=LIMITS)
    wrong = SURFACES[0].wrong
    with httpx.Client(timeout=20) as http:
        for server in (first, second, first, second):
            response = http.get(f"{server.base_url}/v1/models", headers=_bearer(wrong()))
            assert response.status_code == 401
        last = http.get(f"{second.base_url}/v1/models", headers=_bearer(wrong()))
    _assert_too_many(last, SURFACES[0])


def test_the_per_process_counters_are_bounded() -> None:
    local = authfailures._Local()
    for n in range(authfailures.MAX_TRACKED * 2):
        local.incr(f"api_key:10.0.{n // 256}.{n % 256}", 1)
        local.block(f"api_key:10.1.{n // 256}.{n % 256}", 60)
    assert len(local.counts) == len(local.blocked) == authfailures.MAX_TRACKED


def test_unknown_tokens_cannot_fill_the_in_process_credential_cache(db: None) -> None:
    # Without Redis every resolve of an unknown well-formed token caches its miss in process
    # memory; before the bound, entries that had not expired were all kept.
    from accounts.tokens import cache_key, hash_secret
    from hepgg.lib import sharedcache

    copies = sharedcache._Copies()
    generation = copies.check(redis_role=False)
    for _ in range(sharedcache._MAX_COPIES + 20_000):
        key = cache_key(hash_secret(secrets.token_hex(24)))
        copies.keep(key, {"missing": True}, 300, generation)
    assert len(copies.entries) <= sharedcache._MAX_COPIES


def test_wrong_capability_keys_on_reads_are_slowed_then_not_even_looked_up(
    limited: ServerProcess, elsewhere: httpx.Client, member: Member
) -> None:
    from accounts.services import skills_key_issue

    _, key = skills_key_issue(account=member.account)
    with httpx.Client(base_url=limited.base_url, timeout=20) as http:
        for attempt in range(1, 6):
            started = time.monotonic()
            response = http.get(f"/skills/k/{secrets.token_hex(24)}/index.json")
            assert response.status_code == 404
            if attempt in (3, 4):  # past SLOW_AFTER, up to LIMIT
                assert time.monotonic() - started >= 0.2, f"failure {attempt} was not slowed"
        # Blocked: this address's reads under any key are the site's one 404 for a while.
        assert http.get(f"/skills/k/{key}/index.json").status_code == 404
    assert elsewhere.get(f"/skills/k/{key}/index.json").status_code == 200
