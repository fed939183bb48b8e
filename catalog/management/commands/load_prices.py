from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog.pricing import forget_prices
from catalog.services import PRICE_FILE, PriceFileError, price_file_read, prices_load


class Command(BaseCommand):
    help = (
        "Load the dated price table from catalog/data/prices.json (or PATH) into the database: "
        "new rows are added, changed rows updated. Costs of past events follow at the next "
        "usage rollup, which reprices the events of every changed pattern."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", nargs="?", default=str(PRICE_FILE))
        parser.add_argument(
            "--prune",
            action="store_true",
            help="also delete the database rows the file does not have (admin-only rows too)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            rows = price_file_read(Path(options["path"]))
        except PriceFileError as exc:
            raise CommandError(str(exc)) from exc
        result = prices_load(rows=rows, prune=options["prune"])
        forget_prices()
        for label, names in (
            ("created", result.created),
            ("updated", result.updated),
            ("deleted", result.deleted),
        ):
            for name in names:
                self.stdout.write(f"{label}: {name}")
        self.stdout.write(
            f"{len(result.created)} created, {len(result.updated)} updated, "
            f"{len(result.deleted)} deleted, {result.unchanged} unchanged."
        )
