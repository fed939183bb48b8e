from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from usage.rollups import usage_events_purge


class Command(BaseCommand):
    help = (
        "Delete raw usage events older than USAGE_RAW_RETENTION_DAYS once rolled up (rollups "
        "are kept): the job Celery beat schedules hourly (usage.purge_events)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        deleted = usage_events_purge()
        days = settings.USAGE_RAW_RETENTION_DAYS
        kept = f"the last {days} days" if days else "everything (USAGE_RAW_RETENTION_DAYS=0)"
        self.stdout.write(f"Deleted {deleted} usage event(s); raw events kept: {kept}.")
