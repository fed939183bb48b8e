"""Resolve a presented secret to what it opens: the one place every surface asks.

``resolve(value, kind)`` and ``aresolve(value, kind)`` return an identity (small, frozen, cacheable)
or ``None``. A value of the wrong shape costs nothing; a well-formed one costs one indexed query on
a cold cache and none on a warm one. Ending a credential (``Credential.revoke``, or deleting its
row, the account's cascade included) writes a tombstone over the cache entry through
``hepgg.lib.sharedcache``, whose signals make every process drop its copy before its next read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from accounts.models import ApiKey, Machine, MasterToken, SkillsAccessKey
from accounts.tokens import Kind, cache_key, hash_secret, is_well_formed
from hepgg.lib import sharedcache


@dataclass(frozen=True, slots=True)
class AccountIdentity:
    account_id: int
    account_public_id: str
    email: str
    user_id: int


@dataclass(frozen=True, slots=True)
class ApiKeyIdentity:
    key_id: int
    key_public_id: str
    account_id: int
    model_id: int
    model_slug: str
    requests_per_minute: int | None
    tokens_per_minute: int | None
    monthly_budget_usd: str | None


@dataclass(frozen=True, slots=True)
class MachineIdentity:
    machine_id: int
    machine_public_id: str
    account_id: int


@dataclass(frozen=True, slots=True)
class SkillsKeyIdentity:
    key_id: int
    account_id: int


Identity = AccountIdentity | ApiKeyIdentity | MachineIdentity | SkillsKeyIdentity

_IDENTITY_TYPE: dict[Kind, type] = {
    Kind.MASTER: AccountIdentity,
    Kind.API_KEY: ApiKeyIdentity,
    Kind.PROXY: MachineIdentity,
    Kind.SKILLS: SkillsKeyIdentity,
}


def _load(kind: Kind, key_hash: str) -> dict[str, Any] | None:
    """One indexed query (by the unique ``key_hash``) for the identity's fields."""
    if kind is Kind.MASTER:
        row = (
            MasterToken.objects.active()
            .filter(key_hash=key_hash)
            .values("account_id", "account__public_id", "account__email", "account__user_id")
            .first()
        )
        return row and {
            "account_id": row["account_id"],
            "account_public_id": str(row["account__public_id"]),
            "email": row["account__email"],
            "user_id": row["account__user_id"],
        }
    if kind is Kind.API_KEY:
        row = (
            ApiKey.objects.active()
            .filter(key_hash=key_hash)
            .values(
                "id",
                "public_id",
                "account_id",
                "model_id",
                "model__slug",
                "requests_per_minute",
                "tokens_per_minute",
                "monthly_budget_usd",
            )
            .first()
        )
        return row and {
            "key_id": row["id"],
            "key_public_id": str(row["public_id"]),
            "account_id": row["account_id"],
            "model_id": row["model_id"],
            "model_slug": row["model__slug"],
            "requests_per_minute": row["requests_per_minute"],
            "tokens_per_minute": row["tokens_per_minute"],
            "monthly_budget_usd": (
                None if row["monthly_budget_usd"] is None else str(row["monthly_budget_usd"])
            ),
        }
    if kind is Kind.PROXY:
        row = (
            Machine.objects.active()
            .filter(key_hash=key_hash)
            .values("id", "public_id", "account_id")
            .first()
        )
        return row and {
            "machine_id": row["id"],
            "machine_public_id": str(row["public_id"]),
            "account_id": row["account_id"],
        }
    row = SkillsAccessKey.objects.active().filter(key_hash=key_hash).values("id", "account_id")
    found = row.first()
    return found and {"key_id": found["id"], "account_id": found["account_id"]}


def _from_cached(kind: Kind, cached: dict[str, Any]) -> Identity | None:
    if cached.get("missing") or cached.get("kind") != kind.name:
        return None
    fields = {k: v for k, v in cached.items() if k != "kind"}
    return _IDENTITY_TYPE[kind](**fields)


def _to_cached(kind: Kind, fields: dict[str, Any] | None) -> dict[str, Any]:
    return {"missing": True} if fields is None else {"kind": kind.name, **fields}


def resolve(value: str, kind: Kind) -> Identity | None:
    """The identity ``value`` opens as a credential of ``kind``, or None. Sync code only."""
    if not is_well_formed(value, kind):
        return None
    key_hash = hash_secret(value)
    cached = sharedcache.fetch(
        cache_key(key_hash),
        lambda: _to_cached(kind, _load(kind, key_hash)),
        settings.CREDENTIAL_CACHE_SECONDS,
    )
    return _from_cached(kind, cached)


async def aresolve(value: str, kind: Kind) -> Identity | None:
    """As ``resolve``, for the event loop: no thread hop and no query on a warm cache."""
    if not is_well_formed(value, kind):
        return None
    key_hash = hash_secret(value)

    async def load() -> dict[str, Any]:
        return _to_cached(kind, await database_sync_to_async(_load)(kind, key_hash))

    cached = await sharedcache.afetch(cache_key(key_hash), load, settings.CREDENTIAL_CACHE_SECONDS)
    # A warm cache hands back the same stored object: reuse the identity built from it.
    known = _identities.get((kind, key_hash))
    if known is not None and known[0] is cached:
        return known[1]
    identity = _from_cached(kind, cached)
    if len(_identities) >= _IDENTITIES_MAX:
        _identities.clear()
    _identities[(kind, key_hash)] = (cached, identity)
    return identity


# (kind, key hash) -> (the cached value, the identity made from it); bounded, cleared when full.
_identities: dict[tuple[Kind, str], tuple[Any, Identity | None]] = {}
_IDENTITIES_MAX = 10_000
