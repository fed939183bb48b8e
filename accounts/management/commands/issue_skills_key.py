from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from accounts.management.base import IssuingCommand
from accounts.services import skills_key_issue
from hepgg.lib.sites import capability_url


class Command(IssuingCommand):
    help = "Issue a skills access key (the capability URL /k/<key>/ of the skills site)."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--name", default="", help="a label for the key")

    def handle(self, *args: Any, **options: Any) -> None:
        account = self.account(options["email"])
        key, secret = skills_key_issue(account=account, name=options["name"])
        url = capability_url(secret)
        self.emit(
            options,
            {
                "id": str(key.public_id),
                "skills_access_key": secret,
                "capability_url": url,
            },
            f"Skills access key for {account.email}: {secret}\nCapability URL: {url}",
        )
