"""Serve the skills site at the root of the hosts named in ``SKILLS_HOSTS``.

First in ``MIDDLEWARE``. It swaps in ``skills.urls`` on a skills host and, on every response of
the skills site (a skills host, or ``/skills/`` elsewhere), drops any ``Set-Cookie``: the site
holds user content and must never carry a session or CSRF cookie. It is async-capable, so under
ASGI a request does not hop to a thread just to pass through it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import sync_and_async_middleware


def _is_skills_site(request: HttpRequest, hosts: frozenset[str]) -> bool:
    if hosts and request.get_host().rsplit(":", 1)[0].lower() in hosts:
        request.urlconf = "skills.urls"
        return True
    return request.path_info.startswith("/skills/") or request.path_info == "/skills"


def _without_cookies(response: HttpResponse) -> HttpResponse:
    response.cookies.clear()
    return response


@sync_and_async_middleware
def SkillsHostMiddleware(
    get_response: Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]],
) -> Callable[..., HttpResponse | Awaitable[HttpResponse]]:
    hosts = frozenset(settings.SKILLS_HOSTS)

    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponse:
            if _is_skills_site(request, hosts):
                return _without_cookies(await get_response(request))  # type: ignore[misc]
            return await get_response(request)  # type: ignore[misc]

        return markcoroutinefunction(middleware)

    def sync_middleware(request: HttpRequest) -> HttpResponse:
        if _is_skills_site(request, hosts):
            return _without_cookies(get_response(request))  # type: ignore[arg-type]
        return get_response(request)  # type: ignore[return-value]

    return sync_middleware
