"""Claude Code's user settings (``~/.claude/settings.json``, or ``$CLAUDE_CONFIG_DIR``): what
``init`` adds to them and how ``unwire`` takes exactly that back out.

``init`` merges ``env.ANTHROPIC_BASE_URL`` (and ``env.CLAUDE_CODE_GATEWAY_HINT_HEADERS``, which
Claude Code 2.1.273+ reads to send request-class and agent headers a gateway attributes usage by)
into the file: every other key is kept, a timestamped backup is made first, the file is replaced
atomically with its mode kept (through a symlink, the link's target is written). No credential is
ever written: ``ANTHROPIC_API_KEY``, ``ANTHROPIC_AUTH_TOKEN`` or ``apiKeyHelper`` would take the
place of a claude.ai subscription login.

What was added, what it replaced and the SHA-256 of the bytes written are kept in ccas's config
(``Wiring``). ``unwire`` puts the backup's bytes back when the file is still exactly what ``init``
wrote; when something else changed it since, it removes only the keys ``init`` added (restoring the
values they replaced) and keeps everything else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ccas.errors import CcasError

BASE_URL = "ANTHROPIC_BASE_URL"
HINT_HEADERS = "CLAUDE_CODE_GATEWAY_HINT_HEADERS"
CREDENTIAL_KEYS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")


_SECRET = re.compile(r"(pt_|hyd_|sk-hyd-|sk-ant-)([A-Za-z0-9_-]{4})[A-Za-z0-9_-]+")


def mask(text: str) -> str:
    """``text`` with any credential cut to its prefix (URLs with a proxy token, say)."""
    return _SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}…", text)


def claude_dir() -> Path:
    configured = os.environ.get("CLAUDE_CONFIG_DIR", "").split(",")[0].strip()
    if configured:
        return Path(os.path.expanduser(configured))
    return Path.home() / ".claude"


def settings_path() -> Path:
    return claude_dir() / "settings.json"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_settings(path: Path) -> tuple[bytes | None, dict[str, Any]]:
    """The file's bytes (None if missing) and its JSON object. Raises ``CcasError``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, {}
    except OSError as exc:
        raise CcasError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not raw.strip():
        return raw, {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise CcasError(
            f"{path} is not valid JSON (line {getattr(exc, 'lineno', '?')}): "
            "fix it, then run the command again"
        ) from exc
    if not isinstance(value, dict):
        raise CcasError(f"{path} is not a JSON object: fix it, then run the command again")
    return raw, value


def configured_base_url(path: Path) -> str | None:
    try:
        _raw, settings = read_settings(path)
    except CcasError:
        return None
    env = settings.get("env")
    value = env.get(BASE_URL) if isinstance(env, dict) else None
    return value if isinstance(value, str) else None


def _write_atomic(path: Path, data: bytes, mode: int | None) -> None:
    """Replace ``path`` (its symlink target, if it is one) with ``data``, keeping ``mode``."""
    target = Path(os.path.realpath(path))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.ccas-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, mode if mode is not None else 0o644 & ~_umask())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise CcasError(f"cannot write {target}: {exc.strerror or exc}") from exc


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CcasError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _render(settings: dict[str, Any]) -> bytes:
    return (json.dumps(settings, indent=2, ensure_ascii=False) + "\n").encode()


