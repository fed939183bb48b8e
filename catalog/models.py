"""The model catalog (which models a key can be minted for, where they run) and the dated price
table (what any model, catalog or Claude, costs at a given date: ``catalog.pricing``)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, URLValidator
from django.db import models

# An OpenAI-compatible upstream's key is read from the environment variable its entry names. Only
# names with this prefix may be named: otherwise an admin could send SECRET_KEY or DATABASE_URL
# (or any other secret of the process) to a host of their choosing as a bearer token.
UPSTREAM_KEY_ENV_PREFIX = "HEPGG_UPSTREAM_KEY_"
_UPSTREAM_KEY_ENV = re.compile(rf"{UPSTREAM_KEY_ENV_PREFIX}[A-Z0-9_]+")


def api_key_env_problem(name: str) -> str | None:
    """Why ``name`` may not hold an upstream key, or None when it may (or is empty)."""
    if not name or _UPSTREAM_KEY_ENV.fullmatch(name):
        return None
    return (
        f"The API key variable must be named {UPSTREAM_KEY_ENV_PREFIX}<NAME> (capital letters, "
        f"digits and underscores), e.g. {UPSTREAM_KEY_ENV_PREFIX}OPENAI; got {name!r}."
    )


def validate_api_key_env(name: str) -> None:
    problem = api_key_env_problem(name)
    if problem is not None:
        raise ValidationError(problem, code="api_key_env_prefix")


class Provider(models.TextChoices):
    CLOUDFLARE = "cloudflare", "Cloudflare Workers AI"
    OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible server"


class CatalogModelQuerySet(models.QuerySet["CatalogModel"]):
    def enabled(self) -> CatalogModelQuerySet:
        return self.filter(enabled=True)


class CatalogModel(models.Model):
    slug = models.SlugField(
        max_length=100, unique=True, help_text="The model id clients send, e.g. cf-gpt-oss-20b."
    )
    provider = models.CharField(max_length=32, choices=Provider.choices)
    upstream_model = models.CharField(
        max_length=200, help_text="The provider's own model name, e.g. @cf/openai/gpt-oss-20b."
    )
    enabled = models.BooleanField(default=True)
    display_name = models.CharField(max_length=200, blank=True)
    # openai_compatible only: where the server is and which environment variable holds its key.
    # The key itself is never stored in the database.
    # A CharField with a URL validator: forms.URLField would guess a scheme for a bare host.
    base_url = models.CharField(
        max_length=300,
        blank=True,
        validators=[URLValidator(schemes=["http", "https"])],
        help_text="OpenAI-compatible servers: the base URL ending in /v1.",
    )
    api_key_env = models.CharField(
        max_length=100,
        blank=True,
        validators=[validate_api_key_env],
        help_text=(
            "OpenAI-compatible servers: the environment variable that holds the API key; its "
            f"name must start with {UPSTREAM_KEY_ENV_PREFIX}."
        ),
    )
    context_window = models.PositiveIntegerField(null=True, blank=True)
    # Prices live in the dated price table (``Price``), matched on the slug.
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = CatalogModelQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]
        verbose_name = "catalog model"

    def __str__(self) -> str:
        return self.slug

    def as_public_dict(self, price: Price | None = None) -> dict[str, object]:
        """The entry as ``GET /models`` lists it (OpenAI's model object plus hepgg's fields);
        ``price`` is the price row in force today for the slug, if any."""
        rates = price.rates() if price is not None else {}
        return {
            "id": self.slug,
            "object": "model",
            "created": int(self.created_at.timestamp()),
            "owned_by": "hepgg",
            "provider": self.provider,
            "upstream_model": self.upstream_model,
            "name": self.display_name or self.slug,
            "context_window": self.context_window,
            "pricing": {
                f"{name}_per_mtok_usd": rates.get(name)
                for name in ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
            },
        }


_PRICE = {"max_digits": 12, "decimal_places": 6, "null": True, "blank": True}
_RATES = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")


def _decimal_text(value: Decimal | None) -> str | None:
    """``Decimal("3.750000")`` as ``"3.75"``, ``None`` as ``None`` (the price file's form)."""
    if value is None:
        return None
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


class Price(models.Model):
    """One row of the dated price table: USD per million tokens for the models whose name matches
    ``pattern`` (``*`` is the only wildcard), from ``effective_from`` (UTC day) on.

    An empty price means the provider has no such price: tokens of that kind make the event
    unpriced. Rows are loaded from ``catalog/data/prices.json`` (format: its README).
    """

    pattern = models.CharField(
        max_length=200,
        help_text="A model name, or a pattern where * matches anything: claude-sonnet-4-5*.",
    )
    name = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=32, blank=True)
    effective_from = models.DateField(help_text="The first UTC day this row applies to.")
    input = models.DecimalField(**_PRICE, validators=[MinValueValidator(Decimal(0))])
    output = models.DecimalField(**_PRICE, validators=[MinValueValidator(Decimal(0))])
    cache_write_5m = models.DecimalField(**_PRICE, validators=[MinValueValidator(Decimal(0))])
    cache_write_1h = models.DecimalField(**_PRICE, validators=[MinValueValidator(Decimal(0))])
    cache_read = models.DecimalField(**_PRICE, validators=[MinValueValidator(Decimal(0))])
    long_prompt_threshold = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Prompts (input + cache writes + cache reads) above this many tokens pay the "
        "long-prompt prices on all their tokens.",
    )
    long_input = models.DecimalField(**_PRICE, validators=[MinValueValidator(Decimal(0))])
    long_output = models.DecimalField(**_PRICE, validators=[MinValueValidator(Decimal(0))])
    long_cache_write_5m = models.DecimalField(**_PRICE, validators=[MinValueValidator(Decimal(0))])
    long_cache_write_1h = models.DecimalField(**_PRICE, validators=[MinValueValidator(Decimal(0))])
    long_cache_read = models.DecimalField(**_PRICE, validators=[MinValueValidator(Decimal(0))])
    notes = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["pattern", "effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["pattern", "effective_from"], name="price_unique_pattern_date"
            )
        ]

    def __str__(self) -> str:
        return f"{self.pattern} from {self.effective_from}"

    def rates(self) -> dict[str, str | None]:
        return {name: _decimal_text(getattr(self, name)) for name in _RATES}

    def long_rates(self) -> dict[str, str | None]:
        return {name: _decimal_text(getattr(self, f"long_{name}")) for name in _RATES}

    def as_public_dict(self) -> dict[str, Any]:
        """The row as ``GET /prices`` serves it: the shape of ``catalog/data/prices.json``."""
        row: dict[str, Any] = {
            "pattern": self.pattern,
            "name": self.name,
            "provider": self.provider,
            "effective_from": self.effective_from.isoformat(),
            **self.rates(),
        }
        if self.long_prompt_threshold is not None:
            row["long_prompt"] = {
                "threshold_tokens": self.long_prompt_threshold,
                **self.long_rates(),
            }
        if self.notes:
            row["notes"] = self.notes
        return row
