"""The proxy's one error type and its one renderer, in Anthropic's error shape.

Only errors the proxy itself decides are rendered here (a bad proxy token, an unreachable
upstream, a body over the limit); an upstream error response is relayed verbatim instead.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

Send = Callable[[dict[str, Any]], Awaitable[None]]


class ProxyError(Exception):
    """An answer the proxy gives in place of the upstream's: ``status`` and Anthropic's
    ``error.type`` (``authentication_error``, ``api_error``, ``request_too_large``, …)."""

    def __init__(
        self, status: int, error_type: str, message: str, *, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.retry_after = retry_after

    def body(self) -> bytes:
        return json.dumps(
            {"type": "error", "error": {"type": self.error_type, "message": self.message}}
        ).encode()


async def send_proxy_error(send: Send, error: ProxyError) -> None:
    """Render ``error`` as a complete response (only before any response header went out)."""
    body = error.body()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if error.retry_after is not None:
        headers.append((b"retry-after", str(error.retry_after).encode()))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
