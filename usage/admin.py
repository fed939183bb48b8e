"""Admin: the raw usage events, read-only (the gateway, the proxy and ``ccas sync`` write them;
the charts are on the analytics page, ``/admin/analytics/``)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse

from usage.models import UsageEvent


@admin.register(UsageEvent)
class UsageEventAdmin(admin.ModelAdmin):
    list_display = [
        "occurred_at",
        "account",
        "source",
        "model",
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "cost_usd",
        "status_code",
        "latency_ms",
    ]
    list_filter = ["source"]
    list_select_related = ["account"]
    search_fields = ["account__email", "model", "request_id", "session_id"]
    raw_id_fields = ["account", "api_key", "machine"]
    # Millions of rows: never count them all for the paginator's total.
    show_full_result_count = False
    ordering = ["-occurred_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Never from these pages (the rollups would keep counting them; retention deletes raw
        # events), but deleting an account takes its events along: the admin asks this for each
        # event of that cascade, from the account's delete page.
        own_pages = reverse("admin:usage_usageevent_changelist")
        return obj is not None and not request.path.startswith(own_pages)