def wire(
    wanted: dict[str, str], previous_wiring: dict[str, Any] | None
) -> tuple[dict[str, Any], bool]:
    """Merge ``wanted`` into ``env`` of the settings file. Returns the wiring record to keep and
    whether the file changed. A second ``init`` keeps the first record's backup and the values it
    replaced, so ``unwire`` still goes back to the state before the first ``init``."""
    path = settings_path()
    raw, settings = read_settings(path)
    env = settings.get("env")
    if env is not None and not isinstance(env, dict):
        raise CcasError(f'{path}: "env" is not an object: fix it, then run `ccas init` again')
    env = dict(env or {})
    if all(env.get(key) == value for key, value in wanted.items()):
        record = previous_wiring or {
            "settings_path": str(path),
            "backup": None,
            "created_file": False,
            "created_env": False,
            "added": {},
            "previous": {},
            "written_sha256": _sha256(raw or b""),
        }
        return record, False
    mode = _mode(path)
    record: dict[str, Any]
    if previous_wiring and previous_wiring.get("settings_path") == str(path):
        record = dict(previous_wiring)
        added = dict(record.get("added") or {})
        previous = dict(record.get("previous") or {})
    else:
        backup = None
        if raw is not None:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            backup = path.with_name(f"{path.name}.ccas-backup-{stamp}")
            try:
                shutil.copy2(os.path.realpath(path), backup)
            except OSError as exc:
                raise CcasError(f"cannot back up {path}: {exc.strerror or exc}") from exc
        record = {
            "settings_path": str(path),
            "backup": str(backup) if backup else None,
            "created_file": raw is None,
            "created_env": "env" not in settings,
        }
        added, previous = {}, {}
    for key, value in wanted.items():
        if env.get(key) == value:
            continue
        if key not in added:
            previous[key] = env.get(key)  # None: the key was absent
        added[key] = value
        env[key] = value
    settings["env"] = env
    data = _render(settings)
    _write_atomic(path, data, mode)
    record.update(added=added, previous=previous, written_sha256=_sha256(data))
    return record, True


def unwire(wiring: dict[str, Any]) -> str:
    """Undo ``wire``; returns a sentence saying what was done. Raises ``CcasError``."""
    path = Path(wiring["settings_path"])
    raw, settings = read_settings(path)
    added: dict[str, str] = wiring.get("added") or {}
    previous: dict[str, Any] = wiring.get("previous") or {}
    if not added:
        return f"{path} was already pointing at this gateway before `ccas init`: left as it is"
    unchanged = raw is not None and _sha256(raw) == wiring.get("written_sha256")
    if unchanged and wiring.get("created_file"):
        try:
            os.unlink(path)
        except OSError as exc:
            raise CcasError(f"cannot remove {path}: {exc.strerror or exc}") from exc
        return f"removed {path}, which `ccas init` had created"
    backup = wiring.get("backup")
    if unchanged and backup:
        try:
            original = Path(backup).read_bytes()
        except OSError:
            original = None
        if original is not None:
            _write_atomic(path, original, _mode(path))
            return f"restored {path} byte for byte from {backup}"
    if raw is None:
        return f"{path} no longer exists: nothing to undo"
    env = settings.get("env")
    if not isinstance(env, dict):
        return f"{path} has no env block any more: nothing to undo"
    kept = []
    for key, value in added.items():
        if env.get(key) != value:
            kept.append(key)  # changed since init: the user's value now, not ours
            continue
        if previous.get(key) is None:
            env.pop(key, None)
        else:
            env[key] = previous[key]
    if not env and wiring.get("created_env"):
        settings.pop("env", None)
    _write_atomic(path, _render(settings), _mode(path))
    note = f"; kept {', '.join(kept)} (changed since init)" if kept else ""
    return f"removed what `ccas init` added to {path}, kept every other setting{note}"


def overrides(expected: str, cwd: Path) -> list[str]:
    """Places that would point Claude Code somewhere else than ``expected``, in words."""
    found = []
    shell = os.environ.get(BASE_URL)
    if shell is not None and shell != expected:
        found.append(f"the shell variable {BASE_URL} is set to {mask(shell) or '(empty)'}")
    candidates = []
    folder = cwd.resolve()
    home = Path.home().resolve()
    for parent in [folder, *folder.parents]:
        if parent == home:
            break  # ~/.claude/settings.json is the user file itself
        candidates += [
            parent / ".claude" / "settings.json",
            parent / ".claude" / "settings.local.json",
        ]
    candidates += [
        Path("/etc/claude-code/managed-settings.json"),
        Path("/Library/Application Support/ClaudeCode/managed-settings.json"),
    ]
    for candidate in candidates:
        value = configured_base_url(candidate) if candidate.exists() else None
        if value is not None and value != expected:
            found.append(f"{candidate} sets {BASE_URL} to {mask(value)}")
    return found


def credential_keys(path: Path) -> list[str]:
    """Credential settings present in the file (init never writes them; status mentions them)."""
    try:
        _raw, settings = read_settings(path)
    except CcasError:
        return []
    env = settings.get("env") if isinstance(settings.get("env"), dict) else {}
    found = [key for key in CREDENTIAL_KEYS if key in env]
    if "apiKeyHelper" in settings:
        found.append("apiKeyHelper")
    return found
