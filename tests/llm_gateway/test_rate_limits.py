"""Per-key limits set in the admin: requests and tokens per minute, a monthly budget; OpenAI's
``x-ratelimit-*`` headers; a 429 with ``Retry-After``; one count across processes via Redis."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from accounts.models import ApiKey
from catalog.models import CatalogModel, Price
from tests.llm_gateway.conftest import MESSAGES
from tests.llm_gateway.fake_upstream import FakeUpstream
from tests.servers import ServerProcess
from tests.waits import wait_for_events

pytestmark = pytest.mark.django_db(transaction=True)


def post(server: ServerProcess, key: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "cf-gpt-oss-20b", "messages": MESSAGES},
        timeout=30,
    )


def limit(**fields: object) -> None:
    ApiKey.objects.update(**fields)


def price_at_a_cent_a_token(model: CatalogModel) -> None:
    """$0.01 per token in and out, from the price table every cost comes from."""
    Price.objects.filter(pattern=model.slug).delete()
    Price.objects.create(
        pattern=model.slug,
        effective_from="2000-01-01",
        input=Decimal(10_000),
        output=Decimal(10_000),
    )


def test_a_key_over_its_requests_per_minute_gets_a_429_with_retry_after(
    gateway: ServerProcess, api_key: str, fake: FakeUpstream, member
) -> None:
    limit(requests_per_minute=2)

    first, second, third = post(gateway, api_key), post(gateway, api_key), post(gateway, api_key)

    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert third.status_code == 429
    assert third.json()["error"]["code"] == "rate_limit_exceeded"
    assert third.json()["error"]["type"] == "requests"
    assert 1 <= int(third.headers["retry-after"]) <= 30
    assert "x-should-retry" not in third.headers  # transient: the SDK's retry is welcome
    assert len(fake.requests) == 2
    # The refused request never reached the provider: two events, not three.
    events = wait_for_events(2, account=member.account)
    assert [e.status_code for e in events] == [200, 200]


def test_the_requests_limit_is_shared_by_processes_through_redis(
    requires_redis: str, start_gateway, api_key: str, fake: FakeUpstream, member
) -> None:
    limit(requests_per_minute=3)
    one, two = start_gateway(), start_gateway()

    statuses = [post(server, api_key).status_code for server in (one, two, one, two)]

    assert statuses == [200, 200, 200, 429]
    assert len(fake.requests) == 3
    events = wait_for_events(3, account=member.account)
    assert [e.status_code for e in events] == [200, 200, 200]


def test_a_key_over_its_tokens_per_minute_gets_a_429_after_the_request_that_used_them(
    gateway: ServerProcess, api_key: str, fake: FakeUpstream, member
) -> None:
    limit(tokens_per_minute=20)  # one request uses 14 + 6 tokens

    first = post(gateway, api_key)
    [event] = wait_for_events(1, account=member.account)
    second = post(gateway, api_key)

    assert first.status_code == 200
    assert event.input_tokens + event.output_tokens == 20
    assert first.headers["x-ratelimit-limit-tokens"] == "20"
    assert second.status_code == 429
    assert second.json()["error"]["type"] == "tokens"
    assert second.headers["x-ratelimit-remaining-tokens"] == "0"
    assert int(second.headers["retry-after"]) >= 1


def test_a_key_over_its_monthly_budget_gets_a_429_it_should_not_retry(
    gateway: ServerProcess, api_key: str, catalog_model: CatalogModel, member
) -> None:
    # $0.01 per token in and out: one request (14 + 6 tokens) costs $0.20.
    price_at_a_cent_a_token(catalog_model)
    limit(monthly_budget_usd=Decimal("0.15"))

    first = post(gateway, api_key)
    [event] = wait_for_events(1, account=member.account)
    second = post(gateway, api_key)

    assert first.status_code == 200
    assert event.cost_usd == Decimal("0.2")
    assert second.status_code == 429
    assert second.json()["error"] == {
        "message": "This API key has used its monthly budget of $0.15.",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
    assert second.headers["x-should-retry"] == "false"


def test_spend_recorded_before_a_restart_counts_against_the_budget(
    start_gateway, api_key: str, catalog_model: CatalogModel, member
) -> None:
    price_at_a_cent_a_token(catalog_model)
    limit(monthly_budget_usd=Decimal("0.15"))
    first_server = start_gateway()
    assert post(first_server, api_key).status_code == 200
    first_server.stop()
    [event] = wait_for_events(1, account=member.account)
    assert event.cost_usd == Decimal("0.2")
    if first_server.env.get("REDIS_URL"):
        from hepgg.lib.redis import sync_redis

        public_id = ApiKey.objects.get().public_id
        for key in sync_redis().scan_iter(f"hepgg:rl:{{{public_id}}}*"):
            sync_redis().delete(key)  # a flushed Redis: the spend must come from the database

    assert post(start_gateway(), api_key).status_code == 429
