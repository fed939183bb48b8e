"""On a terminal: init asks for the master token without echoing it, and sync shows progress."""

from __future__ import annotations

import os
import pty
import select
import time

import pytest

from accounts.models import Machine
from tests.ccas.fixtures import write_transcripts

pytestmark = pytest.mark.django_db(transaction=True)


def run_on_a_terminal(home, *args: str, answer: str | None = None, timeout: float = 60) -> str:
    """Run ccas with a pseudo-terminal as its stdin/stdout/stderr; type ``answer`` at the
    prompt. Returns everything the terminal showed. Raises on timeout."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once
        os.chdir(home.path)
        os.execve(str(home.ccas), [str(home.ccas), *args], home.env)
    shown, answered = b"", answer is None
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"ccas {args} did not finish: {shown!r}")
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            shown += data
            if not answered and b"not shown" in shown:
                os.write(fd, answer.encode() + b"\n")
                answered = True
    finally:
        _pid, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, shown
    return shown.decode(errors="replace")


def test_init_prompts_for_the_token_without_echo_and_sync_shows_progress(installed, member) -> None:
    shown = run_on_a_terminal(installed, "init", answer=member.master_token)
    assert "Master token (hyd_…, not shown):" in shown
    assert member.master_token not in shown
    assert Machine.objects.filter(account=member.account).count() == 1

    write_transcripts(installed.path)
    progress = run_on_a_terminal(installed, "sync")
    assert "files read 4/4, records sent 6" in progress
