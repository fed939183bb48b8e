"""The cost of a key's limits on one request, in process: ``ratelimit.acquire`` then
``ratelimit.charge`` for a key with rpm, tpm and a monthly budget, warm, against a real Redis.

    .venv/bin/python bench/limits_bench.py --redis-url redis://127.0.0.1:6379/15

It isolates what ``run_hepgg.sh`` measures end to end (hepgg vs hepgg+limits): with leases a
warm request makes no Redis round trip, so the figure is a few microseconds of Python; the
version before leases paid a round trip per request (about 150 µs on a quiet machine).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


async def measure(requests: int, rounds: int) -> tuple[list[float], list[float]]:
    """Microseconds per request, wall clock and this process's CPU, one value per round."""
    from hepgg.lib import ratelimit

    subject, period = f"bench-{uuid.uuid4()}", "2026-01"
    limits = ratelimit.Limits(10_000_000, 1_000_000_000, 1_000_000.0)
    await ratelimit.seed_spend(subject, period=period, spent=0.0)
    for _ in range(200):  # warm: the lease has grown, the view is fresh
        await ratelimit.acquire(subject, limits, period=period)
        await asyncio.sleep(0)
    wall, cpu = [], []
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(requests):
            decision = await ratelimit.acquire(subject, limits, period=period)
            if not decision.allowed:
                raise RuntimeError(f"refused: {decision}")
            await ratelimit.charge(subject, limits, period=period, tokens=40, cost=0.0001)
            await asyncio.sleep(0)  # a server's request yields to the loop (its I/O)
        wall.append((time.perf_counter() - start) / requests * 1e6)
        cpu.append((time.process_time() - start_cpu) / requests * 1e6)
    await ratelimit.flush_charges()
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    os.environ["REDIS_URL"] = args.redis_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hepgg.settings")
    import django

    django.setup()
    wall, cpu = asyncio.run(measure(args.requests, args.rounds))
    print(
        f"acquire + charge, warm, rpm + tpm + budget: median {statistics.median(wall):.1f} µs "
        f"wall, {statistics.median(cpu):.1f} µs CPU per request, {args.rounds} rounds of "
        f"{args.requests} (load average {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
