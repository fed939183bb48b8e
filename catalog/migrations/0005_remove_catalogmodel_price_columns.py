from django.db import migrations


class Migration(migrations.Migration):
    """The catalog's own price columns go: ``0004`` copied them into the price table."""

    dependencies = [
        ("catalog", "0004_seed_price_table"),
    ]

    operations = [
        migrations.RemoveField(
            model_name='catalogmodel',
            name='cache_read_price_per_mtok',
        ),
        migrations.RemoveField(
            model_name='catalogmodel',
            name='cache_write_price_per_mtok',
        ),
        migrations.RemoveField(
            model_name='catalogmodel',
            name='input_price_per_mtok',
        ),
        migrations.RemoveField(
            model_name='catalogmodel',
            name='output_price_per_mtok',
        ),
    ]
