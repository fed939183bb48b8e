"""Accounts and the four credentials they hold.

Every credential row keeps only the SHA-256 hex of its secret (``key_hash``, unique, the lookup
index) and a short display prefix; the secret itself is shown once by the service that issues it
(``accounts.services``) and never again.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.models.signals import post_delete
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
        """Revoke for good; every process refuses the secret from its next request on."""
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])
        self.forget_cached(dead=True)

    def forget_cached(self, *, dead: bool = False) -> None:
        """Drop the cached resolution, now and again once the transaction commits (so that no
        process keeps what it read in between), after a change to the row (its limits, say).

        ``dead``: the credential no longer opens anything (revoked or deleted). The cache then
        gets a tombstone rather than a delete: a resolver that read the row just before the
        change only fills an empty slot, so it cannot put the identity back.
        """
        key, ttl = cache_key(self.key_hash), settings.CREDENTIAL_CACHE_SECONDS

        def forget() -> None:
            if dead:
                sharedcache.set(key, {"missing": True}, ttl)
            else:
                sharedcache.delete(key)

        forget()
        transaction.on_commit(forget)


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


def _deleted_credential_is_dead(sender: type[Credential], instance: Credential, **_: Any) -> None:
    """The invariant "a deleted credential is dead in every cache", wherever the delete comes
    from: the admin's delete (single or bulk), or the cascade of deleting its account, which
    Django's collector runs without calling ``revoke()``."""
    instance.forget_cached(dead=True)


for _model in (MasterToken, ApiKey, Machine, SkillsAccessKey):
    # One connection per model: a receiver without a sender would turn off Django's fast
    # delete for every model of the project.
    post_delete.connect(
        _deleted_credential_is_dead, sender=_model, dispatch_uid=f"dead-{_model.__name__}"
    )
