"""Request ids unique across processes and restarts, with no syscall per request: a random
prefix per process (drawn again in a forked child) and a counter within it."""

from __future__ import annotations

import itertools
import os

_prefix = ""
_counter = itertools.count(1)


def _reseed() -> None:
    global _prefix, _counter
    _prefix = os.urandom(6).hex()
    _counter = itertools.count(1)


_reseed()
os.register_at_fork(after_in_child=_reseed)


def request_id() -> str:
    """``req_`` and 24 hex digits, e.g. ``req_3f9a0c1b2d4e000000000001``."""
    return f"req_{_prefix}{next(_counter):012x}"
