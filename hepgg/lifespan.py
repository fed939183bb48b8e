"""Start-up and shutdown of a server process, whichever server runs it.

- Start-up (``startup``, called once per process when ``hepgg.asgi`` is imported, since daphne
  sends no lifespan events): usage spilled to disk by an earlier process that died during a
  database outage is replayed in a thread. Under uvicorn the lifespan start-up also starts the
  usage writer process (``usage.writer_process``); under daphne the first flush does.
- Shutdown: every batching buffer (``hepgg.lib.batching``: usage, rate-limit charges and
  snapshots) is flushed, then outbound connections and the writer thread's database
  connection are closed. Under uvicorn (``--lifespan on``) the ASGI lifespan shutdown does it
  on the event loop (``shutdown``); under daphne an exit hook does it (``shutdown_at_exit``);
  under uvicorn the hook runs too and finds nothing left to write.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from typing import Any

from hepgg.lib import batching
from hepgg.lib.http1 import close_client

_started = threading.Event()


def startup() -> None:
    """Once per process: replay usage that an earlier process left on disk."""
    if _started.is_set():
        return
    _started.set()
    from usage.writer import usage_writer

    usage_writer.start_replay()
    atexit.register(shutdown_at_exit)


async def shutdown() -> None:
    """Graceful shutdown on the event loop: write every buffer, close outbound connections
    and the writer thread's database connection."""
    await batching.flush_all()
    await close_client()
    await asyncio.to_thread(_stop_usage_writer_process)
    await asyncio.to_thread(batching.close_writer_connections)


def shutdown_at_exit() -> None:
    """The same for a server with no lifespan (daphne): from an exit hook, with no loop."""
    batching.flush_all_sync()
    _stop_usage_writer_process()


def _start_usage_writer_process() -> None:
    from usage.writer import usage_writer

    usage_writer.start_process()


def _stop_usage_writer_process() -> None:
    from usage.writer import usage_writer

    usage_writer.stop_process()


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            startup()
            await asyncio.to_thread(_start_usage_writer_process)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
