"""GET /prices and GET /models serve the price table; load_prices applies file edits; the catalog's
old price columns survived the move into the table."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from catalog.models import Price
from catalog.services import PRICE_FILE

pytestmark = pytest.mark.django_db


def test_prices_are_public_and_shaped_like_the_price_file(client: Client, prices) -> None:
    response = client.get("/prices")
    assert response.status_code == 200
    body = response.json()
    assert body["unit"] == "USD per million tokens"
    by_key = {(r["pattern"], r["effective_from"]): r for r in body["prices"]}
    file_rows = json.loads(PRICE_FILE.read_text())["prices"]
    assert len(by_key) == len(file_rows)
    for row in file_rows:
        served = by_key[(row["pattern"], row["effective_from"])]
        for name in ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read"):
            expected = row[name]
            assert (None if served[name] is None else Decimal(served[name])) == (
                None if expected is None else Decimal(expected)
            ), (row["pattern"], name)
        if "long_prompt" in row:
            assert (
                served["long_prompt"]["threshold_tokens"] == row["long_prompt"]["threshold_tokens"]
            )
        else:
            assert "long_prompt" not in served


def test_prices_answer_a_matching_etag_with_304(client: Client, prices) -> None:
    etag = client.get("/prices")["ETag"]
    again = client.get("/prices", HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304
    Price.objects.filter(pattern="cf-gpt-oss-20b").update(input=Decimal("0.25"))
    assert client.get("/prices", HTTP_IF_NONE_MATCH=etag).status_code == 200


def test_models_show_todays_price_from_the_table(client: Client, catalog_model, prices) -> None:
    Price.objects.create(pattern="cf-gpt-oss-20b", effective_from=date(2026, 1, 1),
                         input=Decimal("0.25"), output=Decimal("0.35"))  # fmt: skip
    [model] = client.get("/models").json()["data"]
    assert model["pricing"]["input_per_mtok_usd"] == "0.25"
    assert model["pricing"]["output_per_mtok_usd"] == "0.35"
    Price.objects.all().delete()
    [model] = client.get("/models").json()["data"]
    assert model["pricing"]["input_per_mtok_usd"] is None  # unpriced, not free


def _write(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"prices": rows}))
    return path


ROW = {
    "pattern": "my-llama*", "provider": "openai_compatible", "effective_from": "2026-01-01",
    "input": "0.10", "output": "0.20", "cache_write_5m": None, "cache_write_1h": None,
    "cache_read": None,
}  # fmt: skip


def test_load_prices_adds_updates_and_reports(tmp_path: Path, prices) -> None:
    out = StringIO()
    call_command("load_prices", str(_write(tmp_path, [ROW])), stdout=out)
    assert "1 created" in out.getvalue()
    assert Price.objects.get(pattern="my-llama*").input == Decimal("0.1")

    out = StringIO()
    changed = {**ROW, "input": "0.12"}
    call_command("load_prices", str(_write(tmp_path, [changed])), stdout=out)
    assert "updated: my-llama* from 2026-01-01" in out.getvalue()
    assert Price.objects.get(pattern="my-llama*").input == Decimal("0.12")
    assert Price.objects.filter(pattern="claude-sonnet-5").exists()  # rows not in the file stay

    call_command("load_prices", str(_write(tmp_path, [changed])), "--prune", stdout=StringIO())
    assert list(Price.objects.values_list("pattern", flat=True)) == ["my-llama*"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({**ROW, "input": "-1"}, "is not a price"),
        ({**ROW, "input": "cheap"}, "is not a decimal number"),
        ({**ROW, "effective_from": "yesterday"}, "effective_from must be an ISO date"),
        ({k: v for k, v in ROW.items() if k != "output"}, "output is missing"),
        ({**ROW, "pattern": ""}, "pattern must be"),
        ({**ROW, "long_prompt": {"threshold_tokens": 0}}, "threshold_tokens must be"),
    ],
)
def test_load_prices_refuses_a_bad_row_and_changes_nothing(tmp_path, prices, row, message) -> None:
    before = Price.objects.count()
    with pytest.raises(CommandError, match=message):
        call_command("load_prices", str(_write(tmp_path, [row])), stdout=StringIO())
    assert Price.objects.count() == before


@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_the_prices_an_operator_set_on_catalog_models() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([("catalog", "0002_seed_cf_gpt_oss_20b")])
    old = executor.loader.project_state([("catalog", "0002_seed_cf_gpt_oss_20b")]).apps
    old.get_model("catalog", "CatalogModel").objects.create(
        slug="my-llama", provider="openai_compatible", upstream_model="llama",
        input_price_per_mtok=Decimal("0.1"), output_price_per_mtok=Decimal("0.3"),
        cache_write_price_per_mtok=Decimal("0.2"),
    )  # fmt: skip
    old.get_model("catalog", "CatalogModel").objects.create(
        slug="free-model", provider="openai_compatible", upstream_model="x"
    )
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    carried = Price.objects.get(pattern="my-llama")
    assert (carried.input, carried.output, carried.cache_write_5m, carried.cache_write_1h) == (
        Decimal("0.1"), Decimal("0.3"), Decimal("0.2"), Decimal("0.2"),
    )  # fmt: skip
    assert not Price.objects.filter(pattern="free-model").exists()  # all zero: not a price
    # The seeded model is priced by the file's row, not duplicated from its columns.
    assert Price.objects.filter(pattern="cf-gpt-oss-20b").count() == 1
