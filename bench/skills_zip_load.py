"""A 20 MiB skill's zip under load, and what it does to ``/v1`` latency meanwhile.

    .venv/bin/python bench/skills_zip_load.py [--duration 10] [--connections 32] [--root DIR]
                                              [--loop auto|asyncio]

Builds a throwaway data folder (SQLite), an account with an API key, and a public skill of
20 MiB of incompressible files; serves ``hepgg.asgi:application`` (uvicorn, one worker) from
``--root`` (default: this checkout; point it at a checkout of another commit to compare), then:

1. ``/v1/models`` latency alone (sequential requests, ``--duration`` seconds);
2. ``GET /skills/<name>.zip`` at ``--connections`` concurrent clients, while the same sequential
   ``/v1/models`` probe runs; reports zips/s, MiB/s and the probe's p50/p99.

The zip clients run in a process of their own (``--zip-load``), so the probe's event loop does
not also read 32 downloads: its latencies are the server's, plus the machine's CPU contention
(report the load average with them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from skills_bench import _free_port, _setup_django  # noqa: E402


def seed() -> tuple[str, str]:
    from accounts.services import account_create, api_key_mint
    from skills.services import skills_import

    account, _ = account_create(email="zip-bench@example.com")
    _, key = api_key_mint(account=account, model="cf-gpt-oss-20b")
    files = {"SKILL.md": b"---\nname: big-bench\ndescription: 20 MiB of data\n---\n"}
    files.update({f"data/part-{n}.bin": os.urandom(5 * 1024 * 1024) for n in range(4)})
    skills_import(account=account, files=files, visibility="public")
    return "big-bench", key


async def probe(base: str, key: str, stop: asyncio.Event) -> list[float]:
    times: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        while not stop.is_set():
            started = time.perf_counter()
            response = await http.get("/v1/models", headers={"authorization": f"Bearer {key}"})
            response.raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    return times


async def zips(base: str, name: str, stop: asyncio.Event, connections: int) -> tuple[int, int]:
    count = size = 0
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as http:

        async def worker() -> None:
            nonlocal count, size
            while not stop.is_set():
                response = await http.get(f"/skills/{name}.zip")
                response.raise_for_status()
                count, size = count + 1, size + len(response.content)

        await asyncio.gather(*(worker() for _ in range(connections)))
    return count, size


def _summary(times: list[float]) -> str:
    times = sorted(times)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return f"n={len(times)} p50={statistics.median(times):.2f} ms p99={p99:.2f} ms"


def zip_load(base: str, name: str, duration: float, connections: int) -> None:
    """The ``--zip-load`` process: zips for ``duration`` seconds, then one JSON line."""
    stop = asyncio.Event()

    async def go() -> tuple[int, int]:
        asyncio.get_running_loop().call_later(duration, stop.set)
        return await zips(base, name, stop, connections)

    started = time.perf_counter()
    count, size = asyncio.run(go())
    print(json.dumps({"count": count, "size": size, "elapsed": time.perf_counter() - started}))


async def run(base: str, name: str, key: str, duration: float, connections: int) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(duration, stop.set)
    print("/v1/models alone:          ", _summary(await probe(base, key, stop)), flush=True)
    load = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--zip-load", base, name,
        "--duration", str(duration + 2), "--connections", str(connections),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await asyncio.sleep(1)  # the downloads are under way before the probe starts
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(duration, stop.set)
    latencies = await probe(base, key, stop)
    out, _ = await load.communicate()
    result = json.loads(out.decode().strip().splitlines()[-1])
    print(
        f"GET /{name}.zip c={connections}:   {result['count'] / result['elapsed']:.1f} zips/s, "
        f"{result['size'] / result['elapsed'] / 2**20:.0f} MiB/s"
    )
    print("/v1/models during the zips:", _summary(latencies))
    print("load average:", " ".join(f"{n:.2f}" for n in os.getloadavg()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--zip-load", nargs=2, metavar=("BASE", "NAME"))
    parser.add_argument("--loop", default="auto", help="uvicorn's --loop: auto (uvloop), asyncio")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.zip_load:
        zip_load(*args.zip_load, args.duration, args.connections)
        return
    data = Path(tempfile.mkdtemp(prefix="hepgg-zip-bench-"))
    _setup_django(data)
    name, key = seed()
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(args.root)}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--port", str(port), "--no-access-log",
         "--log-level", "warning", "--loop", args.loop, "hepgg.asgi:application"],
        cwd=args.root, env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise SystemExit("the server did not start")
        asyncio.run(run(base, name, key, args.duration, args.connections))
        status = Path(f"/proc/{server.pid}/status")
        if status.exists():  # Linux: the server's peak memory over the whole run
            peak = next(
                line for line in status.read_text().splitlines() if line.startswith("VmHWM")
            )
            print("server peak RSS:", peak.split(":", 1)[1].strip())
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
