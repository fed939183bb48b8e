"""An offline dependency audit: every pin of requirements.lock against vendored OSV advisories.

    .venv/bin/python scripts/audit_offline.py [--lock requirements.lock] [--advisories DIR]
                                              [--ignore security/audit-ignore.toml]
    .venv/bin/python scripts/audit_offline.py --vendor GIT_DIR   # refresh security/osv/

``scripts/audit.sh`` runs this when pip-audit's services (PyPI's JSON API, api.osv.dev) do not
answer. The advisories are the Python Packaging Authority's (github.com/pypa/advisory-database,
OSV format, CC-BY-4.0), vendored in ``security/osv/`` for the packages we pin only, as JSON, with
the snapshot's commit and date in ``security/osv/SOURCE.md``. ``--vendor`` rebuilds that folder
from a clone (a bare one will do) of that repository, for the packages requirements.lock pins.

A pin is affected when an advisory (not withdrawn) names its package in the PyPI ecosystem and
either lists its version in ``versions`` or puts it inside an ``ECOSYSTEM`` range
(``introduced`` / ``fixed`` / ``last_affected`` events, compared as PEP 440 versions).
Findings listed in the ignore file (``[[ignore]]`` tables with ``id``, ``package`` and a
``reason``) are reported but do not fail the audit; every other finding exits 1.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
ADVISORIES = ROOT / "security" / "osv"
IGNORE = ROOT / "security" / "audit-ignore.toml"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def normalize(name: str) -> str:
    """PEP 503's normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: Path) -> dict[str, str]:
    """``{normalized name: version}`` of every ``name==version`` line of a pip-compile lock."""
    found: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            found[normalize(match.group(1))] = match.group(2)
    return found


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _in_range(version: Version, events: list[dict[str, str]]) -> bool:
    """OSV's evaluation of one range: events in version order, ``introduced: "0"`` first."""

    def order(event: dict[str, str]) -> tuple[int, Version]:
        (kind, value), *_ = event.items()
        if kind == "introduced" and value == "0":
            return (0, Version("0"))
        parsed = _version(value)
        return (1, parsed) if parsed is not None else (2, Version("0"))

    affected = False
    for event in sorted(events, key=order):
        (kind, value), *_ = event.items()
        bound = Version("0") if (kind, value) == ("introduced", "0") else _version(value)
        if bound is None:
            print(f"warning: an unparsable version {value!r} in a range was skipped")
            continue
        if kind == "introduced" and version >= bound:
            affected = True
        elif (kind == "fixed" and version >= bound) or (
            kind == "last_affected" and version > bound
        ):
            affected = False
    return affected


def affects(advisory: dict[str, Any], name: str, version_text: str) -> bool:
    """Whether ``advisory`` affects ``name`` (normalized) at ``version_text``."""
    if advisory.get("withdrawn"):
        return False
    version = _version(version_text)
    for entry in advisory.get("affected", ()):
        package = entry.get("package", {})
        if package.get("ecosystem") != "PyPI" or normalize(package.get("name", "")) != name:
            continue
        listed = entry.get("versions") or ()
        if version_text in listed:
            return True
        if version is not None and any(_version(v) == version for v in listed):
            return True
        if version is None:
            continue
        for rng in entry.get("ranges") or ():
            if rng.get("type") == "ECOSYSTEM" and _in_range(version, rng.get("events", [])):
                return True
    return False


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    id: str
    aliases: tuple[str, ...]
    fixed: tuple[str, ...]
    ignored_because: str | None


def _fixed_versions(advisory: dict[str, Any], name: str) -> tuple[str, ...]:
    fixed = []
    for entry in advisory.get("affected", ()):
        if normalize(entry.get("package", {}).get("name", "")) != name:
            continue
        for rng in entry.get("ranges") or ():
            fixed += [e["fixed"] for e in rng.get("events", []) if "fixed" in e]
    return tuple(fixed)


def load_ignores(path: Path) -> dict[tuple[str, str], str]:
    """``{(advisory id, package): reason}``; an entry without a reason is an error."""
    if not path.exists():
        return {}
    ignores: dict[tuple[str, str], str] = {}
    for entry in tomllib.loads(path.read_text()).get("ignore", []):
        reason = str(entry.get("reason", "")).strip()
        if not reason:
            raise SystemExit(f"{path}: {entry.get('id')} has no reason")
        ignores[(entry["id"], normalize(entry["package"]))] = reason
    return ignores


