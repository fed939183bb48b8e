"""ccas: Claude Code analytics, and the wiring of Claude Code to a hepgg gateway's proxy.

Standard library only, Python 3.10+: the gateway serves it as a single-file zipapp
(``GET /ccas/install.sh``) built from this folder, with ``VERSION`` and ``prices.json`` added.
"""

from __future__ import annotations

import pkgutil
import re
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent.parent  # the checkout, when run from source


def _bundled(name: str) -> bytes | None:
    """A data file the build added to the zipapp, or None when running from the source tree."""
    try:
        return pkgutil.get_data(__name__, name)
    except OSError:
        return None


def _version() -> str:
    bundled = _bundled("VERSION")
    if bundled is not None:
        return bundled.decode().strip()
    try:
        text = (_SOURCE_ROOT / "pyproject.toml").read_text()
    except OSError:
        return "0+unknown"
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    return match.group(1) if match else "0+unknown"


def bundled_prices() -> bytes | None:
    """The price table built into the zipapp (``catalog/data/prices.json`` of the same checkout)."""
    bundled = _bundled("prices.json")
    if bundled is not None:
        return bundled
    try:
        return (_SOURCE_ROOT / "catalog" / "data" / "prices.json").read_bytes()
    except OSError:
        return None


__version__ = _version()
