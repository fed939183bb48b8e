"""Download one operator-given URL into a file, with the guards a server-side fetch needs.

``download(url, into, policy)`` is for URLs that come from outside the code (``manage.py
import_skills URL``), not for the hot paths' upstreams (``hepgg.lib.http1``). It refuses:

- a scheme other than https (http too with ``allow_http``);
- a host that resolves to an address that is not public: unspecified, multicast, link-local
  (169.254.169.254 is where clouds serve their credentials) and reserved addresses always;
  loopback and private ones unless ``allow_private`` (the operator's own network, and the tests).
  IPv4 addresses inside IPv6 ones (mapped, 6to4, Teredo, NAT64) are judged as IPv4. The name is
  resolved once and the connection goes to the address that was checked (the TLS certificate is
  still verified against the name), so a DNS answer that changes between check and connect
  (rebinding) cannot slip through;
- every redirect hop is checked the same way, at most ``max_redirects`` of them, and credentials
  from the URL's userinfo go only to the URL's own origin;
- a body over ``max_bytes``, counted as it arrives (a declared Content-Length over it is refused
  before reading); and the whole download, redirects included, must end within ``timeout``.

Errors are ``DownloadRefused`` with a message that never holds the URL's userinfo or query string
(either may carry a token): ``redact_url`` is the one way a URL is shown.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from typing import IO
from urllib.parse import urlsplit

import certifi
import httpx

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT: not Python's "private"
# What ``allow_private`` opens; link-local, multicast, unspecified and reserved stay shut.
_PRIVATE_KINDS = frozenset({"a loopback address", "a private address"})


class DownloadRefused(Exception):
    """The URL, an address it resolved to, a redirect, the answer or a limit was refused."""


@dataclass(frozen=True)
class DownloadPolicy:
    max_bytes: int
    timeout: float = 60.0  # seconds for everything: resolving, redirects, the whole body
    allow_http: bool = False
    allow_private: bool = False  # loopback and private networks (never link-local etc.)
    max_redirects: int = 5
    ca_file: str | None = None  # a CA bundle to verify https with instead of certifi's


def redact_url(url: str) -> str:
    """``url`` without what may be a secret: userinfo and query string become ``***``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(an unparsable URL)"
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    if "@" in parts.netloc:
        netloc = f"***@{netloc}"
    query = "?***" if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What kind of non-public address ``ip`` is, or None for a public one."""
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private or ip in _SHARED or not ip.is_global:
        return "a private address"
    return None


def address_problem(address: str, *, allow_private: bool) -> str | None:
    """Why a connection to ``address`` is refused, or None when it is allowed."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone index
    # An IPv6 address that carries an IPv4 one reaches that IPv4 address: judge that one.
    embedded = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else []
    for candidate in embedded or [ip]:
        kind = _kind(candidate)
        if kind is None:
            continue
        if allow_private and kind in _PRIVATE_KINDS:
            continue
        return kind
    return None


async def _resolve(host: str, port: int, policy: DownloadPolicy) -> str:
    """The one address to connect to; every address the name has must be allowed."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (socket.gaierror, UnicodeError) as exc:
        raise DownloadRefused(f"cannot resolve {host}: {exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise DownloadRefused(f"{host} has no address")
    for address in addresses:
        problem = address_problem(address, allow_private=policy.allow_private)
        if problem is not None:
            hint = " (--allow-private-network allows it)" if problem in _PRIVATE_KINDS else ""
            raise DownloadRefused(f"{host} resolves to {address}, {problem}{hint}")
    return addresses[0]


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


def _check_scheme(url: httpx.URL, policy: DownloadPolicy) -> None:
    allowed = ("https", "http") if policy.allow_http else ("https",)
    if url.scheme not in allowed:
        extra = " (--allow-http allows http)" if url.scheme == "http" else ""
        raise DownloadRefused(f"{redact_url(str(url))}: only https URLs are fetched{extra}")
    if not url.host:
        raise DownloadRefused(f"{redact_url(str(url))} has no host")


def _ssl_context(policy: DownloadPolicy) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=policy.ca_file or certifi.where())


async def _fetch(url: str, into: IO[bytes], policy: DownloadPolicy) -> None:
    current = httpx.URL(url)
    first_origin = _origin(current)
    auth = None
    if current.username or current.password:
        auth = httpx.BasicAuth(current.username, current.password)
    async with httpx.AsyncClient(
        verify=_ssl_context(policy),
        trust_env=False,  # no proxy from the environment: it would resolve the name itself
        follow_redirects=False,
        timeout=httpx.Timeout(policy.timeout),
    ) as client:
        for _hop in range(policy.max_redirects + 1):
            _check_scheme(current, policy)
            port = current.port or (443 if current.scheme == "https" else 80)
            address = await _resolve(current.host, port, policy)
            request = client.build_request(
                "GET",
                current.copy_with(host=address, username=None, password=None, fragment=None),
                headers={"Host": current.netloc.decode("ascii"), "Accept-Encoding": "identity"},
                # TLS is checked against the name, while the socket goes to the checked address.
                extensions={"sni_hostname": current.host} if current.scheme == "https" else {},
            )
            same_origin = _origin(current) == first_origin
            response = await client.send(request, stream=True, auth=auth if same_origin else None)
            try:
                if response.is_redirect:
                    location = response.headers["location"]
                    current = current.join(location)
                    continue
                if response.status_code != 200:
                    raise DownloadRefused(
                        f"GET {redact_url(str(current))} answered {response.status_code}"
                    )
                await _read_body(response, into, policy.max_bytes, current)
                return
            finally:
                await response.aclose()
    raise DownloadRefused(f"more than {policy.max_redirects} redirects from {redact_url(url)}")


async def _read_body(response: httpx.Response, into: IO[bytes], limit: int, url: httpx.URL) -> None:
    too_big = DownloadRefused(
        f"{redact_url(str(url))} is bigger than {limit} bytes (SKILLS_MAX_UPLOAD_BYTES)"
    )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    received = 0
    async for chunk in response.aiter_bytes():
        received += len(chunk)
        if received > limit:
            raise too_big
        into.write(chunk)


def _scrub(text: str, url: str) -> str:
    """An exception's text with the URL's secret parts (userinfo, query) blanked out."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return text
    for secret in (parts.username, parts.password, parts.query):
        if secret:
            text = text.replace(secret, "***")
    return text


def download(url: str, into: IO[bytes], policy: DownloadPolicy) -> None:
    """Write the body at ``url`` into ``into`` (then rewound); raises ``DownloadRefused``."""

    async def bounded() -> None:
        try:
            async with asyncio.timeout(policy.timeout):
                await _fetch(url, into, policy)
        except TimeoutError:
            raise DownloadRefused(
                f"{redact_url(url)} took longer than {policy.timeout:g} s (the total timeout)"
            ) from None
        except httpx.HTTPError as exc:
            reason = _scrub(str(exc), url) or type(exc).__name__
            raise DownloadRefused(f"GET {redact_url(url)} failed: {reason}") from None
        except (httpx.InvalidURL, ValueError) as exc:  # a malformed URL or Location header
            raise DownloadRefused(f"{redact_url(url)}: {_scrub(str(exc), url)}") from None

    asyncio.run(bounded())
    into.seek(0)
