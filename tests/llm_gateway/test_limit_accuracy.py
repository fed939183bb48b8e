"""The judge of the lease-based limiter: 4 uvicorn workers sharing the real Redis, a key with
600 requests per minute, 60 seconds of load well above it. It takes a minute on purpose (the
issue asks for a real minute); it is marked ``slow`` and runs in CI."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from accounts.models import ApiKey
from hepgg.lib import leases
from tests.llm_gateway.conftest import MESSAGES, gateway_env
from tests.llm_gateway.fake_upstream import FakeUpstream

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

RPM = 600
SECONDS = 60.0
OFFERED_PER_SECOND = 30  # three times the limit
MAX_IN_FLIGHT = 50


async def offer_load(url: str, key: str) -> tuple[int, int, int, float]:
    """Send ``OFFERED_PER_SECOND`` requests a second for ``SECONDS`` (open loop): the 2xx, the
    429s, anything else, and the seconds from the first send to the last 2xx received."""
    counts = {"ok": 0, "limited": 0, "other": 0}
    last_ok = 0.0
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        start = time.monotonic()

        async def one() -> None:
            nonlocal last_ok
            async with gate:
                if time.monotonic() - start >= SECONDS:
                    return  # queued here past the minute (a slow machine): never sent
                try:
                    response = await client.post(
                        f"{url}/v1/chat/completions",
                        headers={"Authorization": f"Bearer {key}"},
                        json={"model": "cf-gpt-oss-20b", "messages": MESSAGES},
                    )
                except httpx.HTTPError:
                    counts["other"] += 1
                    return
            if response.status_code == 200:
                counts["ok"] += 1
                last_ok = max(last_ok, time.monotonic() - start)
            elif response.status_code == 429:
                counts["limited"] += 1
            else:
                counts["other"] += 1

        tasks = []
        sent = 0
        while (elapsed := time.monotonic() - start) < SECONDS:
            due = int(elapsed * OFFERED_PER_SECOND) + 1
            while sent < due:
                tasks.append(asyncio.create_task(one()))
                sent += 1
            await asyncio.sleep(1 / OFFERED_PER_SECOND)
        await asyncio.gather(*tasks)
    return counts["ok"], counts["limited"], counts["other"], last_ok


def test_four_workers_sharing_redis_admit_600_rpm_for_a_minute_within_the_burst(
    requires_redis: str, hepgg_server, fake: FakeUpstream, api_key: str, catalog_model
) -> None:
    ApiKey.objects.update(requests_per_minute=RPM)
    server = hepgg_server(env=gateway_env(fake), server="uvicorn", workers=4)

    admitted, limited, other, last_ok = asyncio.run(offer_load(server.base_url, api_key))

    # The stated bound for a fresh key: burst + rpm * T / 60, T from the first send to the last
    # admission: a little over 60 s, since the requests sent last are still being answered (on a
    # loaded machine, seconds over: the refill goes on meanwhile).
    window = max(SECONDS, last_ok)
    bound = leases.burst(RPM) + RPM * window / 60
    print(f"admitted {admitted}, refused {limited}, other {other}, in {window:.2f} s")
    print(f"bound {bound:.1f}")
    assert other == 0
    assert limited > 600  # the load was well above the limit throughout
    assert RPM <= admitted <= bound
    assert admitted <= RPM * window / 60 * 1.01 + 1  # the slack: 1% of the window's allowance
