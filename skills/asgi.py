"""The skills site's read path, served ahead of Django's request stack (like ``/v1``).

``skills_site(app)`` wraps an ASGI app. A ``GET``/``HEAD`` of the skills site (a ``SKILLS_HOSTS``
host, or ``/skills/`` elsewhere) that resolves to one of the site's read views is answered here:
the same URLconf, the same async view, the same response builders as through Django, and the
same response headers from ``SecurityMiddleware``/``XFrameOptionsMiddleware`` (CPU-only code,
called directly). What it skips is what a read of cached, immutable bytes never needs: the
request signals, the session, auth, CSRF and messages middleware, each of which costs a thread
hop under ASGI (Django's handler alone is ~3.5 ms a request on the benchmark machine, against
a read budget of well under 1 ms). Anything else (imports, the admin, other hosts) goes to ``app``.

Wiring: ``hepgg.asgi`` mounts Django as ``skills_site(django_asgi_app)``.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.core.handlers.exception import response_for_exception
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import Resolver404, get_resolver

from skills import responses

ASGIApp = Callable[
    [dict[str, Any], Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]
]

logger = logging.getLogger(__name__)


def _fast_views() -> frozenset[Callable[..., Any]]:
    """The views that read caches only (or the database through ``sync_to_async`` on a miss)."""
    from skills import views  # after Django's setup: ``skills_site`` is built by then

    return frozenset(
        {
            views.raw_file,
            views.skill_page,
            views.archive_zip,
            views.archive_root,
            views.site_index,
            views.llms_txt,
            views.index_json,
            views.legacy_index,
            views.discovery_index,
        }
    )


def _unreachable(request: Any) -> HttpResponse:  # the middlewares below never call onwards
    raise AssertionError("not called")


def _host(scope: dict[str, Any]) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"host":
            return value.decode("latin1").rsplit(":", 1)[0].lower()
    return ""


def urlconf_for(scope: dict[str, Any]) -> str:
    """The URLconf Django resolves ``scope`` with: ``skills.urls`` on a skills host."""
    hosts = settings.SKILLS_HOSTS
    return "skills.urls" if hosts and _host(scope) in hosts else settings.ROOT_URLCONF


def _route(scope: dict[str, Any], hosts: frozenset[str]) -> tuple[str, str] | None:
    """``(urlconf, path within it)`` when the request is for the skills site, else None."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    if hosts and _host(scope) in hosts:
        return "skills.urls", path
    if path.startswith("/skills/"):
        return settings.ROOT_URLCONF, path
    return None


# A body over this goes out in pieces of this size (``more_body``), one per ``send``: uvicorn's
# ``send`` waits while the transport is over its high-water mark, so a slow client holds about
# one piece in the server, whatever the body's size, and the loop serves other requests between
# pieces. One ``send`` of a whole 20 MiB zip was cheap under uvloop (it writes a bytes body
# without copying it), but asyncio's own loop copied each one into the transport's buffer (32
# downloads: 715 MB peak RSS, against 162 MB in pieces; bench/README.md, "Skills zip
# downloads"), and daphne buffers whatever it is sent.
BODY_CHUNK = 128 * 1024
# A client that reads as fast as we write never makes ``send`` wait, so yield to the loop after
# this many bytes anyway: a long body holds the loop for at most this much work at a time (not
# after every piece: 32 downloads rescheduled per piece crowd the loop's ready queue).
YIELD_EVERY = 8 * BODY_CHUNK


async def _send(response: HttpResponse, send: Callable[..., Awaitable[Any]]) -> None:
    headers = [(name.encode("ascii"), value.encode("latin1")) for name, value in response.items()]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    body = response.content  # the cached bytes themselves (HttpResponse keeps a bytes body as is)
    if len(body) <= BODY_CHUNK:
        await send({"type": "http.response.body", "body": body})
        return
    last = len(body) - BODY_CHUNK
    for offset in range(0, len(body), BODY_CHUNK):
        more = offset < last
        await send(
            {
                "type": "http.response.body",
                "body": body[offset : offset + BODY_CHUNK],
                "more_body": more,
            }
        )
        if more and (offset + BODY_CHUNK) % YIELD_EVERY == 0:
            await asyncio.sleep(0)


def skills_site(app: ASGIApp) -> ASGIApp:
    """Answer the skills site's reads directly; hand everything else to ``app``."""
    hosts = frozenset(settings.SKILLS_HOSTS)
    fast_views = _fast_views()
    security = SecurityMiddleware(_unreachable)
    xframe = XFrameOptionsMiddleware(_unreachable)

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            return await app(scope, receive, send)
        route = _route(scope, hosts)
        if route is None:
            return await app(scope, receive, send)
        urlconf, path = route
        try:
            match = get_resolver(urlconf).resolve(path)
        except Resolver404:
            return await app(scope, receive, send)
        if match.func not in fast_views:
            return await app(scope, receive, send)
        request = ASGIRequest(scope, io.BytesIO())
        try:
            request.get_host()  # ALLOWED_HOSTS: let Django answer a bad Host its own way
        except DisallowedHost:
            return await app(scope, receive, send)
        if urlconf == "skills.urls":
            request.urlconf = urlconf
        request.resolver_match = match
        try:
            response = await match.func(request, *match.args, **match.kwargs)
        except (OperationalError, InterfaceError):
            # A read the caches could not answer, with the database unreachable: a quick 503
            # the client may retry, not a 500.
            logger.warning("skills read needs the database, which is unavailable")
            response = responses.unavailable(key=match.kwargs.get("key"))
        except Exception as exc:  # what Django's handler would answer, 500 included
            logger.exception("skills read failed: %s", request.path)
            response = response_for_exception(request, exc)
        response = xframe.process_response(request, security.process_response(request, response))
        response.cookies.clear()
        await _send(response, send)

    return asgi
