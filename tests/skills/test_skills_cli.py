"""The real ``skills`` CLI (npm package ``skills``) lists and installs from a live hepgg over
plain http on loopback, public skills and, through the capability URL, private ones.

1.5.18 is the newest release that runs on the machines' Node 20. It reads
``/.well-known/agent-skills/index.json`` first (v0.2.0: archive and skill-md entries, verified by
digest) and only falls back to the legacy ``/.well-known/skills/index.json``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from accounts.services import skills_key_issue
from skills.services import skills_import
from tests.skills.conftest import skill_files
from tests.tools import npm_package

CLI_VERSION = "1.5.18"
PDF = skill_files("pdf-forms")
COMMIT = skill_files("commit-messages")


@pytest.fixture(scope="session")
def skills_cli() -> Path:
    """The CLI's entry point, installed once from npm (``tests/tools.py``)."""
    return npm_package("skills", CLI_VERSION) / "bin" / "cli.mjs"


def run_cli(cli: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "DISABLE_TELEMETRY": "1",
        "DO_NOT_TRACK": "1",
        "NO_COLOR": "1",
        "CI": "1",
    }
    return subprocess.run(
        ["node", str(cli), *args], cwd=home, env=env, capture_output=True, text=True, timeout=180
    )


def installed(home: Path, name: str) -> dict[str, bytes]:
    root = home / ".claude" / "skills" / name
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_the_skills_cli_installs_public_and_private_skills(
    hepgg_server, member, skills_cli, tmp_path
):
    skills_import(account=member.account, files=PDF)
    skills_import(account=member.account, files=COMMIT, visibility="private")
    _row, key = skills_key_issue(account=member.account)
    server = hepgg_server()
    site = f"{server.base_url}/skills/"
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)

    listed = run_cli(skills_cli, home, "add", site, "--list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "pdf-forms" in listed.stdout
    assert "commit-messages" not in listed.stdout

    added = run_cli(
        skills_cli, home, "add", site, "-g", "-a", "claude-code", "-s", "*", "-y", "--copy"
    )
    assert added.returncode == 0, added.stdout + added.stderr
    assert installed(home, "pdf-forms") == PDF  # every file, byte for byte, from the archive
    assert not (home / ".claude" / "skills" / "commit-messages").exists()

    private = run_cli(
        skills_cli,
        home,
        "add",
        f"{site}k/{key}/",
        "-g",
        "-a",
        "claude-code",
        "-s",
        "commit-messages",
        "-y",
        "--copy",
    )
    assert private.returncode == 0, private.stdout + private.stderr
    assert installed(home, "commit-messages") == COMMIT
