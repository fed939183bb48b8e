"""ASGI lifespan: on graceful shutdown, flush buffered usage and rate-limit charges, and close
outbound connections."""

from __future__ import annotations

from typing import Any

from hepgg.lib.outbound import close_client_session
from hepgg.lib.ratelimit import flush_charges
from usage.writer import usage_writer


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await usage_writer.aflush()
            await flush_charges()
            await close_client_session()
            await send({"type": "lifespan.shutdown.complete"})
            return
