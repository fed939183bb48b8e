"""``~/.config/ccas/``: the CLI's own files, the folder 0700 and every file 0600.

``config.json`` holds the host, the master token, this machine's id and proxy token, and what
``init`` changed in Claude Code's settings (so ``unwire`` can undo exactly that).
``sync-state.json`` holds how far ``sync`` read each transcript; ``prices.json`` caches
``GET /prices``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ccas.errors import CcasError


def config_dir() -> Path:
    return Path.home() / ".config" / "ccas"


def ensure_dir() -> Path:
    folder = config_dir()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
    except OSError as exc:
        raise CcasError(f"cannot create {folder}: {exc.strerror or exc}") from exc
    return folder


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (never readable by others, not
    even for a moment: the temporary file is created 0600)."""
    ensure_dir()
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise CcasError(f"cannot write {path}: {exc.strerror or exc}") from exc


def read_json(name: str) -> dict[str, Any]:
    """One of our JSON files as a dict ({} when missing). Raises ``CcasError`` if unreadable."""
    path = config_dir() / name
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CcasError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise CcasError(
            f"{path} is not valid JSON: fix it, or delete it and run `ccas init`"
        ) from exc
    if not isinstance(value, dict):
        raise CcasError(f"{path} is not a JSON object: delete it and run `ccas init`")
    return value


def write_json(name: str, value: dict[str, Any]) -> None:
    write_private(
        config_dir() / name, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()
    )


def load() -> dict[str, Any]:
    return read_json("config.json")


def save(config: dict[str, Any]) -> None:
    write_json("config.json", config)
