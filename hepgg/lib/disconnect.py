"""Noticing that an ASGI client went away while its response is still being made.

Once a request's body is read, the next message ``receive()`` gives is ``http.disconnect``.
``DisconnectWatch.start()`` awaits it in a task (begun ``WATCH_AFTER_SECONDS`` later); if it
comes before ``finish()``, the watch cancels the task serving the request, which interrupts
whatever it awaits (the upstream's headers, its next chunk) so the upstream connection is closed
at once. The serving task catches the ``CancelledError``, asks ``consume_cancel()`` whether the
cancellation was the watch's (then it is consumed: meter what was seen and return) or came from
elsewhere (a server shutting down: re-raise), as asyncio's cancellation rules want.

Both hot paths (``llm_gateway.app``, ``proxy.forward``) use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

Receive = Callable[[], Awaitable[dict[str, Any]]]


# The watch begins this long after ``start()``: a request answered sooner (most JSON answers)
# never pays for a watcher task, and a client that leaves a long generation is still noticed
# within this much of its leaving.
WATCH_AFTER_SECONDS = 0.02


class DisconnectWatch:
    __slots__ = ("_receive", "_task", "_timer", "_watcher", "client_gone", "finished")

    def __init__(self, receive: Receive) -> None:
        """Make it in the task that serves the request: that task is the one cancelled."""
        self._receive = receive
        self._task: asyncio.Task[Any] | None = asyncio.current_task()
        self._watcher: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.client_gone = False
        self.finished = False  # the response is complete: a disconnect is its normal end

    def start(self) -> None:
        """Watch from now on (call it once the request body has been read; from any task)."""
        if self._timer is None and self._watcher is None and not self.finished:
            self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER_SECONDS, self._begin)

    def _begin(self) -> None:
        self._timer = None
        if self._watcher is None and not self.finished:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                if not self.finished and self._task is not None:
                    self.client_gone = True
                    self._task.cancel()
                return

    def finish(self) -> None:
        """The last response message is going out: from now on a disconnect changes nothing."""
        self.finished = True
        self.stop()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    def consume_cancel(self) -> bool:
        """In an ``except CancelledError``: True if the cancellation was this watch's (it is
        then consumed), False if it came from elsewhere and must propagate."""
        if self.client_gone and self._task is not None:
            self._task.uncancel()
            return True
        return False
