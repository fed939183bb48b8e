"""The cost of usage metering in one hepgg process: chat c32 with metering on and off in
alternating windows (``bench/metering_switch.py`` switches it by signal), the median of the
windows' on/off ratios, and the server's CPU per request in each mode.

    bench/run_hepgg.sh's database and credentials, then:
    METERING=switch bench/run_hepgg.sh [--rounds 8 --wrk-duration 5]

Two processes, one metered and one not (``METERING=compare``), differ by more than metering
does on shared cores; within one process the two modes see the same luck.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import peers
from harness import Target, run_wrk, tree_cpu_seconds, wait_idle
from run_openai import PATH, body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hepgg-url", required=True)
    ap.add_argument("--hepgg-key", required=True)
    ap.add_argument("--hepgg-model", default="cf-gpt-oss-20b")
    peers.add_common_args(ap)
    args = ap.parse_args()
    args.no_litellm = True
    cfg = peers.bench_config(args)
    port = urlsplit(args.hepgg_url).port
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {args.hepgg_key}"}
    target = Target("hepgg", args.hepgg_url, PATH, headers, body(args.hepgg_model, False))
    runs: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
    with peers.stack(args, port) as st, tempfile.TemporaryDirectory() as tmp:
        server = st.servers[-1]
        for r in range(cfg.rounds):
            for mode in ("on", "off") if r % 2 == 0 else ("off", "on"):
                os.kill(server.pid, signal.SIGUSR1 if mode == "on" else signal.SIGUSR2)
                wait_idle([server.pid])  # the last window's flushes are done
                time.sleep(1)
                before = tree_cpu_seconds([server.pid])
                result = run_wrk(target, cfg, Path(tmp))
                if result["non2xx"] or result["socket_errors"]:
                    raise SystemExit(f"hepgg answered errors: {result}")
                cpu = tree_cpu_seconds([server.pid]) - before
                requests = result["rps"] * cfg.wrk_duration_s
                runs[mode].append((result["rps"], cpu / requests * 1e6 if requests else 0.0))
                print(f"round {r + 1} metering {mode}: {result['rps']:.0f} req/s", flush=True)
    ratios = [on[0] / off[0] for on, off in zip(runs["on"], runs["off"], strict=True)]
    median = statistics.median(ratios)
    cpu = {mode: statistics.median(c for _, c in runs[mode]) for mode in runs}
    print(f"\nmetering on/off, c{cfg.wrk_connections} req/s: median ratio {median:.3f}", end=" ")
    print(f"({(median - 1) * 100:+.1f} %), each: " + ", ".join(f"{x:.3f}" for x in ratios))
    print(f"server CPU per request: on {cpu['on']:.0f} µs, off {cpu['off']:.0f} µs")


if __name__ == "__main__":
    main()
