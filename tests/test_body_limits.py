"""Request bodies of the routes Django serves are limited before Django spools them: a declared
length over the limit is refused at once, a chunked body as soon as it passes the limit, in the
route's own 413 shape, and nothing of it reaches the disk (under uvicorn, ``make run``'s server).

The server runs with ``TMPDIR`` pointed at a folder of the test's own; while a body is uploaded,
its open files are watched (``/proc/<pid>/fd``): Django spools with ``TemporaryFile``, which leaves
no name in the folder, only an open descriptor into it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from accounts.services import skills_key_issue
from tests.conftest import Member
from tests.servers import ServerProcess, start_hepgg
from tests.skills.conftest import make_zip, skill_files

LIMIT = 1024 * 1024  # every limit of the test servers: below Django's 2.5 MiB in-memory spool
# What the client offers: far more than loopback's socket buffers hold, so that a client still
# sending when the answer comes shows the refusal came early. Django alone spools it to disk.
OVER = 32 * LIMIT
PDF = skill_files("pdf-forms")


@dataclass(frozen=True)
class Route:
    path: str
    check_body: Any  # (response body bytes) -> None

    def url_path(self, key: str) -> str:
        return self.path.replace("KEY", key)


def account_shape(body: bytes) -> None:
    assert json.loads(body) == {
        "error": f"Request body too large (the account API accepts up to {LIMIT} bytes)."
    }


def skills_shape(body: bytes) -> None:
    assert json.loads(body) == {
        "errors": [{"path": "", "message": f"the body is bigger than {LIMIT} bytes (the limit)"}]
    }


def plain_shape(limit: int):
    def check(body: bytes) -> None:
        assert body.decode() == f"Request body too large: this URL accepts up to {limit} bytes.\n"

    return check


ROUTES = {
    "account API": Route("/keys", account_shape),
    "skills import": Route("/skills/k/KEY/import", skills_shape),
    "admin skill upload": Route("/admin/skills/skill/upload/", plain_shape(LIMIT + 64 * 1024)),
    "any other route": Route("/admin/login/", plain_shape(LIMIT)),
}


@dataclass
class Server:
    name: str
    handle: ServerProcess
    tmpdir: Path

    @property
    def port(self) -> int:
        return int(self.handle.base_url.rsplit(":", 1)[1])


@pytest.fixture(scope="module", params=["uvicorn", "daphne"])
def server(
    request: pytest.FixtureRequest,
    django_db_setup: None,
    django_db_blocker: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    tmpdir = tmp_path_factory.mktemp("server-tmp")
    env = {
        "TMPDIR": str(tmpdir),
        "SKILLS_MAX_UPLOAD_BYTES": str(LIMIT),
        "DJANGO_MAX_BODY_BYTES": str(LIMIT),
    }
    with django_db_blocker.unblock():
        handle = start_hepgg(env=env, server=request.param)
    yield Server(request.param, handle, tmpdir)
    handle.stop()


class DiskWatch:
    """Every file under ``folder`` that process ``pid`` holds open, sampled every millisecond."""

    def __init__(self, pid: int, folder: Path) -> None:
        self.fd_dir = Path(f"/proc/{pid}/fd")
        self.folder = str(folder)
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for fd in os.listdir(self.fd_dir):
                try:
                    target = os.readlink(self.fd_dir / fd)
                except OSError:
                    continue
                if target.startswith(self.folder):
                    self.seen.add(target)
            self._stop.wait(0.001)

    def __enter__(self) -> DiskWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes the client got to send before the answer came


def upload(
    server: Server,
    path: str,
    *,
    chunked_total: int = 0,
    declared: int | None = None,
    send_declared: bool = False,
) -> Answer:
    """POST ``path`` over a raw socket: a chunked body of up to ``chunked_total`` bytes (sending
    stops as soon as an answer arrives), or headers declaring ``declared`` bytes (and the bytes
    too with ``send_declared``)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    framing = (
        f"Content-Length: {declared}" if declared is not None else "Transfer-Encoding: chunked"
    )
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\n\r\n"
    )
    sock.sendall(head.encode())
    sent, block = 0, b"x" * 65536
    if declared is not None and send_declared:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < declared:
                sock.sendall(block[: declared - sent])
                sent += min(len(block), declared - sent)
    if declared is None:
        answered = False
        try:
            while sent < chunked_total and not answered:
                sock.sendall(b"%x\r\n%s\r\n" % (len(block), block))
                sent += len(block)
                answered = bool(select.select([sock], [], [], 0)[0])
            if not answered:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    sock.close()
    headers = {name.lower(): value for name, value in response.getheaders()}
    return Answer(response.status, headers, body, sent)


def route_path(route: Route, member: Member) -> str:
    _, key = skills_key_issue(account=member.account, name="limits")
    return route.url_path(key)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", ROUTES)
def test_an_over_limit_chunked_upload_gets_413_and_never_reaches_the_disk(
    server: Server, name: str, member: Member
) -> None:
    route = ROUTES[name]
    path = route_path(route, member)
    with DiskWatch(server.handle.process.pid, server.tmpdir) as watch:
        answer = upload(server, path, chunked_total=OVER)

    assert answer.status == 413
    route.check_body(answer.body)
    if server.name == "uvicorn":
        # Daphne cannot pass this: Twisted writes the whole body to a temporary file before the
        # application is called (see hepgg.lib.bodylimit).
        assert watch.seen == set()
        assert answer.sent < OVER  # refused while the client was still sending
    assert list(server.tmpdir.iterdir()) == []
    assert answer.headers["connection"] == "close"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", ROUTES)
def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(
    server: Server, name: str, member: Member
) -> None:
    route = ROUTES[name]
    # Twisted calls the application only once the whole body is in: daphne can refuse no sooner.
    declared = 4 * LIMIT if server.name == "daphne" else 100 * LIMIT

    answer = upload(
        server, route_path(route, member), declared=declared, send_declared=server.name == "daphne"
    )

    assert answer.status == 413
    route.check_body(answer.body)


@pytest.mark.django_db(transaction=True)
def test_a_within_limit_chunked_import_still_works(server: Server, member: Member) -> None:
    _, key = skills_key_issue(account=member.account, name="limits")
    archive = make_zip(PDF, prefix="pdf-forms/")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    sock.sendall(
        f"POST /skills/k/{key}/import HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/zip\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    )
    for start in range(0, len(archive), 1000):
        part = archive[start : start + 1000]
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
    sock.sendall(b"0\r\n\r\n")
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = json.loads(response.read())
    sock.close()

    assert response.status == 201
    assert body["skills"][0]["name"] == "pdf-forms"


@pytest.mark.django_db(transaction=True)
def test_a_within_limit_account_api_body_still_works(server: Server, member: Member) -> None:
    import httpx

    response = httpx.post(
        f"{server.handle.base_url}/sync/machines",
        headers={"Authorization": f"Bearer {member.master_token}"},
        json={"hostname": "laptop", "platform": "linux", "ccas_version": "x" * 50},
        timeout=15,
    )

    assert response.status_code == 201
