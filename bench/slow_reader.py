"""A slow reader of a long stream: does hepgg's memory stay bounded, and is the upstream paced?

    .venv/bin/python bench/slow_reader.py --server make-run --surface anthropic --stream-mb 200
    .venv/bin/python bench/slow_reader.py --server daphne --surface openai --stream-mb 200

The fake upstream streams ``--stream-mb`` of SSE as fast as its socket lets it (with flow control:
what it counts as sent is what the kernel took). One client asks for that stream through hepgg
(``/anthropic/pt_…/v1/messages`` or ``/v1/chat/completions``) with a 4 KiB receive buffer and
reads 4 KiB every ``--read-interval-ms``. For ``--seconds`` the script samples hepgg's RSS and the
bytes the upstream has sent. A server with backpressure keeps both flat: the upstream is held
back to what the client read plus the socket buffers in between; one without buffers the stream.

Prints one JSON object per surface: RSS at the start, at the end and its peak, the growth, bytes
read by the client and sent by the upstream. Database and Redis: ``DATABASE_URL``/``REDIS_URL``
from the environment, else SQLite in a temporary folder. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from harness import Server, tree_rss
from hepgg_setup import free_port, hepgg_env, hepgg_server, migrate, provision

BENCH_DIR = Path(__file__).resolve().parent
MB = 1024 * 1024


def fake_stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_fake/stats", timeout=10) as r:
        return json.load(r)


def fake_reset(port: int) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/_fake/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def request_bytes(surface: str, port: int, creds: dict) -> bytes:
    if surface == "anthropic":
        body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True,
                           "messages": [{"role": "user", "content": "a long one"}]})  # fmt: skip
        path = f"/anthropic/{creds['proxy_token']}/v1/messages"
        extra = "x-api-key: sk-ant-bench\r\nanthropic-version: 2023-06-01\r\n"
    else:
        body = json.dumps({"model": "cf-gpt-oss-20b", "stream": True,
                           "messages": [{"role": "user", "content": "a long one"}]})  # fmt: skip
        path = "/v1/chat/completions"
        extra = f"Authorization: Bearer {creds['key']}\r\n"
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def slow_read(
    *, port: int, fake_port: int, pid: int, payload: bytes, seconds: float, interval: float
) -> dict:
    """Read the stream slowly for ``seconds``; sample RSS and the upstream's bytes sent."""
    fake_reset(fake_port)
    start_rss = tree_rss(pid)[0]  # before the request: what the stream adds is the growth
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    sock.sendall(payload)
    first = sock.recv(4096)
    status = first.split(b"\r\n", 1)[0].decode("latin-1")
    received = len(first)
    time.sleep(1.0)  # the first burst: socket buffers fill up (or the server buffers it all)
    start_sent = fake_stats(fake_port)["bytes_sent"]
    peak_rss, samples = start_rss, []
    deadline = time.monotonic() + seconds
    next_sample = time.monotonic()
    while time.monotonic() < deadline:
        chunk = sock.recv(4096)
        if not chunk:
            break
        received += len(chunk)
        if time.monotonic() >= next_sample:
            rss = tree_rss(pid)[0]
            peak_rss = max(peak_rss, rss)
            samples.append(round(rss / MB, 1))
            next_sample += 0.5
        time.sleep(interval)
    end_rss = tree_rss(pid)[0]
    sent = fake_stats(fake_port)["bytes_sent"]
    sock.close()
    return {
        "status": status,
        "rss_start_mb": round(start_rss / MB, 1),
        "rss_end_mb": round(end_rss / MB, 1),
        "rss_peak_mb": round(max(peak_rss, end_rss) / MB, 1),
        "rss_growth_mb": round((max(peak_rss, end_rss) - start_rss) / MB, 1),
        "client_read_mb": round(received / MB, 2),
        "upstream_sent_mb": round(sent / MB, 2),
        "upstream_sent_during_mb": round((sent - start_sent) / MB, 2),
        "upstream_ahead_of_client_mb": round((sent - received) / MB, 2),
        "rss_samples_mb": samples,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", choices=["make-run", "uvicorn", "daphne"], default="make-run")
    ap.add_argument("--surface", choices=["anthropic", "openai", "both"], default="both")
    ap.add_argument("--stream-mb", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--read-interval-ms", type=float, default=20.0)
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="hepgg-slow-reader-"))
    fake_port, port = free_port(), free_port()
    fake = Server(
        "fake-upstream",
        [sys.executable, str(BENCH_DIR / "fake_upstream.py"), "--port", str(fake_port),
         "--stream-bytes", str(int(args.stream_mb * MB))],
        fake_port, log_path=workdir / "fake.log",
    ).start()  # fmt: skip
    env = hepgg_env(workdir, upstream=f"http://127.0.0.1:{fake_port}")
    hepgg = None
    try:
        migrate(env)
        creds = provision(env)
        hepgg = hepgg_server(args.server, port, env, log=workdir / "hepgg.log").start()
        surfaces = ["anthropic", "openai"] if args.surface == "both" else [args.surface]
        for surface in surfaces:
            result = slow_read(
                port=port,
                fake_port=fake_port,
                pid=hepgg.pid,
                payload=request_bytes(surface, port, creds),
                seconds=args.seconds,
                interval=args.read_interval_ms / 1000,
            )
            print(json.dumps({"server": args.server, "surface": surface,
                              "stream_mb": args.stream_mb, **result}), flush=True)  # fmt: skip
            time.sleep(1.0)  # the server closes the abandoned upstream stream
    finally:
        if hepgg is not None:
            hepgg.stop()
        fake.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
