"""The offline dependency audit (``scripts/audit_offline.py``): OSV ranges and version lists are
read as OSV defines them, a vulnerable pin fails the audit, and our lock passes it (any finding
is in the ignore list with a reason)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.servers import ROOT

SCRIPT = ROOT / "scripts" / "audit_offline.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_offline", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["audit_offline"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


audit_offline = _module()


def _run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, argv)], capture_output=True, text=True, timeout=60
    )


def _advisory(id: str, *, ranges=(), versions=(), name="Demo_Pkg", **extra) -> dict:
    return {
        "id": id,
        "affected": [
            {
                "package": {"name": name, "ecosystem": "PyPI"},
                "ranges": [{"type": "ECOSYSTEM", "events": list(events)} for events in ranges],
                "versions": list(versions),
            }
        ],
        **extra,
    }


FIXED = _advisory("T-1", ranges=[[{"introduced": "0"}, {"fixed": "1.5"}]])
LAST_AFFECTED = _advisory("T-2", ranges=[[{"introduced": "2.0"}, {"last_affected": "2.1"}]])
TWO_RANGES = _advisory(
    "T-3",
    ranges=[
        [{"introduced": "3.0"}, {"fixed": "3.0.4"}],
        [{"fixed": "4.2.1"}, {"introduced": "4.0"}],  # events need not come in order
    ],
)
LISTED = _advisory("T-4", versions=["5.0.post1"])
WITHDRAWN = _advisory("T-5", ranges=[[{"introduced": "0"}]], withdrawn="2024-01-01T00:00:00Z")


@pytest.mark.parametrize(
    "advisory, version, expected",
    [
        (FIXED, "0.1", True),
        (FIXED, "1.4.99", True),
        (FIXED, "1.5rc1", True),  # a pre-release of the fix is before it
        (FIXED, "1.5", False),
        (FIXED, "2.0", False),
        (LAST_AFFECTED, "1.9", False),
        (LAST_AFFECTED, "2.0", True),
        (LAST_AFFECTED, "2.1", True),
        (LAST_AFFECTED, "2.1.1", False),
        (TWO_RANGES, "2.9", False),
        (TWO_RANGES, "3.0.3", True),
        (TWO_RANGES, "3.0.4", False),
        (TWO_RANGES, "4.1", True),
        (TWO_RANGES, "4.2.1", False),
        (LISTED, "5.0.post1", True),
        (LISTED, "5.0", False),
        (WITHDRAWN, "1.0", False),
    ],
)
def test_osv_ranges_and_version_lists(advisory: dict, version: str, expected: bool) -> None:
    assert audit_offline.affects(advisory, "demo-pkg", version) is expected


def test_another_package_or_ecosystem_is_not_matched() -> None:
    assert not audit_offline.affects(FIXED, "demo-other", "1.0")
    npm = json.loads(json.dumps(FIXED))
    npm["affected"][0]["package"]["ecosystem"] = "npm"
    assert not audit_offline.affects(npm, "demo-pkg", "1.0")


def test_a_known_vulnerable_pin_fails_the_audit_and_an_ignore_needs_a_reason(
    tmp_path: Path,
) -> None:
    lock = tmp_path / "requirements.lock"
    # Django 3.2.0 has many PYSEC advisories; idna 3.20 is clean.
    lock.write_text(
        "django==3.2.0 \\\n    --hash=sha256:" + "0" * 64 + "\n"
        "idna==3.20 \\\n    --hash=sha256:" + "1" * 64 + "\n"
    )
    no_ignores = tmp_path / "none.toml"
    found = _run("--lock", lock, "--ignore", no_ignores)
    assert found.returncode == 1, found.stdout + found.stderr
    assert "django==3.2.0: PYSEC-" in found.stdout and "VULNERABLE" in found.stdout
    assert "idna" not in found.stdout.split("offline audit:")[0]

    ids = sorted({line.split(": ")[1].split(" ")[0] for line in found.stdout.splitlines()
                  if line.startswith("django==3.2.0: ")})  # fmt: skip
    ignores = tmp_path / "ignore.toml"
    ignores.write_text(
        "".join(f'[[ignore]]\nid = "{i}"\npackage = "Django"\nreason = "a test"\n\n' for i in ids)
    )
    accepted = _run("--lock", lock, "--ignore", ignores)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert f"0 vulnerable, {len(ids)} ignored" in accepted.stdout

    ignores.write_text(f'[[ignore]]\nid = "{ids[0]}"\npackage = "django"\nreason = ""\n')
    unexplained = _run("--lock", lock, "--ignore", ignores)
    assert unexplained.returncode != 0 and "has no reason" in unexplained.stderr


def test_our_lock_passes_and_every_finding_has_a_reason() -> None:
    result = _run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 vulnerable" in result.stdout
    for line in result.stdout.splitlines()[:-1]:
        assert "IGNORED: " in line, line


def test_the_vendored_advisories_name_their_source_and_licence() -> None:
    folder = ROOT / "security" / "osv"
    source = (folder / "SOURCE.md").read_text()
    assert source.startswith("pypa/advisory-database at ")
    assert "CC-BY-4.0" in source
    pinned = audit_offline.pins(ROOT / "requirements.lock")
    vendored = {path.name for path in folder.iterdir() if path.is_dir()}
    assert {"django", "aiohttp", "cryptography"} <= vendored
    assert vendored <= set(pinned), (
        f"advisories of packages we do not pin: {vendored - set(pinned)}"
    )
