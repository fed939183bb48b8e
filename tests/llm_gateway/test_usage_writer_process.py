"""A server on PostgreSQL hands its usage to a writer process of its own
(``usage.writer_process``): requests are metered exactly as before, and the writer process lives
and ends with its server, however the server ends."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.llm_gateway.conftest import MESSAGES, sdk
from tests.servers import ServerProcess
from tests.waits import wait_for_events, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("requires_postgres")]


def writer_processes(server: ServerProcess) -> list[int]:
    """The server's children that run ``usage.writer_process`` (any of its threads' children:
    the writer thread starts it)."""
    pids = []
    for task in Path(f"/proc/{server.process.pid}/task").glob("*"):
        try:
            pids += [int(pid) for pid in (task / "children").read_text().split()]
        except OSError:
            continue
    return [pid for pid in pids if b"usage.writer_process" in cmdline(pid)]


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def chat(server: ServerProcess, key: str, count: int) -> None:
    client = sdk(server, key)
    for _ in range(count):
        client.chat.completions.create(model="cf-gpt-oss-20b", messages=MESSAGES)


@pytest.mark.parametrize("server_name", ["uvicorn", "daphne"])
def test_usage_is_written_by_the_servers_writer_process_which_ends_with_it(
    start_gateway, api_key, member, prices, server_name
) -> None:
    server = start_gateway(server=server_name)
    if server_name == "uvicorn":  # started with the server (lifespan); under daphne, at a flush
        assert writer_processes(server)
    chat(server, api_key, 12)
    events = wait_for_events(12, account=member.account)
    assert all(event.cost_usd is not None and event.output_tokens > 0 for event in events)
    [writer] = writer_processes(server)

    chat(server, api_key, 3)
    server.stop()  # graceful: the last batch goes through the writer process, which then ends
    wait_for_events(15, account=member.account)
    wait_until(lambda: not alive(writer), timeout=10, what="the writer process to end")


def test_the_writer_process_of_a_killed_server_writes_what_it_was_given_and_ends(
    start_gateway, api_key, member
) -> None:
    server = start_gateway(server="uvicorn")
    chat(server, api_key, 5)
    wait_for_events(5, account=member.account)
    [writer] = writer_processes(server)

    os.kill(server.process.pid, signal.SIGKILL)  # not server.stop(): it kills children too
    server.process.wait(timeout=10)
    wait_until(lambda: not alive(writer), timeout=10, what="the orphaned writer process to end")
    wait_for_events(5, account=member.account)
