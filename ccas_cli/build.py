"""The ``ccas`` zipapp, built from ``ccas_cli/ccas/`` of this checkout when first asked for.

One file that Python 3.10+ runs: a ``#!/usr/bin/env python3`` line, then a zip holding the
``ccas`` package, a ``__main__.py``, ``ccas/VERSION`` (``[project] version`` of pyproject.toml)
and ``ccas/prices.json`` (``catalog/data/prices.json``, the table ``GET /prices`` serves). The
bytes are deterministic for the same sources (sorted entries, fixed timestamps and modes), so the
checksum the installer verifies is stable; the build is cached per process and redone only when a
source file changes (a stat of each, no read).
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = Path(__file__).resolve().parent / "ccas"
PYPROJECT = ROOT / "pyproject.toml"
PRICES = ROOT / "catalog" / "data" / "prices.json"
SHEBANG = b"#!/usr/bin/env python3\n"
_MAIN = b"import sys\n\nfrom ccas.cli import main\n\nsys.exit(main())\n"
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Zipapp:
    data: bytes
    sha256: str
    version: str


def project_version() -> str:
    match = re.search(r'^version\s*=\s*"([^"]+)"', PYPROJECT.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError("pyproject.toml has no [project] version")
    return match.group(1)


def _sources() -> list[Path]:
    return sorted(p for p in SOURCE.rglob("*.py") if "__pycache__" not in p.parts)


def _fingerprint() -> tuple[tuple[str, int, int], ...]:
    paths = [*_sources(), PYPROJECT, PRICES]
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths)


def _entry(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    info.create_system = 3  # unix, whatever the build host
    archive.writestr(info, data, compresslevel=9)


def build() -> Zipapp:
    """Build the zipapp now (no cache)."""
    version = project_version()
    buffer = io.BytesIO()
    buffer.write(SHEBANG)
    with zipfile.ZipFile(buffer, "w") as archive:
        entries = {"__main__.py": _MAIN}
        for path in _sources():
            entries["ccas/" + path.relative_to(SOURCE).as_posix()] = path.read_bytes()
        entries["ccas/VERSION"] = (version + "\n").encode()
        entries["ccas/prices.json"] = PRICES.read_bytes()
        for name in sorted(entries):
            _entry(archive, name, entries[name])
    data = buffer.getvalue()
    return Zipapp(data=data, sha256=hashlib.sha256(data).hexdigest(), version=version)


_lock = threading.Lock()
_cached: tuple[tuple[tuple[str, int, int], ...], Zipapp] | None = None


def zipapp() -> Zipapp:
    """The current build, rebuilt only when a source file changed."""
    global _cached
    fingerprint = _fingerprint()
    with _lock:
        if _cached is None or _cached[0] != fingerprint:
            _cached = (fingerprint, build())
        return _cached[1]
