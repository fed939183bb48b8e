"""hepgg with usage metering switched off, for the metering-cost benchmark only
(``METERING=off bench/run_hepgg.sh``): every usage record is dropped instead of buffered and
written, the rest of the request path (auth, limits, relaying, counting) is unchanged.

    uvicorn bench.metering_off:application ...
"""

from hepgg.asgi import application
from usage.writer import usage_writer

usage_writer.record = lambda record: None  # type: ignore[method-assign]

__all__ = ["application"]
