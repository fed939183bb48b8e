"""The usage writer's process: a server's usage encoded and written outside its event loop.

A server process is as fast as its event loop's thread, and every line of Python it runs holds
that thread's GIL, whichever thread runs it. Encoding a usage record (cleaning, pricing, its JSON
line) was most of what metering cost the loop (``bench/README.md``, "Metering cost"), so with
``USAGE_WRITER_PROCESS`` on (the default on PostgreSQL) each server process starts one writer
process of its own and hands it each batch as it is: each record is kept as its fields' values
in one JSON array (``usage.records.RawRecord``, about a sixth of the encoding's cost). The
writer process cleans, prices and writes them with the same ``UsageWriter`` code as the server
would, spilling to disk in an outage, and answers each batch with how many events it wrote.

- **Frames**: on the child's stdin, a 4-byte length then ``[lines, records]`` (lines already
  encoded by ``record_priced``, records as ``usage.records.RawRecord``: their fields' values).
  Answers on its stdout: 8 bytes, the events written, or -1 when it could not read the frame;
  its first answer, 0, says that it is set up (the server waits for it when it starts one).
- **Nothing is lost to the handover**: the server's writer thread waits for the answer, as it
  waits for the database when it writes itself, and keeps the batch until then. No answer (the
  writer process died, or has not answered in ``_ANSWER_SECONDS``): the server writes that batch
  itself (the events' dedupe keys drop what the dead process had written), and starts a new
  writer process at a later flush (at most one start per ``_RESTART_SECONDS``).
- **Its life is the server's**: it ignores SIGINT and SIGTERM, and ends when its stdin does (the
  server closed it at shutdown, or died), after writing what it was given.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import IO
from urllib.parse import quote

logger = logging.getLogger(__name__)

_LENGTH = 4  # bytes of a frame's length
_ANSWER = 8  # bytes of an answer
_CANNOT = -1  # the answer to a frame the writer process could not read
_ANSWER_SECONDS = 120.0  # a batch's write, spills and connect timeouts included
_RESTART_SECONDS = 5.0
_STOP_SECONDS = 30.0
_READY_SECONDS = 60.0
_READY = (0).to_bytes(_ANSWER, "big", signed=True)  # its first answer: set up, reading frames


class WriterProcess:
    """The server side: starts the writer process, hands it frames, stops it. ``write`` runs in
    the server's writer thread only (``hepgg.lib.batching.in_writer_thread``)."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # start and stop against each other
        self._next_start = 0.0

    def write(self, frame: bytes) -> int | None:
        """Hand ``frame`` over and wait for its answer: the events written, or None if the
        caller must write the batch itself."""
        process = self._running()
        if process is None:
            return None
        try:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(len(frame).to_bytes(_LENGTH, "big"))
            process.stdin.write(frame)
            process.stdin.flush()
            answer = _read_exactly(process.stdout, _ANSWER, timeout=_ANSWER_SECONDS)
        except (OSError, ValueError):  # a broken pipe: it died
            answer = None
        if answer is None:
            self._lost(process)
            return None
        written = int.from_bytes(answer, "big", signed=True)
        return None if written == _CANNOT else written

    def start(self) -> None:
        """Start it now (server start-up), rather than at the first flush: its memory and its
        Django start belong to the server's start, not to the first requests."""
        self._running()

    def _running(self) -> subprocess.Popen[bytes] | None:
        with self._lock:
            process = self._process
            if process is not None and process.poll() is None:
                return process
            if process is not None:
                logger.error("usage: the writer process exited (%s)", process.returncode)
                _reap(process)
                self._process = None
                self._next_start = time.monotonic() + _RESTART_SECONDS
            if time.monotonic() < self._next_start:
                return None
            try:
                process = subprocess.Popen(
                    [sys.executable, "-m", "usage.writer_process"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=_child_environment(),
                )
            except OSError:
                logger.exception("usage: cannot start the writer process; writing in-process")
                self._next_start = time.monotonic() + _RESTART_SECONDS
                return None
            # It answers once when Django is set up: a process that cannot start is found now,
            # and a server's start-up includes its writer's.
            assert process.stdout is not None
            if _read_exactly(process.stdout, _ANSWER, timeout=_READY_SECONDS) != _READY:
                logger.error("usage: the writer process did not start; writing in-process")
                if process.poll() is None:
                    process.kill()
                _reap(process)
                self._next_start = time.monotonic() + _RESTART_SECONDS
                return None
            self._process = process
            return process

    def _lost(self, process: subprocess.Popen[bytes]) -> None:
        """No answer: the process is ended (if it lives on, it is stuck) and replaced later."""
        logger.error("usage: no answer from the writer process; this batch is written in-process")
        with self._lock:
            if process.poll() is None:
                process.kill()
            _reap(process)
            if self._process is process:
                self._process = None
                self._next_start = time.monotonic() + _RESTART_SECONDS

    def stop(self, timeout: float = _STOP_SECONDS) -> None:
        """Close its stdin and wait for it to write what it holds and exit (shutdown)."""
        with self._lock:
            process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            logger.error("usage: the writer process did not finish in %g s; killed", timeout)
            process.kill()
        _reap(process)

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None


def _reap(process: subprocess.Popen[bytes]) -> None:
    process.wait()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):  # a dead process's stdin with a write left
                pipe.close()


