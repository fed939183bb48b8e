from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.core.validators import validate_email

from accounts.management.base import IssuingCommand
from accounts.models import Account
from accounts.services import account_create


class Command(IssuingCommand):
    help = "Create an account and print its master token once."

    def handle(self, *args: Any, **options: Any) -> None:
        email = options["email"].strip()
        try:
            validate_email(email)
        except ValidationError as exc:
            raise CommandError(f"Not an email address: {email!r}") from exc
        if Account.objects.filter(email__iexact=email).exists():
            raise CommandError(f"An account with email {email!r} already exists.")
        account, secret = account_create(email=email)
        self.emit(
            options,
            {"account_id": str(account.public_id), "email": account.email, "master_token": secret},
            f"Created account {account.email} ({account.public_id}).\nMaster token: {secret}",
        )
