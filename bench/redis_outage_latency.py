"""How long a request takes while Redis is down, the first one to meet the outage included.

    .venv/bin/python bench/redis_outage_latency.py

Starts a private redis-server and hepgg (uvicorn, one worker, SQLite in a temporary data folder),
warms an account API credential, then for each way Redis can fail (stopped: connections refused;
frozen with SIGSTOP: connections hang until REDIS_SOCKET_TIMEOUT) sends requests with a cold
credential each (the worst case: a cache miss that must go to the database) and prints the
first request's latency and the max of the rest. Loopback only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def manage(env: dict[str, str], *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out) if out.strip().startswith("{") else {}


def wait_for(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="hepgg-outage-bench-"))
    redis_port, port = free_port(), free_port()
    redis = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    env = {
        **os.environ,
        "HEPGG_DATA_DIR": str(data),
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "DJANGO_SETTINGS_MODULE": "hepgg.settings",
    }
    env.pop("DATABASE_URL", None)
    manage(env, "migrate", "--verbosity", "0")
    tokens = [
        manage(env, "create_account", f"user{i}@example.com", "--json")["master_token"]
        for i in range(60)
    ]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--port",
            str(port),
            "--no-access-log",
            "--lifespan",
            "on",
            "hepgg.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/healthz")
        for token in tokens[:3]:
            httpx.get(f"{base}/me", headers={"Authorization": f"Bearer {token}"})

        def measure(label: str, cold: list[str]) -> None:
            times = []
            for token in cold:
                started = time.perf_counter()
                status = httpx.get(
                    f"{base}/me", headers={"Authorization": f"Bearer {token}"}, timeout=10
                ).status_code
                times.append(time.perf_counter() - started)
                assert status == 200, status
            print(
                f"{label:28} first {times[0] * 1000:7.1f} ms   "
                f"max of the next {len(times) - 1}: {max(times[1:]) * 1000:7.1f} ms"
            )

        measure("Redis up (cold keys)", tokens[3:13])
        redis.send_signal(signal.SIGSTOP)
        measure("Redis frozen (SIGSTOP)", tokens[13:33])
        redis.send_signal(signal.SIGCONT)
        time.sleep(2)  # the probe closes the breaker
        measure("Redis back", tokens[33:40])
        redis.terminate()
        redis.wait()
        measure("Redis stopped", tokens[40:60])
    finally:
        server.terminate()
        server.wait()
        if redis.poll() is None:
            redis.kill()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
