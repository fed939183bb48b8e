"""How the skills site answers: raw bytes with safe headers, 304s, 404s, capability headers.

One place decides every header of the site, so a raw file can never go out as ``text/html``,
without ``nosniff``, or (under a capability URL) cacheable and indexable.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.http import content_disposition_header

RAW_CSP = "sandbox; default-src 'none'"
PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
    "form-action 'self'; base-uri 'self'; frame-ancestors 'none'"
)
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "public, max-age=0, must-revalidate"
MARKDOWN = "text/markdown; charset=utf-8"


def site_root(request: HttpRequest, key: str | None) -> str:
    """The site's path prefix for this request: ``/`` on a skills host, else ``/skills/``."""
    base = "/" if getattr(request, "urlconf", None) == "skills.urls" else "/skills/"
    return f"{base}k/{key}/" if key else base


def site_url(request: HttpRequest, key: str | None) -> str:
    return request.build_absolute_uri(site_root(request, key))


def _finish(response: HttpResponse, *, key: str | None, cache: str) -> HttpResponse:
    response["X-Content-Type-Options"] = "nosniff"
    if key is not None:
        # A capability URL is a secret: not cached, not indexed, not leaked through Referer.
        response["Cache-Control"] = "private, no-store"
        response["Referrer-Policy"] = "no-referrer"
        response["X-Robots-Tag"] = "noindex"
    else:
        response["Cache-Control"] = cache
        response["Access-Control-Allow-Origin"] = "*"
        response["Access-Control-Expose-Headers"] = "ETag, Content-Length"
    return response


def _matches(request: HttpRequest, etag: str) -> bool:
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    for candidate in header.split(","):
        candidate = candidate.strip().removeprefix("W/")
        if candidate == "*" or candidate == etag:
            return True
    return False


def media_type(path: str, *, is_text: bool) -> str:
    if not is_text:
        return "application/octet-stream"
    if path.lower().endswith((".md", ".markdown")):
        return MARKDOWN
    return "text/plain; charset=utf-8"


def raw(
    request: HttpRequest,
    content: bytes | None,
    *,
    sha256: str,
    content_type: str,
    key: str | None,
    immutable: bool,
    size: int | None = None,
    download_name: str | None = None,
    vary_accept: bool = False,
) -> HttpResponse:
    """Exact bytes with an ETag (their SHA-256). ``content`` may be None for a 304 or a HEAD."""
    etag = f'"{sha256}"'
    if _matches(request, etag):
        response = HttpResponse(status=304)
    else:
        body = b"" if request.method == "HEAD" else content
        response = HttpResponse(body or b"", content_type=content_type)
        response["Content-Length"] = str(size if size is not None else len(content or b""))
        response["Content-Security-Policy"] = RAW_CSP
        if download_name is not None:
            response["Content-Disposition"] = content_disposition_header(
                as_attachment=True, filename=download_name
            )
    response["ETag"] = etag
    if vary_accept:
        response["Vary"] = "Accept"
    return _finish(response, key=key, cache=IMMUTABLE if immutable else REVALIDATE)


def text(
    request: HttpRequest,
    body: str,
    *,
    content_type: str,
    key: str | None,
    vary_accept: bool = False,
) -> HttpResponse:
    """Generated text (indexes): ETag over the bytes, revalidated on every use."""
    data = body.encode()
    return raw(
        request,
        data,
        sha256=hashlib.sha256(data).hexdigest(),
        content_type=content_type,
        key=key,
        immutable=False,
        vary_accept=vary_accept,
    )


def json_body(request: HttpRequest, value: Any, *, key: str | None) -> HttpResponse:
    return text(
        request,
        json.dumps(value, ensure_ascii=False, separators=(",", ":")),
        content_type="application/json",
        key=key,
    )


def page(request: HttpRequest, html: str, *, key: str | None) -> HttpResponse:
    """An HTML page of the site: sanitized content, and no script may run on it."""
    response = HttpResponse(b"" if request.method == "HEAD" else html.encode())
    response["Content-Length"] = str(len(html.encode()))
    response["Content-Security-Policy"] = PAGE_CSP
    response["Vary"] = "Accept"
    response["X-Frame-Options"] = "DENY"
    return _finish(response, key=key, cache="no-cache")


def not_found(*, key: str | None) -> HttpResponse:
    """The one 404 of the site: a missing skill, a hidden one and a wrong key look the same."""
    response = HttpResponse(b"Not found\n", status=404, content_type="text/plain; charset=utf-8")
    response["Content-Length"] = "10"
    return _finish(response, key=key, cache="no-cache")


def unavailable(*, key: str | None) -> HttpResponse:
    """The site's 503: the database is unreachable and the caches could not answer."""
    body = b"Service unavailable, please retry shortly\n"
    response = HttpResponse(body, status=503, content_type="text/plain; charset=utf-8")
    response["Content-Length"] = str(len(body))
    response["Retry-After"] = "1"
    return _finish(response, key=key, cache="no-store")


def errors(status: int, problems: list[dict[str, str]], *, key: str | None) -> HttpResponse:
    response = HttpResponse(
        json.dumps({"errors": problems}), status=status, content_type="application/json"
    )
    return _finish(response, key=key, cache="no-store")


def created(value: Any, *, key: str | None) -> HttpResponse:
    response = HttpResponse(json.dumps(value), status=201, content_type="application/json")
    return _finish(response, key=key, cache="no-store")
