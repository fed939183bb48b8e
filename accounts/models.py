"""Accounts and the four credentials they hold.

Every credential row keeps only the SHA-256 hex of its secret (``key_hash``, unique, the lookup
index) and a short display prefix; the secret itself is shown once by the service that issues it
(``accounts.services``) and never again.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from accounts.tokens import cache_key
from hepgg.lib import sharedcache


class Account(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="account"
    )
    email = models.EmailField(unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["email"]

    def __str__(self) -> str:
        return self.email


class CredentialQuerySet(models.QuerySet):
    def active(self) -> CredentialQuerySet:
        return self.filter(revoked_at__isnull=True)


class Credential(models.Model):
    """What every credential row has: the hash it is looked up by, a prefix people recognise."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=32, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = CredentialQuerySet.as_manager()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.prefix}…"

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def revoke(self) -> None:
        """Revoke for good; every process stops accepting the secret at once.

        The cache gets a tombstone rather than a delete: a resolver that read the row just
        before the revoke only fills an empty slot (``add``), so it cannot put the identity back.
        """
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])
        key, ttl = cache_key(self.key_hash), settings.CREDENTIAL_CACHE_SECONDS
        sharedcache.set(key, {"missing": True}, ttl)
        transaction.on_commit(lambda: sharedcache.set(key, {"missing": True}, ttl))

    def forget_cached(self) -> None:
        """Drop the cached resolution after a change to the row (its limits, say)."""
        key = cache_key(self.key_hash)
        sharedcache.delete(key)
        transaction.on_commit(lambda: sharedcache.delete(key))


class MasterToken(Credential):
    """``hyd_…``: opens the account API. One active token per account."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="master_tokens")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account"],
                condition=models.Q(revoked_at__isnull=True),
                name="one_active_master_token_per_account",
            )
        ]


class ApiKey(Credential):
    """``sk-hyd-…``: opens ``/v1`` for exactly one catalog model."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="api_keys")
    model = models.ForeignKey(
        "catalog.CatalogModel", on_delete=models.PROTECT, related_name="api_keys"
    )
    name = models.CharField(max_length=100, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Limits, set in the admin; empty means unlimited.
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    monthly_budget_usd = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def disable(self) -> None:
        self.revoke()


class Machine(Credential):
    """A machine registered by ``ccas init``; its ``pt_…`` proxy token opens ``/anthropic``."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="machines")
    hostname = models.CharField(max_length=255)
    platform = models.CharField(max_length=100, blank=True)
    ccas_version = models.CharField(max_length=50, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.hostname} ({self.prefix}…)"


class SkillsAccessKey(Credential):
    """48 hex characters: the capability URL ``/k/<key>/`` of the skills site."""

    account = models.ForeignKey(
        Account, on_delete=models.CASCADE, related_name="skills_access_keys"
    )
    name = models.CharField(max_length=100, blank=True)

    class Meta:
        verbose_name = "skills access key"
        ordering = ["-created_at"]
