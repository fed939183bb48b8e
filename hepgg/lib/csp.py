"""A strict Content-Security-Policy for pages that show a secret (the admin's one-time pages).

Only our own static files and the page's own nonce'd ``<script>``/``<style>`` run: an injected
script (a stored XSS elsewhere in the admin, a malicious browser extension's page injection
aside) can neither run nor send the secret anywhere (``connect-src``/``form-action`` 'self').
"""

from __future__ import annotations

import secrets

from django.http import HttpResponse


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


def strict_policy(nonce: str) -> str:
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src 'self' 'nonce-{nonce}'",
            f"style-src 'self' 'nonce-{nonce}'",
            "img-src 'self' data:",
            "font-src 'self'",
            "connect-src 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ]
    )


def with_strict_csp(response: HttpResponse, nonce: str) -> HttpResponse:
    """``response`` with the strict policy for ``nonce`` and no caching anywhere."""
    response["Content-Security-Policy"] = strict_policy(nonce)
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response
