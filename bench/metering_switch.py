"""hepgg whose usage metering is switched by signals, for ``bench/metering_ab.py`` only:
SIGUSR1 meters every request, SIGUSR2 drops every usage record (as ``bench/metering_off.py``).
One process serves both modes, so what differs between two processes (hash seeds, memory
layout, where the scheduler put them) cancels out of the on/off ratio.

    uvicorn bench.metering_switch:application ...
"""

import signal

from hepgg.asgi import application
from usage.writer import usage_writer

_metered = usage_writer.record


def _dropped(record: object) -> None:
    return None


signal.signal(signal.SIGUSR1, lambda *_: setattr(usage_writer, "record", _metered))
signal.signal(signal.SIGUSR2, lambda *_: setattr(usage_writer, "record", _dropped))

__all__ = ["application"]
