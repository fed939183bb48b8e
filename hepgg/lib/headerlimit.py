"""A total size limit on request headers, in front of every surface: 431 in the surface's shape.

uvicorn with httptools (``make run``, ``scripts/serve.sh``) has no header size limit of its own:
it hands the application a 64 KiB header, or a megabyte of them, as readily as a small one (and
uvicorn's h11 parser passes 100 KiB too). Daphne (Twisted) cuts them first: a header line over
16 KiB closes the connection with no answer, and headers over 16 KiB in all get a bare 400.

``header_limit(app)`` answers a request whose header names and values add up to more than
``MAX_REQUEST_HEADER_BYTES`` with ``431 Request Header Fields Too Large``, before any route,
credential look-up or body read, in the shape of the surface the path belongs to:

- ``/v1``: an OpenAI error object (``code: request_headers_too_large``);
- ``/anthropic/``: Anthropic's ``{"type": "error", "error": {"type": "invalid_request_error"}}``;
- the skills site (a ``SKILLS_HOSTS`` host, or ``/skills/``): ``{"errors": [{"path", "message"}]}``;
- everything else (account API, admin, home): ``{"error": "<message>"}``.

The response closes the connection: the request's body, if any, is never read.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

ASGIApp = Callable[
    [dict[str, Any], Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]
]


def _body(scope: dict[str, Any], limit: int) -> bytes:
    from skills.asgi import urlconf_for  # after Django's setup

    message = f"Request headers too large: at most {limit} bytes of header names and values."
    path: str = scope.get("path", "")
    value: Any
    if path == "/v1" or path.startswith("/v1/"):
        value = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": "request_headers_too_large",
            }
        }
    elif path.startswith("/anthropic/"):
        value = {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    elif path.startswith("/skills/") or urlconf_for(scope) == "skills.urls":
        value = {"errors": [{"path": "", "message": message}]}
    else:
        value = {"error": message}
    return json.dumps(value).encode()


def header_limit(app: ASGIApp) -> ASGIApp:
    """``app``, behind the total header size limit (HTTP only; other scopes pass through)."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            limit = settings.MAX_REQUEST_HEADER_BYTES
            size = 0
            for name, value in scope["headers"]:
                size += len(name) + len(value)
            if size > limit:
                body = _body(scope, limit)
                await send(
                    {
                        "type": "http.response.start",
                        "status": 431,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return asgi
