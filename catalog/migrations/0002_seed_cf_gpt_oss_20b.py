from django.db import migrations


def seed(apps, schema_editor):
    CatalogModel = apps.get_model("catalog", "CatalogModel")
    CatalogModel.objects.get_or_create(
        slug="cf-gpt-oss-20b",
        defaults={
            "provider": "cloudflare",
            "upstream_model": "@cf/openai/gpt-oss-20b",
            "display_name": "gpt-oss-20b on Cloudflare Workers AI",
            "enabled": True,
            "context_window": 128000,
            "input_price_per_mtok": "0.200000",
            "output_price_per_mtok": "0.300000",
        },
    )


class Migration(migrations.Migration):
    dependencies = [("catalog", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
