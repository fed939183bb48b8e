"""The model catalog: which models a key can be minted for, where they run, what they cost."""

from __future__ import annotations

from decimal import Decimal

from django.core.validators import URLValidator
from django.db import models


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
        help_text="OpenAI-compatible servers: the environment variable that holds the API key.",
    )
    context_window = models.PositiveIntegerField(null=True, blank=True)
    # Prices in USD per million tokens.
    input_price_per_mtok = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    output_price_per_mtok = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    cache_read_price_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, default=Decimal(0)
    )
    cache_write_price_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, default=Decimal(0)
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = CatalogModelQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]
        verbose_name = "catalog model"

    def __str__(self) -> str:
        return self.slug

    def as_public_dict(self) -> dict[str, object]:
        """The entry as ``GET /models`` lists it (OpenAI's model object plus hepgg's fields)."""
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
                "input_per_mtok_usd": str(self.input_price_per_mtok),
                "output_per_mtok_usd": str(self.output_price_per_mtok),
            },
        }
