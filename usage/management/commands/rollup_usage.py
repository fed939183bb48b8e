from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_date, parse_datetime

from usage.rollups import usage_rollup


def _moment(text: str) -> datetime:
    moment = parse_datetime(text)
    if moment is None and (day := parse_date(text)) is not None:
        moment = datetime.combine(day, time.min)
    if moment is None:
        raise CommandError(
            f"--since: expected a date (YYYY-MM-DD) or an ISO 8601 time, got {text!r}"
        )
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = (
        "Roll usage events up into hour and day buckets: the job Celery beat schedules "
        "(usage.rollup). --since DATE recomputes every hour from DATE on."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", type=_moment, help="recompute from this date or time (UTC)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = usage_rollup(since=options["since"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if not result.ran:
            raise CommandError("Another rollup is running (its lease has not expired); try again.")
        self.stdout.write(
            f"Recomputed {result.hours} hour(s) over {result.days} day(s) in {result.seconds} s; "
            f"{result.pending} hour(s) still pending; {result.repriced} event(s) repriced."
        )
