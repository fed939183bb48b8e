"""``/ccas/*``: the installer script and the zipapp it downloads (``ccas_cli.build``)."""

from __future__ import annotations

import shlex
from pathlib import Path

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe

from ccas_cli.build import zipapp

_TEMPLATE = Path(__file__).resolve().parent / "install.sh"


def _plain(body: bytes | str, content_type: str) -> HttpResponse:
    response = HttpResponse(body, content_type=content_type)
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "no-cache"
    return response


@require_safe
def install_sh(request: HttpRequest) -> HttpResponse:
    """``GET /ccas/install.sh``: POSIX sh; the URLs in it are ``GATEWAY_PUBLIC_URL``'s."""
    built = zipapp()
    url = settings.GATEWAY_PUBLIC_URL
    script = (
        _TEMPLATE.read_text()
        .replace("@@GATEWAY_URL_QUOTED@@", shlex.quote(url))
        .replace("@@GATEWAY_URL@@", url)
        .replace("@@VERSION@@", shlex.quote(built.version))
        .replace("@@SHA256@@", built.sha256)
    )
    return _plain(script, "text/x-shellscript; charset=utf-8")


@require_safe
def ccas_pyz(request: HttpRequest) -> HttpResponse:
    built = zipapp()
    etag = f'"{built.sha256}"'
    if request.headers.get("If-None-Match") == etag:
        response = HttpResponse(status=304)
    else:
        response = _plain(built.data, "application/octet-stream")
        response["Content-Disposition"] = 'attachment; filename="ccas.pyz"'
    response["ETag"] = etag
    return response


@require_safe
def ccas_pyz_sha256(request: HttpRequest) -> HttpResponse:
    return _plain(f"{zipapp().sha256}  ccas.pyz\n", "text/plain; charset=utf-8")