def _read_exactly(stream: IO[bytes], size: int, *, timeout: float | None = None) -> bytes | None:
    """``size`` bytes from ``stream``; None at its end (or when ``timeout`` passes first)."""
    data = b""
    deadline = None if timeout is None else time.monotonic() + timeout
    fd = stream.fileno()
    while len(data) < size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _child_environment() -> dict[str, str]:
    """This process's environment, with the database it uses now (settings may have been
    changed since start-up: a test database, say)."""
    from django.conf import settings

    env = dict(os.environ)
    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.postgresql":
        auth = quote(db.get("USER") or "", safe="")
        if db.get("PASSWORD"):
            auth += ":" + quote(db["PASSWORD"], safe="")
        host = f"{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}"
        env["DATABASE_URL"] = f"postgres://{auth}@{host}/{quote(db['NAME'], safe='')}"
    env["USAGE_SPILL_DIR"] = str(settings.USAGE_SPILL_DIR)
    env["USAGE_WRITER_PROCESS"] = "false"  # the child writes itself
    env.setdefault("DJANGO_SETTINGS_MODULE", "hepgg.settings")
    return env


# -- the writer process ------------------------------------------------------------------------
def serve(frames: IO[bytes], answers: IO[bytes]) -> None:
    """Read frames until the input ends; write each, answer how many events it wrote."""
    from usage.writer import usage_writer

    while True:
        length = _read_exactly(frames, _LENGTH)
        if length is None:
            break
        frame = _read_exactly(frames, int.from_bytes(length, "big"))
        if frame is None:
            break
        try:
            written = usage_writer.write_frame(frame)
        except Exception:
            logger.exception("usage: the writer process could not write a batch")
            written = _CANNOT
        answers.write(written.to_bytes(_ANSWER, "big", signed=True))
        answers.flush()


def main() -> None:
    # Its life is the server's: a Ctrl-C or a SIGTERM to the process group stops the server,
    # which then closes this process's stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print cannot corrupt answers
    import django

    django.setup()
    from django.db import connections

    answers.write(_READY)
    answers.flush()
    try:
        serve(sys.stdin.buffer, answers)
    finally:
        connections.close_all()


def frame_of(lines: list[bytes], raw_records: list[bytes]) -> bytes:
    """One frame: encoded ``lines`` and ``usage.records.RawRecord``s, as they are."""
    return b"[[" + b",".join(lines) + b"],[" + b",".join(raw_records) + b"]]"


if __name__ == "__main__":
    main()
