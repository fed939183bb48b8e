from django.contrib import admin

from catalog.models import CatalogModel


@admin.register(CatalogModel)
class CatalogModelAdmin(admin.ModelAdmin):
    list_display = [
        "slug",
        "provider",
        "upstream_model",
        "enabled",
        "input_price_per_mtok",
        "output_price_per_mtok",
    ]
    list_filter = ["provider", "enabled"]
    search_fields = ["slug", "upstream_model"]
    list_editable = ["enabled"]
