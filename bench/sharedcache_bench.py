"""What a warm shared-cache lookup costs per request, and what the invalidation marker adds.

    .venv/bin/python bench/sharedcache_bench.py                     # embedded: no Redis
    REDIS_URL=redis://127.0.0.1:6379/15 .venv/bin/python bench/sharedcache_bench.py

Prints CPU µs per call (process time, so that a busy machine does not inflate it; median of 5
runs of N calls) for: the marker's ``stat``, a warm ``afetch``
(the hot path's credential and skills lookup: the process's copy, checked against the marker),
and, with Redis, the Redis ``GET`` that the near cache saves.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hepgg.settings")
os.environ.setdefault("HEPGG_DATA_DIR", tempfile.mkdtemp(prefix="hepgg-bench-"))

import django

django.setup()

from django.conf import settings  # noqa: E402

from hepgg.lib import sharedcache  # noqa: E402
from hepgg.lib.redis import async_redis  # noqa: E402

N = 20_000


def per_call(run) -> float:
    samples = []
    for _ in range(5):
        started = time.process_time()
        run()
        samples.append((time.process_time() - started) / N * 1e6)
    return statistics.median(samples)


async def main() -> None:
    sharedcache.delete("bench")  # a marker file exists, as after any change

    async def load() -> dict[str, str]:
        return {"kind": "bench"}

    await sharedcache.afetch("bench", load, 300)
    await asyncio.sleep(0.5)  # with Redis: the listener subscribes, the near cache is trusted
    await sharedcache.afetch("bench", load, 300)

    def stat() -> None:
        for _ in range(N):
            sharedcache.marker()

    async def warm() -> None:
        for _ in range(N):
            await sharedcache.afetch("bench", load, 300)

    print(f"redis: {settings.REDIS_URL or 'none'}")
    print(f"marker stat            {per_call(stat):7.2f} µs")
    samples = []
    for _ in range(5):
        started = time.process_time()
        await warm()
        samples.append((time.process_time() - started) / N * 1e6)
    print(f"warm afetch            {statistics.median(samples):7.2f} µs")
    if settings.REDIS_URL:
        client = async_redis()
        samples = []
        for _ in range(5):
            started = time.process_time()
            for _ in range(N // 10):
                await client.get("hepgg:cache:bench")
            samples.append((time.process_time() - started) / (N // 10) * 1e6)
        print(f"Redis GET (saved)      {statistics.median(samples):7.2f} µs")


if __name__ == "__main__":
    asyncio.run(main())
