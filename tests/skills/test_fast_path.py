"""``skills.asgi.skills_site`` answers reads ahead of Django exactly as Django's views do."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.asgi import get_asgi_application
from django.db import connections
from django.test import override_settings

from skills.asgi import skills_site
from tests.skills.conftest import make_zip, skill_files

PDF = skill_files("pdf-forms")


@pytest.fixture(autouse=True)
def _close_executor_connections() -> Iterator[None]:
    """Outside ``async_to_sync``, ``sync_to_async`` runs in asgiref's own thread, whose
    database connection would otherwise outlive the test (and block dropping the test DB)."""
    yield
    asyncio.run(sync_to_async(connections.close_all)())


# Headers Django's full stack adds that the read path has no use for (no session, no CSRF).
IGNORED = {"vary", "set-cookie"}


class Recorder:
    """An inner app that records whether the request fell through to it."""

    def __init__(self) -> None:
        self.django = get_asgi_application()
        self.calls: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls.append(scope["path"])
        await self.django(scope, receive, send)


async def call(
    app: Any,
    path: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    host: str = "testserver",
) -> tuple[int, dict[str, str], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "headers": [(b"host", host.encode())]
        + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    messages: list[dict[str, Any]] = []
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = messages[0]
    headers_out = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in messages[1:])
    return start["status"], headers_out, body


PATHS = [
    "/skills/pdf-forms/SKILL.md",
    "/skills/pdf-forms@1/reference.md",
    "/skills/pdf-forms/assets/marker.png",
    "/skills/pdf-forms.zip",
    "/skills/.well-known/agent-skills/pdf-forms@1.zip",
    "/skills/.well-known/agent-skills/index.json",
    "/skills/.well-known/skills/index.json",
    "/skills/index.json",
    "/skills/llms.txt",
    "/skills/no-such-skill/SKILL.md",
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", PATHS)
def test_the_read_path_answers_like_django(client, publisher, path):
    publisher.upload(client, make_zip(PDF))
    recorder = Recorder()
    fast = skills_site(recorder)

    async def both() -> tuple[Any, Any]:
        return await call(fast, path), await call(recorder.django, path)

    (status, headers, body), (d_status, d_headers, d_body) = asyncio.run(both())
    assert recorder.calls == []  # answered ahead of Django
    assert (status, body) == (d_status, d_body)
    strip = lambda h: {k: v for k, v in h.items() if k not in IGNORED}  # noqa: E731
    assert strip(headers) == strip(d_headers)


@pytest.mark.django_db(transaction=True)
def test_imports_and_other_sites_fall_through_to_django(client, publisher):
    publisher.upload(client, make_zip(PDF))
    recorder = Recorder()
    fast = skills_site(recorder)

    async def run() -> None:
        await call(fast, "/healthz")
        await call(fast, f"{publisher.root}import", method="POST")
        await call(fast, "/skills/pdf-forms/SKILL.md", method="DELETE")

    asyncio.run(run())
    assert recorder.calls == ["/healthz", f"{publisher.root}import", "/skills/pdf-forms/SKILL.md"]


@pytest.mark.django_db(transaction=True)
def test_it_serves_the_root_of_a_skills_host(client, publisher):
    publisher.upload(client, make_zip(PDF))
    with override_settings(SKILLS_HOSTS=["skills.example.test"]):
        fast = skills_site(Recorder())
        status, headers, body = asyncio.run(
            call(fast, "/pdf-forms/SKILL.md", host="skills.example.test")
        )
    assert status == 200 and body == PDF["SKILL.md"]
    assert "set-cookie" not in headers


@pytest.mark.django_db(transaction=True)
def test_a_revalidation_is_a_304_without_the_body(client, publisher):
    publisher.upload(client, make_zip(PDF))
    fast = skills_site(Recorder())

    async def run() -> tuple[int, bytes]:
        _, headers, _ = await call(fast, "/skills/pdf-forms/SKILL.md")
        status, _, body = await call(
            fast, "/skills/pdf-forms/SKILL.md", {"If-None-Match": headers["etag"]}
        )
        return status, body

    assert asyncio.run(run()) == (304, b"")
