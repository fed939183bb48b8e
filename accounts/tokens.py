"""Credential formats: generating, hashing and recognising each kind of secret.

Pure functions, no database: the type prefix lets every surface reject the wrong kind of
credential (and say which kind it was) before touching the database.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from dataclasses import dataclass

from hepgg.lib.redaction import PREFIX_CHARS


class Kind(enum.Enum):
    MASTER = "master token"
    API_KEY = "API key"
    PROXY = "proxy token"
    SKILLS = "skills access key"

    @property
    def with_article(self) -> str:
        """The kind with its article ("a master token", "an API key"), for messages."""
        return ("an " if self.value[0] in "aeiouAEIOU" else "a ") + self.value

    @property
    def example(self) -> str:
        return {
            Kind.MASTER: "hyd_…",
            Kind.API_KEY: "sk-hyd-…",
            Kind.PROXY: "pt_…",
            Kind.SKILLS: "48 hex characters",
        }[self]


_TYPE_PREFIX = {Kind.MASTER: "hyd_", Kind.API_KEY: "sk-hyd-", Kind.PROXY: "pt_"}
_SHAPE = {
    Kind.MASTER: re.compile(r"hyd_[A-Za-z0-9_-]{43,128}"),
    Kind.API_KEY: re.compile(r"sk-hyd-[A-Za-z0-9_-]{43,128}"),
    Kind.PROXY: re.compile(r"pt_[A-Za-z0-9_-]{43,128}"),
    Kind.SKILLS: re.compile(r"[0-9a-f]{48}"),
}


@dataclass(frozen=True)
class NewSecret:
    value: str  # shown once, never stored
    key_hash: str
    prefix: str


def hash_secret(value: str) -> str:
    """SHA-256 hex: a 256-bit random token needs a fast hash, not a password hasher."""
    return hashlib.sha256(value.encode()).hexdigest()


def display_prefix(value: str, kind: Kind) -> str:
    return value[: len(_TYPE_PREFIX.get(kind, "")) + PREFIX_CHARS]


def generate(kind: Kind) -> NewSecret:
    if kind is Kind.SKILLS:
        value = secrets.token_hex(24)  # 192 bits
    else:
        value = _TYPE_PREFIX[kind] + secrets.token_urlsafe(32)  # 256 bits, 43 characters
    return NewSecret(value=value, key_hash=hash_secret(value), prefix=display_prefix(value, kind))


def claimed_kind(value: str) -> Kind | None:
    """The kind a value claims to be by its prefix (or shape, for skills keys), else None."""
    for kind, prefix in _TYPE_PREFIX.items():
        if value.startswith(prefix):
            return kind
    if _SHAPE[Kind.SKILLS].fullmatch(value):
        return Kind.SKILLS
    return None


def is_well_formed(value: str, kind: Kind) -> bool:
    return _SHAPE[kind].fullmatch(value) is not None


def cache_key(key_hash: str) -> str:
    return f"cred:{key_hash}"
