"""The hot paths' outbound client (``hepgg.lib.http1``) against real sockets on loopback: servers
that speak HTTP/1.1 the way upstreams do, including the ways they misbehave."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from hepgg.lib import http1

pytestmark = pytest.mark.asyncio


class Upstream:
    """A loopback HTTP/1.1 server whose answer to each request is a script of raw writes."""

    def __init__(self, answer) -> None:
        self.answer = answer  # async (reader, writer, head, body) -> keep the connection?
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> Upstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader, writer) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                body = b""
                lower = head.lower()
                if b"content-length:" in lower:
                    length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
                    body = await reader.readexactly(length)
                elif b"transfer-encoding: chunked" in lower:
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                        chunk = await reader.readexactly(size + 2)
                        if size == 0:
                            break
                        body += chunk[:-2]
                self.requests.append((head, body))
                if not await self.answer(reader, writer, head, body):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(body: bytes = b'{"ok":true}', *, close: bool = False):
    async def answer(reader, writer, head, request_body) -> bool:
        extra = b"connection: close\r\n" if close else b""
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n%scontent-length: %d\r\n\r\n%s"
            % (extra, len(body), body)
        )
        await writer.drain()
        return not close

    return answer


async def call(url: str, *, body=b"{}", method: str = "POST", read_timeout: float = 5.0):
    return await http1.client().request(
        method,
        url,
        headers=[("content-type", "application/json"), ("authorization", "Bearer k")],
        body=body,
        connect_timeout=2.0,
        read_timeout=read_timeout,
    )


async def test_requests_reuse_one_keep_alive_connection_and_send_headers_and_body() -> None:
    async with Upstream(ok()) as upstream:
        for n in range(5):
            response = await call(upstream.url + "/v1/chat?x=1", body=b'{"n":%d}' % n)
            assert response.status == 200
            assert response.header(b"content-type") == "application/json"
            assert await response.read() == b'{"ok":true}'
            response.release()
        assert upstream.connections == 1
        head, body = upstream.requests[-1]
        assert head.startswith(b"POST /v1/chat?x=1 HTTP/1.1\r\n")
        assert b"authorization: Bearer k\r\n" in head
        assert b"Host: 127.0.0.1:" in head
        assert body == b'{"n":4}'


async def test_a_pooled_connection_the_upstream_closed_while_idle_is_never_used() -> None:
    # The upstream answers, then closes the connection after each answer (as one does when its
    # keep-alive timeout passes between two of our requests, without saying so in a header).
    async def answer_then_hang_up(reader, writer, head, body) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        return False

    async with Upstream(answer_then_hang_up) as upstream:
        for _ in range(3):
            response = await call(upstream.url)
            assert await response.read() == b"ok"
            response.release()
            await asyncio.sleep(0.05)  # the upstream's close reaches us before the next request
        assert len(upstream.requests) == 3  # each request reached the upstream exactly once
        assert upstream.connections == 3


async def test_a_streamed_request_body_goes_chunked_and_a_declared_length_is_kept() -> None:
    async def parts():
        for part in (b"hello ", b"", b"world"):
            yield part

    async with Upstream(ok()) as upstream:
        response = await call(upstream.url, body=parts())
        await response.read()
        response.release()
        head, body = upstream.requests[-1]
        assert b"Transfer-Encoding: chunked" in head
        assert body == b"hello world"

        response = await http1.client().request(
            "POST",
            upstream.url,
            headers=[("Content-Length", "11")],
            body=parts(),
            connect_timeout=2,
            read_timeout=2,
        )
        await response.read()
        response.release()
        head, body = upstream.requests[-1]
        assert b"Content-Length: 11" in head and b"chunked" not in head
        assert body == b"hello world"


async def test_chunked_and_connection_delimited_bodies_arrive_whole() -> None:
    async def chunked(reader, writer, head, body) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for part in (b"data: 1\n\n", b"data: 2\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        return True

    async with Upstream(chunked) as upstream:
        response = await call(upstream.url)
        parts = [chunk async for chunk in response.iter_chunks()]
        assert b"".join(parts) == b"data: 1\n\ndata: 2\n\n"
        assert len(parts) == 2  # each part as it arrived, not buffered to the end
        response.release()

    async def until_close(reader, writer, head, body) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it")
        await writer.drain()
        return False

    async with Upstream(until_close) as upstream:
        response = await call(upstream.url)
        assert await response.read() == b"all of it"
        response.release()


async def test_a_head_request_ends_at_the_headers_whatever_length_they_announce() -> None:
    async def head_answer(reader, writer, head, body) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
        await writer.drain()
        return True

    async with Upstream(head_answer) as upstream:
        response = await call(upstream.url, method="HEAD", body=b"")
        assert response.status == 200
        assert await response.read() == b""
        response.release()


async def test_failures_say_whether_the_request_reached_the_upstream() -> None:
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    with pytest.raises(http1.NotReached):
        await call(f"http://127.0.0.1:{dead}/")

    async def silent(reader, writer, head, body) -> bool:
        await asyncio.sleep(10)
        return False

    async with Upstream(silent) as upstream:
        with pytest.raises(http1.ReadTimeout) as timed_out:
            await call(upstream.url, read_timeout=0.2)
        assert isinstance(timed_out.value, TimeoutError)
        assert not isinstance(timed_out.value, http1.NotReached)

    async def reset_mid_body(reader, writer, head, body) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()
        writer.transport.abort()
        return False

    async with Upstream(reset_mid_body) as upstream:
        response = await call(upstream.url)
        assert response.status == 200
        with pytest.raises(http1.ConnectionBroken):
            await response.read()
        response.close()

    async def garbage(reader, writer, head, body) -> bool:
        writer.write(b"this is not HTTP\r\n\r\n")
        await writer.drain()
        return False

    async with Upstream(garbage) as upstream:
        with pytest.raises(http1.ConnectionBroken):
            await call(upstream.url)


async def test_a_slow_reader_pauses_the_upstream_instead_of_buffering_its_whole_stream() -> None:
    total = 64 * 1024 * 1024
    sent = 0

    async def firehose(reader, writer, head, body) -> bool:
        nonlocal sent
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        block = b"x" * 65536
        while sent < total:
            writer.write(block)
            sent += len(block)
            await writer.drain()
        return False

    async with Upstream(firehose) as upstream:
        response = await call(upstream.url)
        first = await response.readany()
        await asyncio.sleep(0.5)  # we read nothing for a while: the upstream must stall
        assert sent < 16 * 1024 * 1024, f"the upstream pushed {sent} bytes into our buffers"
        received = len(first)
        while chunk := await response.readany():
            received += len(chunk)
        assert received == total
        response.release()


async def test_a_response_closed_early_frees_its_connection_for_the_pool_limit(settings) -> None:
    settings.OUTBOUND_MAX_CONNECTIONS = 2
    http1._clients.clear()

    async def endless(reader, writer, head, body) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\nstart")
        await writer.drain()
        await asyncio.sleep(10)
        return False

    async with Upstream(endless) as upstream:
        for _ in range(5):  # more than the limit: each abandoned response gives its slot back
            response = await asyncio.wait_for(call(upstream.url), 2)
            assert await response.readany() == b"start"
            response.close()
        assert upstream.connections == 5
    http1._clients.clear()


async def test_https_upstreams_are_verified_against_the_trusted_authorities(
    tmp_path, monkeypatch
) -> None:
    # Cloudflare and Anthropic are https: a loopback TLS upstream with its own authority, which
    # the client trusts only once it is in the bundle it reads (SSL_CERT_FILE, as OpenSSL does).
    import ssl
    import subprocess

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def serve(reader, writer) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecure")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    url = f"https://localhost:{server.sockets[0].getsockname()[1]}/v1/messages"
    try:
        http1._ssl_context.cache_clear()
        http1._parse_url.cache_clear()
        with pytest.raises(http1.NotReached):  # not trusted yet: refused before anything is sent
            await call(url)

        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        http1._ssl_context.cache_clear()
        http1._parse_url.cache_clear()
        response = await call(url)
        assert await response.read() == b"secure"
        response.release()
    finally:
        server.close()
        http1._ssl_context.cache_clear()
        http1._parse_url.cache_clear()
