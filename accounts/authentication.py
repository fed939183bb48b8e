"""DRF authentication for the account API (``Authorization: Bearer hyd_…``)."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from accounts.credentials import AccountIdentity, resolve
from accounts.models import Account
from accounts.tokens import Kind, claimed_kind
from hepgg.lib import authfailures


def bearer_value(header: bytes) -> str | None:
    """The credential in an ``Authorization: Bearer …`` header, or None."""
    scheme, _, value = header.decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def wrong_type_message(expected: Kind, sent: Kind | None) -> str:
    """What a user who sent the wrong kind of credential needs to read (never the value)."""
    wanted = f"This endpoint expects {expected.with_article} ({expected.example})"
    if sent is None or sent is expected:
        return f"Invalid {expected.value}. {wanted}."
    return f"{wanted}, but {sent.with_article} ({sent.example}) was sent."


def _too_many_failures(wait: int) -> exceptions.Throttled:
    """429 with ``Retry-After`` (DRF's handler sets the header from ``wait``)."""
    return exceptions.Throttled(
        wait, f"Too many failed authentications from this address; retry after {wait} seconds."
    )


class MasterTokenAuthentication(BaseAuthentication):
    """Resolves the bearer master token to its account (``request.user`` is the ``Account``)."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Account, AccountIdentity] | None:
        header = get_authorization_header(request)
        if not header:
            raise exceptions.NotAuthenticated(
                "Missing master token: send Authorization: Bearer hyd_…"
            )
        value = bearer_value(header)
        if value is None:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: send Authorization: Bearer hyd_…"
            )
        client = authfailures.client_of_meta(request.META)
        if (wait := authfailures.blocked("master", client)) is not None:
            raise _too_many_failures(wait)
        identity = resolve(value, Kind.MASTER)
        if not isinstance(identity, AccountIdentity):
            if (wait := authfailures.failed("master", client).retry_after) is not None:
                raise _too_many_failures(wait)
            raise exceptions.AuthenticationFailed(
                wrong_type_message(Kind.MASTER, claimed_kind(value))
            )
        # Built from the cached identity: no query unless a view needs more than these fields.
        account = Account(
            id=identity.account_id,
            public_id=identity.account_public_id,
            email=identity.email,
            user_id=identity.user_id,
        )
        account._state.adding = False
        return account, identity

    def authenticate_header(self, request: Any) -> str:
        return f'{self.keyword} realm="hepgg"'
