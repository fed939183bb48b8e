"""The model catalog: which models a key can be minted for, where they run, what they cost."""

from __future__ import annotations

import re
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
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
