"""Seed the price table from ``catalog/data/prices.json`` (the file as it is when this runs), and
carry over the prices an operator set on catalog models that the file does not price."""

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

from django.db import migrations

PRICE_FILE = Path(__file__).resolve().parent.parent / "data" / "prices.json"
RATES = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")


def _decimal(value):
    return None if value is None else Decimal(str(value))


def seed(apps, schema_editor):
    Price = apps.get_model("catalog", "Price")
    CatalogModel = apps.get_model("catalog", "CatalogModel")
    rows = json.loads(PRICE_FILE.read_text())["prices"]
    for row in rows:
        fields = {rate: _decimal(row.get(rate)) for rate in RATES}
        long_prompt = row.get("long_prompt") or {}
        fields["long_prompt_threshold"] = long_prompt.get("threshold_tokens")
        for rate in RATES:
            fields[f"long_{rate}"] = _decimal(long_prompt.get(rate))
        Price.objects.update_or_create(
            pattern=row["pattern"],
            effective_from=date.fromisoformat(row["effective_from"]),
            defaults={
                **fields,
                "name": row.get("name") or "",
                "provider": row.get("provider") or "",
                "notes": row.get("notes") or "",
            },
        )
    # A model the operator priced in the catalog keeps its price for all of its history, unless
    # the file prices that exact name. Unpriced (all-zero) entries become unpriced, not free.
    priced_names = {row["pattern"] for row in rows}
    for model in CatalogModel.objects.all():
        columns = (
            model.input_price_per_mtok,
            model.output_price_per_mtok,
            model.cache_write_price_per_mtok,
            model.cache_read_price_per_mtok,
        )
        if model.slug in priced_names or not any(columns):
            continue
        Price.objects.get_or_create(
            pattern=model.slug,
            effective_from=date(2000, 1, 1),
            defaults={
                "name": model.display_name,
                "provider": model.provider,
                "input": model.input_price_per_mtok,
                "output": model.output_price_per_mtok,
                "cache_write_5m": model.cache_write_price_per_mtok,
                "cache_write_1h": model.cache_write_price_per_mtok,
                "cache_read": model.cache_read_price_per_mtok,
                "notes": "Carried over from the catalog model's own price columns.",
            },
        )


class Migration(migrations.Migration):
    dependencies = [("catalog", "0003_price_table")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
