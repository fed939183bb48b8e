"""A large skill's zip goes out in bounded pieces, paced by the client: it arrives byte for byte,
and the server keeps answering ``/v1`` while slow clients hold big downloads open
(``skills.asgi._send``)."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connections

from accounts.services import api_key_mint
from catalog.models import CatalogModel
from skills import registry
from skills.asgi import skills_site
from skills.services import skills_import
from tests.conftest import Member
from tests.servers import ServerProcess

pytestmark = pytest.mark.django_db(transaction=True)

NAME = "big-stream"


@pytest.fixture
def big_skill(transactional_db: None, member: Member) -> Iterator[str]:
    skills_import(
        account=member.account,
        files={
            "SKILL.md": f"---\nname: {NAME}\ndescription: a large skill\n---\n".encode(),
            "data/a.bin": os.urandom(6 * 1024 * 1024),  # incompressible: a ~12 MiB zip
            "data/b.bin": os.urandom(6 * 1024 * 1024),
        },
        visibility="public",
    )
    registry.clear_local()
    yield NAME
    registry.clear_local()


async def _unreachable(scope: dict[str, Any], receive: Any, send: Any) -> None:
    raise AssertionError(f"the zip was not served by the skills site's read path: {scope}")


def test_the_zip_is_sent_in_bounded_pieces_that_add_up_to_the_zip(big_skill: str) -> None:
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"/skills/{big_skill}.zip",
        "raw_path": f"/skills/{big_skill}.zip".encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }

    async def serve() -> None:
        try:
            await skills_site(_unreachable)(scope, receive, send)
        finally:
            # The registry read the blobs on asgiref's shared thread: close its connection.
            await sync_to_async(connections.close_all)()

    async_to_sync(serve)()
    start, *bodies = messages
    assert start["status"] == 200
    headers = {name.lower(): value for name, value in start["headers"]}
    body = b"".join(m["body"] for m in bodies)
    assert len(body) == int(headers[b"content-length"]) > 10 * 1024 * 1024
    assert f'"{hashlib.sha256(body).hexdigest()}"'.encode() == headers[b"etag"]
    # Pieces of at most 256 KiB, so at least 40 of them for a 10 MiB body.
    assert len(bodies) >= 40
    assert all(0 < len(m["body"]) <= 256 * 1024 for m in bodies)
    assert [m.get("more_body", False) for m in bodies] == [True] * (len(bodies) - 1) + [False]


def _open_download(base_url: str, path: str) -> tuple[socket.socket, dict[str, str], bytes]:
    """A GET of ``path`` that reads the headers and the first bytes, then stops reading."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the download before its headers"
        received += chunk
    head, rest = received.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 200"), lines[0]
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return sock, headers, rest


def _finish_download(sock: socket.socket, headers: dict[str, str], start: bytes) -> bytes:
    body = bytearray(start)
    length = int(headers["content-length"])
    with sock:
        while len(body) < length:
            chunk = sock.recv(1024 * 1024)
            assert chunk, f"the download ended after {len(body)} of {length} bytes"
            body += chunk
    return bytes(body)


def test_v1_answers_while_slow_clients_hold_large_downloads_open(
    hepgg_server: Callable[..., ServerProcess],
    big_skill: str,
    member: Member,
    catalog_model: CatalogModel,
) -> None:
    _, key = api_key_mint(account=member.account, model=catalog_model.slug)
    server = hepgg_server(server="uvicorn")  # make run's server
    path = f"/skills/{big_skill}.zip"
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        whole = http.get(path)  # builds and caches the zip
        assert whole.status_code == 200
        etag = whole.headers["etag"]
        assert etag == f'"{hashlib.sha256(whole.content).hexdigest()}"'

        downloads = [_open_download(server.base_url, path) for _ in range(8)]
        # Eight clients that read nothing more: the server must not stall on them.
        worst = 0.0
        for _ in range(20):
            started = time.monotonic()
            answer = http.get("/v1/models", headers={"authorization": f"Bearer {key}"})
            worst = max(worst, time.monotonic() - started)
            assert answer.status_code == 200
        assert worst < 2.0, f"/v1/models took {worst:.2f} s while downloads were held open"

    for sock, headers, start in downloads:
        assert headers["etag"] == etag
        body = _finish_download(sock, headers, start)
        assert body == whole.content  # byte for byte, after the pause
