"""The ``/v1`` surface's one error type and its one renderer (OpenAI's error object).

    GatewayError(status, message, type, code, param)   any refusal, rendered as {"error": {...}}
    └── InvalidApiKey                                   401 {"error": "Invalid API key"[, "hint"]}

The official OpenAI client reads ``body.get("error", body)`` then ``message``, ``code`` and
``type``; the 401 body is fixed by the contract. ``retryable`` decides ``x-should-retry``: the SDK
retries 408/409/429/5xx by default, and refusals that a retry cannot fix say so, so that clients
do not hammer the gateway.
"""

from __future__ import annotations

from typing import Any

import orjson


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        retryable: bool = False,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.retryable = retryable
        self.headers = headers or []

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def render(self) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Status, headers and body bytes of the response."""
        headers = [(b"content-type", b"application/json"), *self.headers]
        if not self.retryable:
            headers.append((b"x-should-retry", b"false"))
        return self.status, headers, orjson.dumps(self.body())


def bearer_challenge(description: str | None) -> bytes:
    """``WWW-Authenticate`` for a refused bearer credential (RFC 6750 section 3).

    With no credential at all the challenge carries no error code; otherwise ``invalid_token``
    and a description, which the RFC restricts to printable ASCII without ``"`` or ``\\``.
    """
    if description is None:
        return b'Bearer realm="hepgg"'
    text = description.replace("\u2026", "...")
    text = "".join(c for c in text if " " <= c <= "~" and c not in '"\\')
    return f'Bearer realm="hepgg", error="invalid_token", error_description="{text}"'.encode()


class InvalidApiKey(GatewayError):
    """The contract's exact 401 body; the hint, if any, also travels in ``WWW-Authenticate``
    where SDKs that print only the status line still let a person find it."""

    def __init__(self, hint: str | None = None, *, presented: bool = True) -> None:
        description = (hint or "Invalid API key") if presented else None
        super().__init__(
            401,
            "Invalid API key",
            type="invalid_request_error",
            code="invalid_api_key",
            headers=[(b"www-authenticate", bearer_challenge(description))],
        )
        self.hint = hint

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": "Invalid API key"}
        if self.hint:
            body["hint"] = self.hint
        return body


def upstream_error(status: int, message: str, *, code: str | None = None) -> GatewayError:
    """An upstream failure: transient, so the SDK may retry it."""
    return GatewayError(status, message, type="upstream_error", code=code, retryable=True)


def database_unavailable() -> GatewayError:
    """The database is unreachable and the request needed it (a cold credential or route)."""
    return GatewayError(
        503,
        "The gateway cannot reach its database right now; please retry shortly.",
        type="server_error",
        code="database_unavailable",
        retryable=True,
        headers=[(b"retry-after", b"1")],
    )


def sse_error_event(error: GatewayError) -> bytes:
    """The in-band form of an error once a stream has started."""
    return b"data: " + orjson.dumps(error.body()) + b"\n\n"
