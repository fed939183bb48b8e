"""The plain helpers under the gateway: token buckets (in Redis and in process memory) and the
offline tokenizer."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from hepgg.lib import ratelimit, tokencount
from hepgg.lib.redis import sync_redis


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest, settings) -> str:
    if request.param == "redis":
        request.getfixturevalue("requires_redis")
    else:
        settings.REDIS_URL = ""
    return request.param


def run(coro):
    return asyncio.run(coro)


def test_the_request_bucket_allows_its_limit_then_refuses_with_a_retry_time(backend: str) -> None:
    subject, limits = str(uuid.uuid4()), ratelimit.Limits(requests_per_minute=3)

    async def scenario() -> list[ratelimit.Decision]:
        return [await ratelimit.acquire(subject, limits, period="2026-01") for _ in range(4)]

    decisions = run(scenario())

    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.requests_remaining for d in decisions[:3]] == [2, 1, 0]
    assert decisions[3].reason == "requests"
    assert 0 < decisions[3].retry_after <= 20  # one request refills in 60 s / 3


def test_charged_tokens_block_the_next_request_until_they_refill(backend: str) -> None:
    subject, limits = str(uuid.uuid4()), ratelimit.Limits(tokens_per_minute=100)

    async def scenario() -> tuple[ratelimit.Decision, ratelimit.Decision]:
        first = await ratelimit.acquire(subject, limits, period="2026-01")
        await ratelimit.charge(subject, limits, period="2026-01", tokens=160, cost=0)
        return first, await ratelimit.acquire(subject, limits, period="2026-01")

    first, second = run(scenario())

    assert first.allowed and first.tokens_remaining == 100
    assert not second.allowed and second.reason == "tokens"
    assert second.retry_after > 30  # a debt of 60 tokens takes ~36 s to repay at 100/min


def test_a_charge_reaches_redis_for_other_processes_within_the_flush_interval(
    requires_redis: str,
) -> None:
    subject, limits = str(uuid.uuid4()), ratelimit.Limits(tokens_per_minute=100)

    async def scenario() -> None:
        await ratelimit.acquire(subject, limits, period="2026-01")
        await ratelimit.charge(subject, limits, period="2026-01", tokens=70, cost=0)
        await asyncio.sleep(ratelimit.CHARGE_FLUSH_SECONDS * 5)  # no acquire carries it here

    run(scenario())
    # What another process finds in Redis: the bucket already holds the 70-token debt.
    tokens_key = f"hepgg:rl:{{{subject}}}:tok"
    level = float(sync_redis().hget(tokens_key, "v"))
    assert 29 <= level <= 31


def test_the_budget_is_unknown_until_seeded_then_refuses_once_spent(backend: str) -> None:
    subject, limits = str(uuid.uuid4()), ratelimit.Limits(monthly_budget_usd=1.0)

    async def scenario() -> list[str]:
        reasons = [(await ratelimit.acquire(subject, limits, period="2026-02")).reason]
        await ratelimit.seed_spend(subject, period="2026-02", spent=0.5)
        reasons.append((await ratelimit.acquire(subject, limits, period="2026-02")).reason)
        await ratelimit.charge(subject, limits, period="2026-02", tokens=0, cost=0.6)
        reasons.append((await ratelimit.acquire(subject, limits, period="2026-02")).reason)
        reasons.append((await ratelimit.acquire(subject, limits, period="2026-03")).reason)
        return reasons

    assert run(scenario()) == ["budget_unknown", "", "budget", "budget_unknown"]


def test_the_tokenizer_counts_with_o200k_offline() -> None:
    assert tokencount.count("Hello, world! How are you today?") == 9
    assert tokencount.encoder_name() == "o200k_base"


def test_a_chat_prompt_counts_its_text_and_framing() -> None:
    body = {"messages": [{"role": "user", "content": "Hello, world! How are you today?"}]}

    # "user" (1) + newline (1) + the sentence (9) + 3 per message + 3 to prime the reply
    assert run(tokencount.acount_chat_prompt(body)) == 1 + 1 + 9 + 3 + 3
