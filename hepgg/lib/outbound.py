"""The outbound HTTP client of the hot paths: one pooled aiohttp session per event loop.

aiohttp, not httpx, on the hot path: on this hardware a forwarder built on aiohttp's client served
several times the requests per second of the same forwarder on httpx (numbers in the gateway
issue's note and ``bench/``). httpx stays fine for cold paths and the CLI.

A session (and its connection pool) belongs to the loop that made it, so each loop gets its own;
callers pass explicit timeouts per request.
"""

from __future__ import annotations

import asyncio
import weakref

import aiohttp
from django.conf import settings

_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
    weakref.WeakKeyDictionary()
)


def client_session() -> aiohttp.ClientSession:
    """The running loop's pooled session (created on first use)."""
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        connector = aiohttp.TCPConnector(
            limit=settings.OUTBOUND_MAX_CONNECTIONS,
            limit_per_host=0,
            ttl_dns_cache=300,
            keepalive_timeout=30,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,
            # One session serves every caller: a shared cookie jar would hand one user's
            # upstream cookies to the next user's requests.
            cookie_jar=aiohttp.DummyCookieJar(),
            # The gateway decides per request; the proxy passes compressed bytes through.
            auto_decompress=True,
        )
        _sessions[loop] = session
    return session


async def close_client_session() -> None:
    """Close the running loop's session (graceful shutdown)."""
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None and not session.closed:
        await session.close()
