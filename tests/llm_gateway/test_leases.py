"""The lease bookkeeping, in process, against a private real ``redis-server`` (so the test can
count the scripts it ran, and stop and start it): warm requests make no round trip, slices never
admit beyond the bucket, idle slices go back, budgets hold near the crossing, and what happens
while Redis is away."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from hepgg.lib import leases, ratelimit
from hepgg.lib.redis import async_redis
from tests.conftest import IN_CI
from tests.servers import free_port

PERIOD = "2026-05"
T = TypeVar("T")


@dataclass
class PrivateRedis:
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    _client: redis.Redis | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.workdir)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client().ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the private redis-server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis(port=self.port)
        return self._client

    def scripts_run(self) -> int:
        stats = self.client().info("commandstats")
        return sum(
            stats.get(name, {}).get("calls", 0) for name in ("cmdstat_evalsha", "cmdstat_eval")
        )


@pytest.fixture
def private_redis(settings) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is missing: CI must run the lease tests")
        pytest.skip("needs redis-server")
    with tempfile.TemporaryDirectory(prefix="hepgg-redis-") as workdir:
        server = PrivateRedis(free_port(), Path(workdir))
        server.start()
        settings.REDIS_URL = server.url
        ratelimit.clear_local()
        yield server
        ratelimit.clear_local()
        server.stop()


def keys(subject: str) -> list[str]:
    base = f"hepgg:rl:{{{subject}}}"
    return [f"{base}:req", f"{base}:tok", f"{base}:spend:{PERIOD}"]


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, then stop the background fetches and close the loop's Redis client."""

    async def main() -> T:
        try:
            return await coro
        finally:
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            await async_redis().aclose()

    return asyncio.run(main())


def no_charges() -> tuple[int, float]:
    return 0, 0.0


def ignore(tokens: int, cost: float) -> None:
    pass


async def allowed(table: leases.LeaseTable, subject: str, quota: leases.Quota) -> bool:
    reason, *_ = await table.acquire(keys(subject), quota, no_charges, ignore)
    return not reason


def test_warm_requests_spend_the_lease_without_a_round_trip_each(
    private_redis: PrivateRedis,
) -> None:
    subject, quota = str(uuid.uuid4()), leases.Quota(rpm=60_000, tpm=0, budget=0.0)
    table = leases.LeaseTable()

    async def scenario() -> int:
        count = 0
        for _ in range(500):
            count += await allowed(table, subject, quota)
            await asyncio.sleep(0)  # let a prefetch run, as a server's loop would
        return count

    admitted = run(scenario())

    assert admitted == 500
    # Slices double up to half a second of the rate (500): a handful of fetches (~10 on a quiet
    # machine; slower loops double less), not one per request.
    assert private_redis.scripts_run() <= 50


def test_a_burst_of_concurrent_requests_on_a_cold_key_is_admitted_up_to_the_burst(
    private_redis: PrivateRedis,
) -> None:
    table = leases.LeaseTable()
    roomy, tight = str(uuid.uuid4()), str(uuid.uuid4())

    async def burst_of(subject: str, rpm: int) -> int:
        quota = leases.Quota(rpm=rpm, tpm=0, budget=0.0)
        results = await asyncio.gather(*(allowed(table, subject, quota) for _ in range(50)))
        return sum(results)

    async def scenario() -> tuple[int, int, float]:
        roomy_admitted = await burst_of(roomy, 60_000)
        start = time.monotonic()
        return roomy_admitted, await burst_of(tight, 600), time.monotonic() - start

    roomy_admitted, tight_admitted, seconds = run(scenario())

    # One slice of 1 for 50 waiters would turn most of them away while the bucket holds 600.
    assert roomy_admitted == 50
    # At 600 rpm: the burst of 6, and whatever refilled (10 a second) while the 50 were decided.
    assert leases.burst(600) <= tight_admitted <= leases.burst(600) + 10 * seconds


def test_four_processes_never_admit_more_than_the_burst_plus_the_refill(
    private_redis: PrivateRedis,
) -> None:
    subject, quota = str(uuid.uuid4()), leases.Quota(rpm=600, tpm=0, budget=0.0)
    tables = [leases.LeaseTable() for _ in range(4)]
    seconds = 3.0

    async def hammer(table: leases.LeaseTable, until: float) -> int:
        count = 0
        while time.monotonic() < until:
            count += await allowed(table, subject, quota)
            await asyncio.sleep(0.005)
        return count

    async def scenario() -> tuple[int, float]:
        start = time.monotonic()
        counts = await asyncio.gather(*(hammer(t, start + seconds) for t in tables))
        return sum(counts), time.monotonic() - start

    admitted, elapsed = run(scenario())

    assert admitted <= leases.burst(600) + 600 * elapsed / 60
    assert admitted >= 600 * seconds / 60  # and nothing stuck: the refill was all spent


