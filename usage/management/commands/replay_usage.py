"""``manage.py replay_usage``: write spilled and set-aside usage records to the database."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from usage.writer import DatabaseUnavailable, usage_writer


class Command(BaseCommand):
    help = (
        "Write the usage records waiting in USAGE_SPILL_DIR: spill files (the database was "
        "unreachable) and rejected.jsonl (the database refused them; fix a line and replay). "
        "Records the database still refuses stay in rejected.jsonl with their reason. Running "
        "servers replay spill files by themselves; this also takes files a dead process left."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            written, refused = usage_writer.replay()
        except DatabaseUnavailable as exc:
            raise CommandError(
                f"The database is unavailable; nothing lost, retry later ({exc})."
            ) from None
        self.stdout.write(
            f"{written} usage events written, {refused} still refused "
            f"(see {usage_writer.spill.rejected_path})."
        )
