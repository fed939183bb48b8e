"""The rollup without a Celery worker: the embedded default (eager tasks) runs it in each web
process, on a timer thread, so that ``make run`` shows analytics with nothing else started.

Several processes may run the timer (uvicorn ``--workers``): the rollup's lease lets one work at a
time and the others return at once. The purge runs from the same thread, once an hour.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections, connections

logger = logging.getLogger(__name__)

_started = threading.Event()
_PURGE_EVERY = 3600.0
# A timer run works at most this long, then leaves the rest pending for its next turn.
_RUN_BUDGET = 30.0


def _loop(interval: float) -> None:
    from usage.rollups import usage_events_purge, usage_rollup

    last_purge = 0.0
    while True:
        time.sleep(interval)
        close_old_connections()
        try:
            usage_rollup(time_budget=_RUN_BUDGET)
            if time.monotonic() - last_purge > _PURGE_EVERY:
                usage_events_purge()
                last_purge = time.monotonic()
        except Exception:  # the database is down, say: log it and try again next turn
            logger.exception("embedded usage rollup failed")
        finally:
            connections.close_all()


def start_embedded_rollups() -> bool:
    """Start this process's rollup timer when the settings ask for one (``USAGE_ROLLUP_IN_WEB``);
    returns whether one runs. Idempotent."""
    if not settings.USAGE_ROLLUP_IN_WEB:
        return False
    if not _started.is_set():
        _started.set()
        thread = threading.Thread(
            target=_loop,
            args=(settings.USAGE_ROLLUP_SECONDS,),
            name="hepgg-usage-rollup",
            daemon=True,  # nothing to finish at exit: an interrupted day stays pending
        )
        thread.start()
    return True
