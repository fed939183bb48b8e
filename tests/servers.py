"""Real servers on loopback for the tests: hepgg itself in a subprocess, on a free port.

The subprocess gets the test database (pytest-django's) through ``DATABASE_URL``, so a test that
uses it needs ``transactional_db`` (committed rows) and sees what the server wrote.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class ServerProcess:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, *, graceful: bool = True, timeout: float = 10) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)


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


def start_hepgg(
    *, env: dict[str, str] | None = None, server: str = "daphne", ready_timeout: float = 30
) -> ServerProcess:
    """Start ``hepgg.asgi:application`` under ``server`` (daphne or uvicorn) and wait for it."""
    port = free_port()
    app = "hepgg.asgi:application"
    if server == "daphne":
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
    else:
        raise ValueError(server)
    log = Path(tempfile.mkstemp(prefix=f"hepgg-{server}-", suffix=".log")[1])
    full_env = server_env(env)
    with log.open("wb") as log_file:  # the child keeps its own descriptor
        process = subprocess.Popen(
            argv, cwd=ROOT, env=full_env, stdout=log_file, stderr=subprocess.STDOUT
        )
    handle = ServerProcess(f"http://127.0.0.1:{port}", process, log, full_env)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{server} exited early:\n{handle.logs()}")
        try:
            if httpx.get(f"{handle.base_url}/healthz", timeout=1).status_code == 200:
                return handle
        except httpx.HTTPError:
            time.sleep(0.1)
    handle.stop(graceful=False)
    raise RuntimeError(f"{server} did not answer /healthz in {ready_timeout}s:\n{handle.logs()}")
