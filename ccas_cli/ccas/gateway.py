"""The gateway's account API over ``urllib`` (standard library only).

Every failure becomes one ``CcasError`` line: unreachable host, timeout, an HTTP error (the account
API's ``{"error": "..."}`` message is shown as the gateway wrote it), an answer that is not JSON.
No secret ever goes into a message: the token is only ever in the Authorization header.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from ccas import __version__
from ccas.errors import CcasError

TIMEOUT = 30.0
USER_AGENT = f"ccas/{__version__}"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def normalize_host(host: str) -> str:
    host = host.strip().rstrip("/")
    parsed = urllib.parse.urlsplit(host)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise CcasError(f"not a gateway URL: {host!r} (expected e.g. https://ai.hep.gg)")
    return host


def request(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = TIMEOUT,
) -> Answer:
    """One HTTP exchange; any status is an ``Answer``. Raises ``CcasError`` when the host cannot
    be reached at all."""
    if not url.startswith(("http://", "https://")):
        raise CcasError(f"not an http(s) URL: {url!r}")
    req = urllib.request.Request(url, data=body, method=method)  # noqa: S310 - checked above
    req.add_header("User-Agent", USER_AGENT)
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    host = urllib.parse.urlsplit(url).netloc
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:  # noqa: S310 - http(s) only
            return Answer(response.status, _headers(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, _headers(exc.headers), exc.read() if exc.fp else b"")
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLError):
            raise CcasError(f"cannot reach {host}: TLS error ({reason.reason or reason})") from exc
        detail = getattr(reason, "strerror", None) or str(reason)
        raise CcasError(f"cannot reach the gateway at {host}: {detail}") from exc
    except TimeoutError as exc:
        raise CcasError(f"the gateway at {host} did not answer within {timeout:.0f} s") from exc
    except (OSError, ValueError) as exc:  # connection reset mid-body, a malformed URL
        raise CcasError(f"cannot talk to the gateway at {host}: {exc}") from exc


def _headers(message: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in message.items()} if message is not None else {}


class Gateway:
    """The account API of one host, with the master token."""

    def __init__(self, host: str, token: str | None) -> None:
        self.host = normalize_host(host)
        self.token = token

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        payload: Any = None,
        timeout: float = TIMEOUT,
    ) -> Any:
        """The JSON answer of a 2xx; raises ``CcasError`` with the gateway's message otherwise."""
        url = self.host + path
        if params:
            url += "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        answer = request(method, url, headers=headers, body=body, timeout=timeout)
        data = answer.json()
        if 200 <= answer.status < 300:
            if answer.status == 204:
                return None
            if data is None:
                raise CcasError(
                    f"{self.host} answered {path} with something that is not JSON: "
                    "is this a hepgg gateway?"
                )
            return data
        message = data.get("error") if isinstance(data, dict) else None
        if not isinstance(message, str):
            message = f"HTTP {answer.status}"
            if answer.status == 404:
                message += f" for {path}: is {self.host} a hepgg gateway?"
        raise GatewayError(answer.status, message)

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params or None)

    def post(self, path: str, payload: Any) -> Any:
        return self.call("POST", path, payload=payload)


class GatewayError(CcasError):
    """The gateway answered with an error status; ``message`` is its own words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"the gateway refused: {message} (HTTP {status})")
        self.http_status = status
        self.detail = message
