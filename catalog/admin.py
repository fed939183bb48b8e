"""Admin: the model catalog and the dated price table it (and every Claude model) is priced by."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from catalog.models import CatalogModel, Price
from catalog.pricing import price_table


@admin.register(CatalogModel)
class CatalogModelAdmin(admin.ModelAdmin):
    list_display = ["slug", "provider", "upstream_model", "enabled", "price_today"]
    list_filter = ["provider", "enabled"]
    search_fields = ["slug", "upstream_model"]
    list_editable = ["enabled"]

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        self._today = timezone.now().date()
        return super().changelist_view(request, extra_context)

    @admin.display(description="price today (in / out per Mtok)")
    def price_today(self, model: CatalogModel) -> str:
        row = price_table().row_for(model.slug, getattr(self, "_today", timezone.now().date()))
        if row is None:
            url = reverse("admin:catalog_price_add") + f"?pattern={model.slug}"
            return format_html('unpriced (<a href="{}">add a price</a>)', url)
        rates = row.rates
        return f"${rates.input} / ${rates.output} ({row.pattern} from {row.effective_from})"


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    list_display = [
        "pattern",
        "name",
        "provider",
        "effective_from",
        "input",
        "output",
        "cache_write_5m",
        "cache_write_1h",
        "cache_read",
        "long_prompt_threshold",
    ]
    list_filter = ["provider"]
    search_fields = ["pattern", "name"]
    ordering = ["pattern", "-effective_from"]
    fieldsets = [
        (None, {"fields": ["pattern", "name", "provider", "effective_from", "notes"]}),
        (
            "USD per million tokens (empty: no such price)",
            {"fields": ["input", "output", "cache_write_5m", "cache_write_1h", "cache_read"]},
        ),
        (
            "Long prompts (optional)",
            {
                "fields": [
                    "long_prompt_threshold",
                    "long_input",
                    "long_output",
                    "long_cache_write_5m",
                    "long_cache_write_1h",
                    "long_cache_read",
                ],
                "description": "A request whose prompt (input + cache writes + cache reads) "
                "exceeds the threshold pays these prices on all of its tokens.",
            },
        ),
    ]
