"""Bounded waits for what a server does off the request path (usage rows, snapshots, touches).

Both helpers raise ``AssertionError`` when the time runs out: a wait that returned quietly would
let the assertion after it pass on whatever it happened to find, or on nothing at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from usage.models import UsageEvent

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], *, timeout: float = 15, what: str = "") -> T:
    """The first truthy value of ``predicate()``, polled every 50 ms; raises on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate}")
        time.sleep(0.05)


def wait_for_events(
    count: int, *, timeout: float = 20, settle: float = 0.3, **filters: Any
) -> list[UsageEvent]:
    """Exactly ``count`` usage events matching ``filters``, oldest first.

    Waits until there are ``count``, then ``settle`` seconds more to catch a late extra one, so
    that a request metered twice fails the caller as surely as one metered not at all.
    Raises ``AssertionError`` when there are fewer after ``timeout`` or more after settling.
    """

    def events() -> list[UsageEvent]:
        return list(UsageEvent.objects.filter(**filters).order_by("id"))

    deadline = time.monotonic() + timeout
    found = events()
    while len(found) < count:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {count} usage event(s) matching "
                f"{filters or 'anything'}; found {len(found)}: {found}"
            )
        time.sleep(0.05)
        found = events()
    if settle:
        time.sleep(settle)
        found = events()
    if len(found) != count:
        raise AssertionError(f"expected {count} usage event(s), found {len(found)}: {found}")
    return found


def backend_waiting_on_a_lock() -> bool:
    """True while a backend of the test database waits for a lock (PostgreSQL): how a test
    knows a racing transaction has reached the point it is meant to block at."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return cursor.fetchone()[0] > 0
