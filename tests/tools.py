"""Command-line tools the suite drives for real (npm packages), installed once per machine into
``.test-tools/`` at the repository root: out of the data folder the dev server uses, and kept
between runs so that only the first run downloads them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.servers import ROOT

TOOLS_DIR = ROOT / ".test-tools"


def npm_package(name: str, version: str) -> Path:
    """The folder of ``name@version`` installed from npm (its ``node_modules/<name>``).

    Without node and npm the calling test skips, except in CI, where it fails.
    """
    if not shutil.which("node") or not shutil.which("npm"):
        if IN_CI:
            pytest.fail(f"node and npm are needed to run {name}")
        pytest.skip(f"needs node and npm for {name}")
    prefix = TOOLS_DIR / f"{name.replace('/', '+')}-{version}"
    package = prefix / "node_modules" / name
    if not (package / "package.json").exists():
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix),
             f"{name}@{version}"],
            check=True,
            capture_output=True,
            timeout=600,
        )  # fmt: skip
    return package
