"""One function prices every event: at the price in force on its day, with the 5m/1h cache split,
the long-prompt tier, and null (never zero) when it cannot."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog.models import Price
from catalog.pricing import PriceTable, aprice_table, price_row, price_table
from catalog.services import price_file_read

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def cost(model: str, when: datetime = NOW, **tokens: int) -> Decimal | None:
    return price_table().cost(model=model, occurred_at=when, **tokens)


@pytest.mark.parametrize(
    ("model", "pattern"),
    [
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5*"),
        ("claude-sonnet-4-5-20250929[1m]", "claude-sonnet-4-5*"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1*"),
        ("claude-opus-4-20250514", "claude-opus-4-2025*"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4-2025*"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5*"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku*"),
        ("claude-3-7-sonnet-20250219", "claude-3-7-sonnet*"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5*"),
        ("claude-opus-4-6", "claude-opus-4-6*"),
        ("claude-opus-4-8", "claude-opus-4-8*"),
        ("claude-opus-5", "claude-opus-5"),
        ("claude-opus-5[1m]", "claude-opus-5[*]"),
        ("claude-opus-5-5", "claude-opus-5-5*"),
        ("claude-sonnet-5", "claude-sonnet-5"),
        ("claude-sonnet-5-5", "claude-sonnet-5-5*"),
        ("claude-sonnet-5-5[1m]", "claude-sonnet-5-5*"),
        ("claude-haiku-5-5", "claude-haiku-5-5*"),
        ("claude-fable-5-1", "claude-fable-5-1*"),
        ("claude-fable-5-2", "claude-fable-5-2*"),
        ("claude-mythos-5-1", "claude-mythos-5-1*"),
        ("cf-gpt-oss-20b", "cf-gpt-oss-20b"),
    ],
)
def test_the_models_claude_code_sends_are_priced_by_their_most_specific_row(
    prices, model: str, pattern: str
) -> None:
    assert price_table().pattern_for(model) == pattern
    assert cost(model, input_tokens=1000) > 0


@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-5-7", "claude-opus-4-9", ""])
def test_an_unknown_model_costs_null_never_zero(prices, model: str) -> None:
    assert cost(model, input_tokens=10, output_tokens=10) is None


def test_a_request_that_used_no_tokens_costs_zero_whatever_the_model(prices) -> None:
    assert cost("gpt-4o") == Decimal(0)


def test_an_event_pays_the_price_in_force_on_its_day(prices) -> None:
    # Sonnet 5.5's cache reads went from $0.20 to $0.10 per Mtok on 2026-10-07.
    before = datetime(2026, 10, 6, 23, 59, tzinfo=UTC)
    after = datetime(2026, 10, 7, 0, 0, tzinfo=UTC)
    assert cost("claude-sonnet-5-5", before, cache_read_input_tokens=1_000_000) == Decimal("0.2")
    assert cost("claude-sonnet-5-5", after, cache_read_input_tokens=1_000_000) == Decimal("0.1")
    # Before the model's first row there is no price at all.
    released = datetime(2026, 9, 27, tzinfo=UTC)
    assert cost("claude-sonnet-5-5", released, input_tokens=1) is None


def test_cache_writes_are_priced_by_their_5m_and_1h_split(prices) -> None:
    table = price_table()
    tokens = {
        "input_tokens": 1000,
        "output_tokens": 100,
        "cache_creation_input_tokens": 1000,
        "cache_read_input_tokens": 10_000,
    }
    split = {"ephemeral_5m_input_tokens": 400, "ephemeral_1h_input_tokens": 600}
    # Sonnet 4.5: $3 in, $15 out, $3.75 5m write, $6 1h write, $0.30 read, per Mtok.
    priced = table.cost(model="claude-sonnet-4-5", occurred_at=NOW, cache_creation=split, **tokens)
    expected = 1000 * 3 + 100 * 15 + 400 * Decimal("3.75") + 600 * 6 + 10_000 * Decimal("0.3")
    assert priced == expected / 1_000_000
    # Without a split every write is a 5-minute one.
    unsplit = table.cost(model="claude-sonnet-4-5", occurred_at=NOW, **tokens)
    assert unsplit == (1000 * 3 + 1500 + 1000 * Decimal("3.75") + 3000) / Decimal(1_000_000)


def test_a_long_prompt_pays_the_long_prompt_price_on_all_its_tokens(prices) -> None:
    # Haiku 5.5: up to 100,000 prompt tokens $0.10 in / $0.50 out; above, $0.50 / $2.50.
    at_threshold = cost("claude-haiku-5-5", input_tokens=90_000, cache_read_input_tokens=10_000,
                        output_tokens=1000)  # fmt: skip
    over = cost("claude-haiku-5-5", input_tokens=90_001, cache_read_input_tokens=10_000,
                output_tokens=1000)  # fmt: skip
    assert at_threshold == (90_000 * Decimal("0.10") + 10_000 * Decimal("0.01") + 500) / 10**6
    assert over == (90_001 * Decimal("0.50") + 10_000 * Decimal("0.05") + 2500) / 10**6


def test_tokens_of_a_kind_the_model_has_no_price_for_make_the_event_unpriced(prices) -> None:
    # Cloudflare has no cache-read price for gpt-oss-20b.
    assert cost("cf-gpt-oss-20b", input_tokens=1000, output_tokens=1000) == Decimal("0.0005")
    assert cost("cf-gpt-oss-20b", input_tokens=1000, cache_read_input_tokens=5) is None


def test_the_most_specific_pattern_wins_and_ties_are_stable() -> None:
    rows = [
        Price(pattern="claude-*", effective_from=NOW.date(), input=Decimal(1)),
        Price(pattern="claude-sonnet-*", effective_from=NOW.date(), input=Decimal(2)),
        Price(pattern="claude-sonnet-4-5*", effective_from=NOW.date(), input=Decimal(3)),
        Price(pattern="claude-sonnet-4-5-20250929", effective_from=NOW.date(), input=Decimal(4)),
    ]
    table = PriceTable(price_row(p) for p in rows)
    assert table.pattern_for("claude-sonnet-4-5-20250929") == "claude-sonnet-4-5-20250929"
    assert table.pattern_for("claude-sonnet-4-5[1m]") == "claude-sonnet-4-5*"
    assert table.pattern_for("claude-sonnet-9") == "claude-sonnet-*"
    assert table.pattern_for("claude-x") == "claude-*"
    assert table.pattern_for("[1m]claude-x") is None  # "*" is the only wildcard; "[" is literal


def test_every_row_of_the_price_file_is_loaded_by_the_migration(prices) -> None:
    rows = price_file_read()
    assert len(rows) >= 30
    loaded = {(p.pattern, p.effective_from) for p in Price.objects.all()}
    assert {(r["pattern"], r["effective_from"]) for r in rows} <= loaded


def test_the_event_loop_reads_the_table_from_memory_once_loaded(prices) -> None:
    loaded = price_table()  # as by the first request

    async def serve_requests() -> list[PriceTable]:
        return [await aprice_table() for _ in range(50)]

    with CaptureQueriesContext(connection) as queries:
        tables = asyncio.run(serve_requests())
    assert len(queries) == 0
    assert all(table is loaded for table in tables)  # no reload, in this thread or another
    assert loaded.cost(model="claude-opus-4-8", occurred_at=NOW, output_tokens=1) == Decimal(
        "0.000025"
    )
