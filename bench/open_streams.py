"""Hold N Claude streams open through hepgg's proxy at once and report hepgg's RSS.

    .venv/bin/python bench/open_streams.py --hepgg-url http://127.0.0.1:18200/anthropic/pt_... \
        --hepgg-cmd 'exec .venv/bin/uvicorn hepgg.asgi:application --port 18200 ...' [--streams 500]

The fake upstream sleeps between SSE events (``--chunk-delay-ms``, default 200: a 20-event stream
stays open ~4 s), so every stream is open at the same moment; the harness samples the RSS of
hepgg's process tree throughout. ``bench/run_hepgg.sh`` runs it after the other benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
from harness import RssSampler, Server, check_loopback

BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "stream": True,
    "messages": [{"role": "user", "content": "Count from one to twenty."}],
}


async def hold_streams(url: str, n: int, timeout_s: float) -> tuple[int, dict[str, int], float]:
    """Open ``n`` streams at once; (completed with message_stop, failures by kind, seconds)."""
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    headers = {"x-api-key": "sk-ant-bench", "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> str:
            async with session.post(f"{url}/v1/messages", json=BODY, headers=headers) as r:
                body = await r.read()
                if r.status != 200:
                    return f"HTTP {r.status}"
                return "ok" if b"message_stop" in body else "incomplete stream"

        started = time.monotonic()
        results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
        outcomes = Counter(r if isinstance(r, str) else type(r).__name__ for r in results)
        ok = outcomes.pop("ok", 0)
        return ok, dict(outcomes), time.monotonic() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hepgg-url", required=True, help="…/anthropic/pt_<token>")
    ap.add_argument("--hepgg-cmd", required=True, help="shell command that starts hepgg")
    ap.add_argument("--streams", type=int, default=500)
    ap.add_argument("--fake-port", type=int, default=18080)
    ap.add_argument("--chunk-delay-ms", type=float, default=200.0)
    args = ap.parse_args()
    check_loopback(args.hepgg_url)
    hepgg_port = int(args.hepgg_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    here = Path(__file__).resolve().parent
    fake = Server(
        "fake-upstream",
        [sys.executable, str(here / "fake_upstream.py"), "--port", str(args.fake_port),
         "--chunk-delay-ms", str(args.chunk_delay_ms)],
        args.fake_port,
    ).start()  # fmt: skip
    upstream = f"http://127.0.0.1:{args.fake_port}"
    hepgg = Server(
        "hepgg", ["/bin/sh", "-c", args.hepgg_cmd], hepgg_port,
        env={"ANTHROPIC_UPSTREAM_URL": upstream}, start_timeout_s=120,
    ).start()  # fmt: skip
    sampler = RssSampler(interval_s=0.1)
    sampler.add("hepgg", hepgg.pid)
    sampler.start()
    try:
        ok, failed, seconds = asyncio.run(hold_streams(args.hepgg_url, args.streams, 120))
    finally:
        memory = sampler.stop()["hepgg"]
        hepgg.stop()
        fake.stop()
    result = {"streams": args.streams, "completed": ok, "failed": failed,
              "seconds": round(seconds, 2), **memory}  # fmt: skip
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
