"""The one flusher of every batching buffer (usage, rate-limit charges and snapshots): it writes
a buffer on a timer or at once when asked, on each event loop, survives a failing write, and
every buffer is written by the one shutdown path."""

from __future__ import annotations

import asyncio
import logging

import pytest

from hepgg.lib import batching
from hepgg.lib.batching import Flusher


class Buffer:
    """A buffer as the batching modules keep one: items in memory, written by ``flush``."""

    def __init__(self, *, interval: float = 0.05, fail: int = 0, sync: bool = True) -> None:
        self.items: list[int] = []
        self.written: list[list[int]] = []
        self.loops: set[asyncio.AbstractEventLoop] = set()
        self.fail = fail
        self.flusher = Flusher(
            "test buffer",
            flush=self.aflush,
            flush_sync=self.flush if sync else None,
            interval=lambda: interval,
            pending=lambda: bool(self.items),
        )

    def add(self, item: int, *, now: bool = False) -> None:
        self.items.append(item)
        self.flusher.poke(now=now)

    def flush(self) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("the store is down")
        batch, self.items = self.items, []
        self.written.append(batch)

    async def aflush(self) -> None:
        self.loops.add(asyncio.get_running_loop())
        self.flush()


async def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


def test_a_poked_buffer_is_written_after_the_interval_in_one_batch() -> None:
    buffer = Buffer(interval=0.2)

    async def run() -> None:
        for n in range(5):
            buffer.add(n)
        await asyncio.sleep(0.05)
        assert buffer.written == []  # nothing on the request path
        await wait_for(lambda: buffer.written)

    asyncio.run(run())
    assert buffer.written == [[0, 1, 2, 3, 4]]


def test_poke_now_writes_at_once() -> None:
    buffer = Buffer(interval=30)

    async def run() -> None:
        buffer.add(1, now=True)
        await wait_for(lambda: buffer.written, timeout=2)

    asyncio.run(run())
    assert buffer.written == [[1]]


def test_a_failing_write_is_logged_and_the_next_one_still_happens(caplog) -> None:
    buffer = Buffer(fail=2)

    async def run() -> None:
        buffer.add(1)
        await wait_for(lambda: buffer.written)

    with caplog.at_level(logging.WARNING, logger="hepgg.lib.batching"):
        asyncio.run(run())
    assert buffer.written == [[1]]
    # Logged once, not on every failed try: an outage must not flood the log.
    assert len([r for r in caplog.records if "flush failed" in r.message]) == 1


def test_each_event_loop_gets_its_own_flusher() -> None:
    buffer = Buffer()

    async def run() -> None:
        buffer.add(1)
        await wait_for(lambda: not buffer.items)

    asyncio.run(run())
    asyncio.run(run())
    assert len(buffer.loops) == 2
    assert buffer.written == [[1], [1]]


def test_the_shutdown_path_writes_every_buffer(caplog) -> None:
    on_loop, at_exit, loop_only = Buffer(interval=30), Buffer(interval=30), Buffer(sync=False)
    on_loop.items.append(1)
    asyncio.run(batching.flush_all())  # the lifespan shutdown, under uvicorn
    assert on_loop.written == [[1]]

    at_exit.items.append(2)
    loop_only.items.append(3)
    batching.flush_all_sync()  # the exit hook, under daphne: no loop
    assert at_exit.written == [[2]]
    assert loop_only.written == []  # a buffer with no sync flush is left to the lifespan


@pytest.mark.parametrize("now", [False, True])
def test_poke_from_sync_code_does_nothing(now: bool) -> None:
    buffer = Buffer()
    buffer.add(1, now=now)
    assert buffer.written == [] and buffer.items == [1]
