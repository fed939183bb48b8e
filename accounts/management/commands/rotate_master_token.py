from __future__ import annotations

from typing import Any

from accounts.management.base import IssuingCommand
from accounts.services import master_token_rotate


class Command(IssuingCommand):
    help = "Issue a new master token for an account; the old one stops working at once."

    def handle(self, *args: Any, **options: Any) -> None:
        account = self.account(options["email"])
        _token, secret = master_token_rotate(account=account)
        self.emit(
            options,
            {"account_id": str(account.public_id), "email": account.email, "master_token": secret},
            f"New master token for {account.email}: {secret}",
        )
