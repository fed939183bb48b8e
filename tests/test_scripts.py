"""The README's ``make run``: quick and offline on a second start, one clear line when the port
is taken (the suite itself was started by ``make test``, so ``.venv`` and its stamp exist)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess

import pytest

from tests.conftest import IN_CI
from tests.servers import ROOT


def run_script(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "scripts/run.sh"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def taken_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_taken_port_gets_one_line_naming_the_variable_and_no_reinstall(taken_port, tmp_path):
    stamp = ROOT / ".venv" / ".hepgg-installed"
    current = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not stamp.exists() or not stamp.read_text().startswith(current):
        if IN_CI:
            pytest.fail("CI runs the suite through make test, which leaves a current stamp")
        pytest.skip("the suite was not started by make test since pyproject.toml changed")
    result = run_script(
        {"PORT": str(taken_port), "HEPGG_DATA_DIR": str(tmp_path), "PIP_NO_INDEX": "1"}
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"hepgg: port {taken_port} on 127.0.0.1 is already in use; "
        "run with another, e.g. PORT=8001 make run"
    )
    assert "installing" not in result.stdout + result.stderr  # the stamp matched: no pip
