"""``GET /``: what hepgg is, and where everything lives (the start banner and the admin's
"View site" link point here)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def home(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "home.html",
        {"public_url": settings.GATEWAY_PUBLIC_URL, "skills_hosts": settings.SKILLS_HOSTS},
    )