def audit(lock: Path, advisories: Path, ignore: Path) -> list[Finding]:
    ignores = load_ignores(ignore)
    findings = []
    for name, version in sorted(pins(lock).items()):
        folder = advisories / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.json")):
            advisory = json.loads(path.read_text())
            if not affects(advisory, name, version):
                continue
            ids = (advisory["id"], *advisory.get("aliases", ()))
            reason = next((ignores[(i, name)] for i in ids if (i, name) in ignores), None)
            findings.append(
                Finding(
                    name,
                    version,
                    advisory["id"],
                    tuple(advisory.get("aliases", ())),
                    _fixed_versions(advisory, name),
                    reason,
                )
            )
    return findings


def check(args: argparse.Namespace) -> int:
    source = args.advisories / "SOURCE.md"
    snapshot = source.read_text().splitlines()[0] if source.exists() else "(no SOURCE.md)"
    count = len(pins(args.lock))
    findings = audit(args.lock, args.advisories, args.ignore)
    for f in findings:
        aliases = f" ({', '.join(f.aliases)})" if f.aliases else ""
        fixed = f"; fixed in {', '.join(f.fixed)}" if f.fixed else ""
        status = f"IGNORED: {f.ignored_because}" if f.ignored_because else "VULNERABLE"
        print(f"{f.package}=={f.version}: {f.id}{aliases}{fixed} - {status}")
    open_findings = [f for f in findings if f.ignored_because is None]
    where = args.advisories.resolve()
    where = where.relative_to(ROOT) if where.is_relative_to(ROOT) else where
    print(
        f"offline audit: {count} pins against {where} ({snapshot}): "
        f"{len(open_findings)} vulnerable, {len(findings) - len(open_findings)} ignored"
    )
    return 1 if open_findings else 0


def _git(git_dir: Path, *argv: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(git_dir), *argv], check=True, capture_output=True, text=True
    ).stdout


def vendor(args: argparse.Namespace) -> int:
    """Rebuild ``--advisories`` from a clone of pypa/advisory-database (YAML -> JSON)."""
    import yaml  # only here: the check itself needs nothing beyond ``packaging``

    source = Path(args.vendor)
    git_dir = source / ".git" if (source / ".git").exists() else source
    commit = _git(git_dir, "rev-parse", "HEAD").strip()
    date = _git(git_dir, "log", "-1", "--format=%cI", "HEAD").strip()
    folders = {
        normalize(Path(p).name): p
        for p in _git(git_dir, "ls-tree", "--name-only", "HEAD", "vulns/").split()
    }
    out: Path = args.advisories
    for old in out.glob("*/*.json"):
        old.unlink()
    vendored = 0
    for name in sorted(pins(args.lock)):
        if name not in folders:
            continue
        files = _git(git_dir, "ls-tree", "--name-only", "HEAD", folders[name] + "/").split()
        for file in files:
            if not file.endswith((".yaml", ".yml", ".json")):
                continue
            advisory = yaml.safe_load(_git(git_dir, "show", f"HEAD:{file}"))
            target = out / name / f"{advisory['id']}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(advisory, indent=1, sort_keys=True, default=str) + "\n")
            vendored += 1
    for empty in out.iterdir():
        if empty.is_dir() and not any(empty.iterdir()):
            empty.rmdir()
    (out / "SOURCE.md").write_text(
        f"pypa/advisory-database at {commit} ({date})\n\n"
        "The files under this folder are the OSV advisories of the Python Packaging Authority's\n"
        "advisory database, https://github.com/pypa/advisory-database, for the packages that\n"
        f"requirements.lock pins ({vendored} advisories), converted from YAML to JSON and\n"
        "otherwise unchanged. They are licensed under the Creative Commons Attribution 4.0\n"
        "International license (CC-BY-4.0, https://creativecommons.org/licenses/by/4.0/),\n"
        "copyright the advisory database's contributors.\n\n"
        "Refresh: clone that repository, then\n"
        "`.venv/bin/python scripts/audit_offline.py --vendor <clone>`.\n"
    )
    print(f"vendored {vendored} advisories from {commit} ({date}) into {out}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=Path, default=LOCK)
    parser.add_argument("--advisories", type=Path, default=ADVISORIES)
    parser.add_argument("--ignore", type=Path, default=IGNORE)
    parser.add_argument("--vendor", metavar="GIT_DIR")
    args = parser.parse_args()
    sys.exit(vendor(args) if args.vendor else check(args))


if __name__ == "__main__":
    main()
