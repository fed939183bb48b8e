"""Request-body limits of the routes Django serves, enforced before Django reads a byte.

Django's ASGI handler reads the whole body into a ``SpooledTemporaryFile`` (on disk above
``FILE_UPLOAD_MAX_MEMORY_SIZE``) before any middleware, view or parser runs, so a limit checked
there comes after an over-limit chunked upload has reached the disk. ``bounded_bodies(app)`` sits
in front of Django's handler: it resolves the request's route, takes that route's limit, refuses a
``Content-Length`` over it at once and counts the bytes of any other body as ``receive()`` hands
them over, answering 413 as soon as the count passes the limit. Django then sees a disconnect and
stops reading; nothing past the limit is read, and under uvicorn nothing reaches the disk while the
limit stays below ``FILE_UPLOAD_MAX_MEMORY_SIZE``.

A view declares its limit, and the 413 in its surface's shape, with ``body_limit``
(``@body_limit(BodyLimit(...))`` on a function, a ``body_limit`` attribute on a view class);
every other route gets ``DJANGO_MAX_BODY_BYTES`` and a plain-text 413. ``/v1``, ``/anthropic``
and the skills site's reads never come here: they bound their own bodies.

Daphne is the exception: Twisted writes every request body over 100 kB, or without a length, to a
temporary file before the application is called. The 413 still comes from here, but under daphne
the disk write has already happened (one reason ``make run`` serves with uvicorn).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.http import HttpResponse
from django.urls import Resolver404, get_resolver

ASGIApp = Callable[
    [dict[str, Any], Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]
]
V = TypeVar("V")


@dataclass(frozen=True)
class BodyLimit:
    """A route's body limit (read per request, so a settings change applies) and its 413."""

    max_bytes: Callable[[], int]
    # (the limit, the route's URL kwargs) -> the 413 response in the route's own shape
    too_large: Callable[[int, dict[str, Any]], HttpResponse]


def plain_too_large(limit: int, kwargs: dict[str, Any]) -> HttpResponse:
    return HttpResponse(
        f"Request body too large: this URL accepts up to {limit} bytes.\n",
        status=413,
        content_type="text/plain; charset=utf-8",
    )


DEFAULT = BodyLimit(lambda: settings.DJANGO_MAX_BODY_BYTES, plain_too_large)


def body_limit(limit: BodyLimit) -> Callable[[V], V]:
    """Declare ``view``'s body limit (applied by ``bounded_bodies``, before the view runs)."""

    def declare(view: V) -> V:
        view.body_limit = limit  # type: ignore[attr-defined]
        return view

    return declare


def _limit_for(scope: dict[str, Any], urlconf: str) -> tuple[BodyLimit, dict[str, Any]]:
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    try:
        match = get_resolver(urlconf).resolve(path)
    except Resolver404:
        return DEFAULT, {}
    view = match.func
    limit = getattr(view, "body_limit", None) or getattr(
        getattr(view, "view_class", None), "body_limit", None
    )
    return (limit or DEFAULT), match.kwargs


def _content_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _refuse(response: HttpResponse, send: Callable[..., Awaitable[Any]]) -> None:
    body = response.content
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.items()]
    headers += [(b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def bounded_bodies(app: ASGIApp, *, urlconf_for: Callable[[dict[str, Any]], str]) -> ASGIApp:
    """``app`` (Django's handler) behind per-route body limits; ``urlconf_for(scope)`` names the
    URLconf Django will resolve the request with (it differs per host)."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        limit, kwargs = _limit_for(scope, urlconf_for(scope))
        max_bytes = limit.max_bytes()
        declared = _content_length(scope)
        if declared is not None and declared > max_bytes:
            return await _refuse(limit.too_large(max_bytes, kwargs), send)
        received = 0
        refused = False

        async def counted_receive() -> dict[str, Any]:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    refused = True
                    await _refuse(limit.too_large(max_bytes, kwargs), send)
                    # Django's handler stops reading at a disconnect and sends nothing more.
                    return {"type": "http.disconnect"}
            return message

        await app(scope, counted_receive, send)

    return asgi
