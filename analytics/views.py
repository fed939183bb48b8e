"""The analytics pages of the admin: ``/admin/analytics/`` (every account, or one with
``?account=<public id>``) and its CSV export. Staff with the view permission on usage events."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from accounts.models import Account
from analytics.dashboard import Window, analytics_csv, analytics_dashboard

MAX_DAYS = 400  # a year and then some; the page reads day rollups, so this bounds its cost


class WindowForm(forms.Form):
    account = forms.UUIDField(required=False)
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        today = timezone.now().date()
        until = data.get("until") or today
        since = data.get("since") or until - timedelta(days=29)
        if since > until:
            raise forms.ValidationError("The start date must not be after the end date.")
        if (until - since).days >= MAX_DAYS:
            raise forms.ValidationError(f"Pick at most {MAX_DAYS} days.")
        data["since"], data["until"] = since, until
        return data


def _window(request: HttpRequest) -> tuple[Window, WindowForm]:
    if not request.user.has_perm("usage.view_usageevent"):
        raise PermissionDenied
    form = WindowForm(request.GET)
    today = timezone.now().date()
    since, until, account = today - timedelta(days=29), today, None
    if form.is_valid():
        since, until = form.cleaned_data["since"], form.cleaned_data["until"]
        if form.cleaned_data["account"]:
            account = Account.objects.filter(public_id=form.cleaned_data["account"]).first()
            if account is None:
                raise Http404("No such account.")
    return Window(account=account, since=since, until=until), form


def _presets(window: Window) -> list[tuple[str, str]]:
    today = timezone.now().date()
    account = f"&account={window.account.public_id}" if window.account else ""
    return [
        (label, f"?since={(today - timedelta(days=days - 1)).isoformat()}&until={today}{account}")
        for label, days in (("7 days", 7), ("30 days", 30), ("90 days", 90), ("365 days", 365))
    ]


def dashboard(request: HttpRequest) -> HttpResponse:
    window, form = _window(request)
    if settings.USAGE_ROLLUP_IN_WEB:
        # No Celery worker: roll up on demand (only what changed, at most a couple of seconds).
        from usage.rollups import usage_rollup

        usage_rollup(time_budget=2.0)
    started = time.perf_counter()
    data = analytics_dashboard(window=window)
    title = f"Usage analytics: {window.account.email}" if window.account else "Usage analytics"
    context = {
        **admin.site.each_context(request),
        "title": title,
        "form": form,
        "window": window,
        "data": data,
        "presets": _presets(window),
        "accounts": Account.objects.order_by("email").values_list("public_id", "email")[:1000],
        "query": request.GET.urlencode(),
    }
    response = TemplateResponse(request, "analytics/dashboard.html", context)
    response.render()
    elapsed = (time.perf_counter() - started) * 1000
    response["Server-Timing"] = f"app;dur={elapsed:.1f}"  # the benchmark reads this
    return response


def export_csv(request: HttpRequest) -> HttpResponse:
    window, _form = _window(request)
    who = re.sub(r"[^A-Za-z0-9@._-]", "_", window.account.email) if window.account else "all"
    name = f"hepgg-usage-{who}-{window.since:%Y%m%d}-{window.until:%Y%m%d}.csv"
    # Built whole: at most MAX_DAYS of day buckets, and a sync iterator would be buffered by
    # Django under ASGI anyway.
    body = "".join(analytics_csv(window=window))
    response = HttpResponse(body, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
