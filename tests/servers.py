"""Real servers on loopback for the tests: hepgg itself in a subprocess, on a free port.

The subprocess gets the test database (pytest-django's) through ``DATABASE_URL``, so a test that
uses it needs ``transactional_db`` (committed rows) and sees what the server wrote.

``start_hepgg(server="uvicorn", workers=N)`` runs N worker processes, as in production; their
access log lines carry the worker's pid, so that a test can tell which worker served what
(``ServerProcess.served``) and make sure every worker served a request
(``on_every_worker``) before it changes anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_database_url() -> str:
    """The URL of the database the tests are using (after pytest-django created it)."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] or ""
    if db["PASSWORD"]:
        auth += f":{db['PASSWORD']}"
    host = f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    return f"postgres://{auth}@{host}/{db['NAME']}"


# Access log lines of a multi-worker uvicorn: `[pid 123] 127.0.0.1:5555 - "GET /me HTTP/1.1" 200`.
_ACCESS_LINE = re.compile(rb'\[pid (\d+)\] \S+ - "[A-Z]+ (\S+) HTTP/[0-9.]+" (\d+)')
_WORKER_STARTED = re.compile(rb"Started server process \[(\d+)\]")
_STARTUP_COMPLETE = b"Application startup complete."


@dataclass
class ServerProcess:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 1

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_size(self) -> int:
        """Where the log ends now: pass it to ``served(since=…)`` to look at what follows."""
        return self.log_path.stat().st_size

    def worker_pids(self) -> set[int]:
        return {int(pid) for pid in _WORKER_STARTED.findall(self.log_path.read_bytes())}

    def served(self, *, since: int, path: str) -> Counter[int]:
        """Requests per worker pid whose path starts with ``path``, logged after ``since``
        (multi-worker uvicorn only: its access lines carry the pid)."""
        with self.log_path.open("rb") as log:
            log.seek(since)
            text = log.read()
        return Counter(
            int(pid)
            for pid, logged, _status in _ACCESS_LINE.findall(text)
            if logged.decode("latin-1").startswith(path)
        )

    def stop(self, *, graceful: bool = True, timeout: float = 10) -> None:
        if self.process.poll() is not None:
            return
        children = _children(self.process.pid)  # uvicorn's workers, should the manager be killed
        self.process.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "hepgg.settings",
        "DATABASE_URL": test_database_url(),
        "HEPGG_DATA_DIR": str(settings.DATA_DIR),
        # Each server spills usage in a folder of its own (a test that restarts a server on
        # the same folder passes it), so no server replays another test's spill files.
        "USAGE_SPILL_DIR": tempfile.mkdtemp(prefix="hepgg-usage-"),
        "USAGE_FLUSH_SECONDS": "0.1",
        "PYTHONUNBUFFERED": "1",
    }
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    env.update(extra or {})
    return env


def _worker_log_config() -> Path:
    """uvicorn's own logging configuration, with the worker's pid on each access line.

    A plain formatter of the (already formatted) message: hepgg's redaction filter replaces the
    record's arguments, which uvicorn's ``AccessFormatter`` needs."""
    from uvicorn.config import LOGGING_CONFIG

    config = json.loads(json.dumps(LOGGING_CONFIG))
    config["formatters"]["access"] = {"format": "[pid %(process)d] %(message)s"}
    fd, path = tempfile.mkstemp(prefix="hepgg-uvicorn-log-", suffix=".json")
    with os.fdopen(fd, "w") as file:
        json.dump(config, file)
    return Path(path)


def start_hepgg(
    *,
    env: dict[str, str] | None = None,
    server: str = "daphne",
    workers: int = 1,
    ready_timeout: float = 30,
    port: int | None = None,
) -> ServerProcess:
    """Start ``hepgg.asgi:application`` under ``server`` (daphne or uvicorn) and wait for it
    (for every worker, with ``workers`` > 1: uvicorn's process manager, the production command
    with ``--workers``; the processes share the listening socket).
    ``port`` lets a test know the URL before the start (e.g. for ``GATEWAY_PUBLIC_URL``)."""
    if workers > 1 and server != "uvicorn":
        raise ValueError("only uvicorn runs several workers")
    port = port or free_port()
    app = "hepgg.asgi:application"
    if server == "daphne" and workers == 1:
        argv = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app]
    elif server == "uvicorn":
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--lifespan",
            "on",
            app,
        ]
        if workers > 1:
            argv += ["--workers", str(workers), "--log-config", str(_worker_log_config())]
    else:
        raise ValueError(f"{server} with {workers} workers")
    log = Path(tempfile.mkstemp(prefix=f"hepgg-{server}-", suffix=".log")[1])
    full_env = server_env(env)
    with log.open("wb") as log_file:  # the child keeps its own descriptor
        process = subprocess.Popen(
            argv, cwd=ROOT, env=full_env, stdout=log_file, stderr=subprocess.STDOUT
        )
    handle = ServerProcess(f"http://127.0.0.1:{port}", process, log, full_env, workers)
    deadline = time.monotonic() + ready_timeout * workers
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{server} exited early:\n{handle.logs()}")
        try:
            answered = httpx.get(f"{handle.base_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            answered = False
        if answered and (workers == 1 or log.read_bytes().count(_STARTUP_COMPLETE) >= workers):
            return handle
        time.sleep(0.1)
    handle.stop(graceful=False)
    raise RuntimeError(f"{server} did not answer /healthz in time:\n{handle.logs()}")


T = TypeVar("T")


def on_every_worker(
    server: ServerProcess,
    send: Callable[[], T],
    *,
    path: str,
    at_least: int = 20,
    limit: int = 400,
    concurrency: int = 4,
) -> list[T]:
    """Call ``send`` (one request whose path starts with ``path``, on a connection of its own)
    ``at_least`` times, and more until every worker of ``server`` has answered one of these
    calls; returns what the calls returned. A few at a time, so that a busy worker cannot take
    them all. Raises AssertionError when ``limit`` calls were not enough."""
    since = server.log_size()
    results: list[T] = []
    with ThreadPoolExecutor(concurrency) as pool:
        while len(results) < limit:
            results += pool.map(lambda _: send(), range(concurrency))
            if len(results) < at_least:
                continue
            if server.workers == 1 or _all_served(server, since, path, len(results)):
                return results
    raise AssertionError(
        f"{limit} requests to {path} did not reach all {server.workers} workers: "
        f"{dict(server.served(since=since, path=path))}"
    )


def _all_served(server: ServerProcess, since: int, path: str, sent: int) -> bool:
    # The access line goes out with the response, so the lines of ``sent`` calls are there or
    # about to be: wait for them (bounded), not for workers that may not have been picked.
    deadline = time.monotonic() + 2
    while True:
        served = server.served(since=since, path=path)
        if len(served) >= server.workers:
            return True
        if sum(served.values()) >= sent or time.monotonic() > deadline:
            return False
        time.sleep(0.02)