def test_a_slice_left_idle_goes_back_to_the_shared_bucket(
    private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(leases, "IDLE_RETURN_SECONDS", 0.2)
    subject, quota = str(uuid.uuid4()), leases.Quota(rpm=60, tpm=0, budget=0.0)  # 1 a second
    table = leases.LeaseTable()

    async def scenario() -> float:
        assert await allowed(table, subject, quota)  # takes 1, prefetches 1: 4 of 6 left
        await asyncio.sleep(0.5)  # the prefetched one is given back after 0.2 s idle
        bucket = private_redis.client().hgetall(keys(subject)[0])
        return float(bucket[b"v"]) + (time.time() - float(bucket[b"t"])) * 60 / 60

    # Without the give-back the bucket would hold 4 + 0.5 refilled.
    assert run(scenario()) >= 5.2


def test_near_the_budget_two_processes_overspend_by_at_most_the_requests_in_flight(
    private_redis: PrivateRedis,
) -> None:
    subject, quota = str(uuid.uuid4()), leases.Quota(rpm=0, tpm=0, budget=1.0)
    private_redis.client().set(keys(subject)[2], "0")
    cost, in_flight_per_process = 0.01, 4

    async def process(table: leases.LeaseTable) -> None:
        pending = [0.0]  # this process's batch, sent with its next read (no flusher: worst case)

        def take() -> tuple[int, float]:
            charges, pending[0] = pending[0], 0.0
            return 0, charges

        def put_back(tokens: int, charges: float) -> None:
            pending[0] += charges

        async def one_client() -> None:
            for _ in range(200):
                reason, *_ = await table.acquire(keys(subject), quota, take, put_back)
                if reason:
                    return
                await asyncio.sleep(0.02)  # the upstream answers
                pending[0] += cost
                table.note_charge(keys(subject), 0, cost)

        await asyncio.gather(*(one_client() for _ in range(in_flight_per_process)))
        table_take = take()[1]
        private_redis.client().incrbyfloat(keys(subject)[2], table_take)  # the last batch

    async def scenario() -> None:
        await asyncio.gather(process(leases.LeaseTable()), process(leases.LeaseTable()))

    run(scenario())

    spent = float(private_redis.client().get(keys(subject)[2]))
    assert spent >= 1.0
    # In flight at the crossing: each process's clients, plus a batch waiting in each process.
    assert spent - 1.0 <= cost * 2 * in_flight_per_process * 2 + 1e-9


def test_while_redis_is_away_a_process_spends_its_lease_then_counts_alone_then_shares_again(
    private_redis: PrivateRedis,
) -> None:
    subject, limits = str(uuid.uuid4()), ratelimit.Limits(requests_per_minute=60)  # burst 6

    async def admitted_until_refused(most: int) -> int:
        count = 0
        for _ in range(most):
            decision = await ratelimit.acquire(subject, limits, period=PERIOD)
            if not decision.allowed:
                assert decision.reason == "requests" and decision.retry_after > 0
                return count
            count += 1
            await asyncio.sleep(0)
        return count

    async def scenario() -> tuple[int, int, float]:
        assert await admitted_until_refused(2) == 2  # shared: the lease now holds one more
        await asyncio.sleep(0.05)
        private_redis.stop()
        alone = await admitted_until_refused(20)
        private_redis.start()  # empty again, like a restarted Redis without persistence
        deadline = time.monotonic() + 10
        while not private_redis.client().exists(keys(subject)[0]):
            if time.monotonic() > deadline:
                raise AssertionError("shared counting did not resume within 10 s")
            await ratelimit.acquire(subject, limits, period=PERIOD)
            await asyncio.sleep(0.1)
        after = await admitted_until_refused(20)
        bucket = private_redis.client().hgetall(keys(subject)[0])
        return alone, after, float(bucket[b"v"])

    alone, after, shared_level = run(scenario())

    # The one request left in the lease, then this process's own bucket of 6 (a second's refill
    # at most adds one).
    assert 7 <= alone <= 8
    assert after >= 1  # shared again: the fresh shared bucket admits, and records it
    assert shared_level < leases.burst(60)
