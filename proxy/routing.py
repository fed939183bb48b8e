"""ASGI routes of this app's hot path, mounted ahead of Django in ``hepgg.asgi``."""

from __future__ import annotations

from django.urls import re_path

from proxy.forward import proxy_app

urlpatterns = [re_path(r"^anthropic/", proxy_app)]
