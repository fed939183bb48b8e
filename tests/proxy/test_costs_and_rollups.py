"""A proxied message is priced with its 5m/1h cache split, and without a Celery worker the web
process rolls it up on its own timer."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal

import pytest

from tests.proxy.conftest import MODEL, FakeAnthropic, Proxy
from tests.waits import wait_for_events
from usage.models import UsageBucket

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_proxied_message_costs_its_cache_split_at_todays_price(
    start_proxy: Callable[..., Proxy], fake_anthropic: FakeAnthropic, prices
) -> None:
    proxy = start_proxy()
    proxy.client().messages.create(
        model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "Hi"}]
    )
    [event] = wait_for_events(1)
    # claude-sonnet-5: $2 in, $10 out, $2.50 5m write, $4 1h write, $0.20 read per Mtok; the
    # fake reports 25 in, 15 out, writes split 4 (5m) / 6 (1h), 5 reads.
    assert MODEL == "claude-sonnet-5"
    expected = (25 * 2 + 15 * 10 + 4 * Decimal("2.5") + 6 * 4 + 5 * Decimal("0.2")) / 10**6
    assert event.cost_usd == expected


def test_without_a_worker_the_web_process_rolls_up_on_a_timer(
    start_proxy: Callable[..., Proxy], fake_anthropic: FakeAnthropic, prices
) -> None:
    proxy = start_proxy(
        env={
            "USAGE_ROLLUP_IN_WEB": "true",
            "USAGE_ROLLUP_SECONDS": "1",
            "USAGE_ROLLUP_SETTLE_SECONDS": "0",
        }
    )
    proxy.client().messages.create(
        model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "Hi"}]
    )
    wait_for_events(1)
    deadline = time.monotonic() + 30
    while not UsageBucket.objects.filter(period="day", model=MODEL).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no rollup within 30 s; server log:\n{proxy.server.logs()}")
        time.sleep(0.2)
    day = UsageBucket.objects.get(period="day", model=MODEL)
    assert (day.requests, day.output_tokens, day.source) == (1, 15, "proxy")
