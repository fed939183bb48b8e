"""Issuing credentials: the only code that ever holds a new secret in plaintext.

Each ``*_issue``/``*_mint``/``*_register`` function returns the new row and its secret; the caller
shows the secret once (command output, API response, admin page) and drops it.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from accounts.models import Account, ApiKey, Machine, MasterToken, SkillsAccessKey
from accounts.tokens import Kind, generate
from catalog.models import CatalogModel


class ModelUnavailable(Exception):
    """The catalog has no enabled model by that slug."""


def account_create(*, email: str) -> tuple[Account, str]:
    """Create an account (and its Django user) with its first master token."""
    email = get_user_model().objects.normalize_email(email).strip()
    with transaction.atomic():
        user = get_user_model().objects.create_user(username=email, email=email)
        account = Account.objects.create(user=user, email=email)
        _token, secret = master_token_rotate(account=account)
    return account, secret


def master_token_rotate(*, account: Account) -> tuple[MasterToken, str]:
    """Issue a new master token; the old one (if any) stops working at once."""
    new = generate(Kind.MASTER)
    with transaction.atomic():
        Account.objects.select_for_update().filter(pk=account.pk).first()
        for old in MasterToken.objects.active().filter(account=account):
            old.revoke()
        token = MasterToken.objects.create(
            account=account, key_hash=new.key_hash, prefix=new.prefix
        )
    return token, new.value


def api_key_mint(*, account: Account, model: str, name: str = "") -> tuple[ApiKey, str]:
    """Mint an API key bound to one enabled catalog model. Raises ``ModelUnavailable``."""
    catalog_model = CatalogModel.objects.enabled().filter(slug=model).first()
    if catalog_model is None:
        raise ModelUnavailable(model)
    new = generate(Kind.API_KEY)
    key = ApiKey.objects.create(
        account=account, model=catalog_model, name=name, key_hash=new.key_hash, prefix=new.prefix
    )
    return key, new.value


def machine_register(
    *, account: Account, hostname: str, platform: str = "", ccas_version: str = ""
) -> tuple[Machine, str]:
    new = generate(Kind.PROXY)
    machine = Machine.objects.create(
        account=account,
        hostname=hostname,
        platform=platform,
        ccas_version=ccas_version,
        key_hash=new.key_hash,
        prefix=new.prefix,
        last_seen_at=timezone.now(),
    )
    return machine, new.value


def skills_key_issue(*, account: Account, name: str = "") -> tuple[SkillsAccessKey, str]:
    new = generate(Kind.SKILLS)
    key = SkillsAccessKey.objects.create(
        account=account, name=name, key_hash=new.key_hash, prefix=new.prefix
    )
    return key, new.value
