"""GET /ccas/install.sh installs a working ccas for the current user with nothing but python3 and
the gateway: through sh, checksum verified, re-runnable as an upgrade, the URLs the public ones."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from ccas_cli.build import build, project_version
from tests.ccas.conftest import SYSTEM_PATH, curl_available, run_installer

pytestmark = pytest.mark.django_db(transaction=True)


def test_curl_pipe_sh_installs_ccas_whose_version_is_the_projects(home, gateway) -> None:
    if not curl_available():
        # What a user runs needs curl; on a machine without it the script is fetched by python3.
        print("curl is not installed here: the installer is fetched with python3 instead")
    result = run_installer(home, gateway.url)
    assert result.returncode == 0, result.stderr
    assert str(home.ccas) in result.stdout  # it says where it put it
    version = home.run("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == project_version()
    # ~/.local/bin is not on this user's login PATH: the installer says what to add
    bare = run_installer(home, gateway.url, path=SYSTEM_PATH)
    assert bare.returncode == 0, bare.stderr
    assert f'export PATH="{home.bin}:$PATH"' in bare.stdout


def test_the_script_names_the_public_url_and_the_zipapps_checksum(home, gateway) -> None:
    script = httpx.get(f"{gateway.url}/ccas/install.sh").text
    pyz = httpx.get(f"{gateway.url}/ccas/ccas.pyz")
    assert script.startswith("#!/bin/sh")
    assert f"GATEWAY={gateway.url}" in script
    digest = hashlib.sha256(pyz.content).hexdigest()
    assert f"SHA256={digest}" in script
    assert httpx.get(f"{gateway.url}/ccas/ccas.pyz.sha256").text.split()[0] == digest
    assert pyz.headers["etag"] == f'"{digest}"'
    again = httpx.get(f"{gateway.url}/ccas/ccas.pyz", headers={"If-None-Match": f'"{digest}"'})
    assert again.status_code == 304


def test_the_zipapp_is_the_same_bytes_for_the_same_source() -> None:
    assert build().data == build().data


def test_running_it_again_upgrades_in_place(home, gateway) -> None:
    assert run_installer(home, gateway.url).returncode == 0
    home.ccas.write_text("#!/bin/sh\necho stale\n")  # an older ccas
    before = os.stat(home.ccas).st_ino
    result = run_installer(home, gateway.url)
    assert result.returncode == 0, result.stderr
    assert os.stat(home.ccas).st_ino != before  # replaced by a rename, never written in place
    assert home.run("--version").stdout.strip() == project_version()
    assert [p.name for p in home.bin.iterdir()] == ["ccas"]  # no temporary file left


def test_a_checksum_mismatch_installs_nothing(home, gateway) -> None:
    script = httpx.get(f"{gateway.url}/ccas/install.sh").text
    tampered = "\n".join(
        "SHA256=" + "0" * 64 if line.startswith("SHA256=") else line for line in script.split("\n")
    )
    result = subprocess.run(
        ["/bin/sh"], input=tampered, env=home.env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "checksum mismatch" in result.stderr
    assert not home.ccas.exists()
    assert not any(home.bin.iterdir())


def test_it_installs_with_only_python3_and_sh(home, gateway, tmp_path) -> None:
    """No curl, no wget, no sha256sum: python3 downloads and checks the checksum."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("sh", "python3", "mkdir", "chmod", "mv", "rm", "cut"):
        real = subprocess.run(
            ["/bin/sh", "-c", f"command -v {name}"],
            env={"PATH": SYSTEM_PATH},
            capture_output=True,
            text=True,
        ).stdout.strip()
        (tools / name).symlink_to(real)
    result = run_installer(home, gateway.url, path=f"{home.bin}:{tools}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert home.run("--version").stdout.strip() == project_version()


def test_the_cli_runs_on_python_3_10(zipapp_file: Path) -> None:
    candidates = sorted(Path("/root/.pyenv/versions").glob("3.10*/bin/python3"))
    if not candidates:
        pytest.skip("no Python 3.10 on this machine")
    result = subprocess.run(
        [str(candidates[0]), str(zipapp_file), "report", "daily", "--local", "--json"],
        env={"HOME": str(zipapp_file.parent), "PATH": SYSTEM_PATH},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert '"report": "daily"' in result.stdout
