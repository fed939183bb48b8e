from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from accounts.management.base import IssuingCommand
from accounts.services import ModelUnavailable, api_key_mint


class Command(IssuingCommand):
    help = "Mint an API key (sk-hyd-…) bound to one catalog model."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--model", required=True, help="catalog slug, e.g. cf-gpt-oss-20b")
        parser.add_argument("--name", default="", help="a label for the key")

    def handle(self, *args: Any, **options: Any) -> None:
        account = self.account(options["email"])
        try:
            key, secret = api_key_mint(
                account=account, model=options["model"], name=options["name"]
            )
        except ModelUnavailable as exc:
            raise CommandError(f"Unknown or disabled model {options['model']!r}.") from exc
        self.emit(
            options,
            {"id": str(key.public_id), "key": secret, "model": key.model.slug},
            f"API key for {account.email} ({key.model.slug}): {secret}",
        )
