"""Absolute URLs of the two sites, for what the gateway hands out outside a request (the admin's
one-time pages, management commands). Inside a request the skills site builds its own from the
request (``request.build_absolute_uri``, which honours ``SECURE_PROXY_SSL_HEADER``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings


def skills_site_url(path: str = "") -> str:
    """``path`` on the skills site: the first ``SKILLS_HOSTS`` host when there is one (with the
    public URL's scheme), else ``/skills/`` under ``GATEWAY_PUBLIC_URL``."""
    if settings.SKILLS_HOSTS:
        scheme = urlsplit(settings.GATEWAY_PUBLIC_URL).scheme or "https"
        return f"{scheme}://{settings.SKILLS_HOSTS[0]}/{path}"
    return f"{settings.GATEWAY_PUBLIC_URL}/skills/{path}"


def capability_url(skills_key: str) -> str:
    """The capability URL a skills access key opens: ``/k/<key>/`` on the skills site."""
    return skills_site_url(f"k/{skills_key}/")
