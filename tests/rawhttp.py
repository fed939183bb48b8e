"""A client that does what no SDK does on purpose: send a whole request, then hang up before
the response's headers arrive."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from tests.waits import wait_until


def leave_before_headers(
    url: str, *, headers: dict[str, str], body: bytes, sent: Callable[[], Any], timeout: float = 10
) -> None:
    """POST ``body`` to ``url`` over a raw socket, wait until ``sent()`` says the upstream has
    the request, then close the connection. Fails if any response byte came back first."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [
        f"POST {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1",
        f"Host: {host}:{port}",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        wait_until(sent, timeout=timeout, what="the upstream to receive the request")
        sock.setblocking(False)
        try:
            early = sock.recv(65536)
        except BlockingIOError:
            early = b""
        assert early == b"", f"the response had started: {early[:200]!r}"
