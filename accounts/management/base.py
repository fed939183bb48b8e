"""What the issuing commands share: finding the account, printing a secret once."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Account


class IssuingCommand(BaseCommand):
    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")
        parser.add_argument("--json", action="store_true", help="print a JSON object")

    def account(self, email: str) -> Account:
        account = Account.objects.filter(email__iexact=email.strip()).first()
        if account is None:
            raise CommandError(f"No account with email {email!r}.")
        return account

    def emit(self, options: dict[str, Any], payload: dict[str, Any], text: str) -> None:
        if options["json"]:
            self.stdout.write(json.dumps(payload))
        else:
            self.stdout.write(text)
            self.stderr.write("This secret is shown only once: store it now.")
