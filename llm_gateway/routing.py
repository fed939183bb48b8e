"""ASGI routes of this app's hot path, mounted ahead of Django in ``hepgg.asgi``."""

from __future__ import annotations

from django.urls import re_path

from llm_gateway.app import gateway_app

urlpatterns = [re_path(r"^v1/", gateway_app)]
