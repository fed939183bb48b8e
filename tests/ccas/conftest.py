"""The ccas tests' cast: a live gateway on loopback (its public URL its own, the fake Anthropic
upstream behind its proxy), a fresh HOME per test, and ``ccas`` installed there the way a user
installs it (``curl -fsSL …/ccas/install.sh | sh``) and run as a subprocess with the system's
python3 and nothing of the test environment."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ccas_cli.build import build
from tests.proxy.conftest import FakeAnthropic, fake_anthropic  # noqa: F401 - the fixture
from tests.servers import ServerProcess, free_port

# The user's PATH: system tools only (no virtualenv), so ccas runs on a bare python3.
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass
class Gateway:
    server: ServerProcess
    url: str
    upstream: FakeAnthropic

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def gateway(hepgg_server, fake_anthropic) -> Gateway:  # noqa: F811 - fixture injection
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = hepgg_server(
        port=port,
        env={
            "GATEWAY_PUBLIC_URL": url,
            "ANTHROPIC_UPSTREAM_URL": fake_anthropic.url,
            "PROXY_RATELIMIT_FLUSH_SECONDS": "0.1",
        },
    )
    return Gateway(server, url, fake_anthropic)


@dataclass
class Home:
    path: Path
    bin: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def ccas(self) -> Path:
        return self.bin / "ccas"

    @property
    def settings(self) -> Path:
        return self.path / ".claude" / "settings.json"

    @property
    def config_dir(self) -> Path:
        return self.path / ".config" / "ccas"

    def run(
        self, *args: str, env: dict[str, str] | None = None, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.ccas), *args],
            cwd=self.path,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
            input=input,
        )


@pytest.fixture
def home(tmp_path: Path) -> Home:
    path = tmp_path / "home"
    path.mkdir()
    bin_dir = path / ".local" / "bin"
    env = {"HOME": str(path), "PATH": f"{bin_dir}:{SYSTEM_PATH}", "TZ": "UTC", "LANG": "C.UTF-8"}
    return Home(path, bin_dir, env)


def curl_available() -> bool:
    return shutil.which("curl", path=SYSTEM_PATH) is not None


def run_installer(home: Home, gateway_url: str, *, path: str | None = None):
    """What the user runs: ``curl -fsSL URL | sh`` (python3 fetches the script where the
    machine has no curl, and the script itself then falls back to wget or python3)."""
    url = f"{gateway_url}/ccas/install.sh"
    env = {**home.env, "PATH": path or home.env["PATH"]}
    if curl_available() and path is None:
        command = f"curl -fsSL {url} | sh"
    else:
        fetch = (
            "import urllib.request,sys; "
            f"sys.stdout.write(urllib.request.urlopen('{url}').read().decode())"
        )
        command = f'python3 -c "{fetch}" | sh'
    return subprocess.run(
        ["/bin/sh", "-c", command], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def installed(home: Home, gateway: Gateway) -> Home:
    result = run_installer(home, gateway.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert home.ccas.exists()
    return home


@pytest.fixture
def make_member_token(member) -> Callable[[], str]:
    return lambda: member.master_token


@pytest.fixture
def initialised(installed: Home, gateway: Gateway, member) -> Home:
    result = installed.run("init", "--token", member.master_token, "--name", "laptop")
    assert result.returncode == 0, result.stdout + result.stderr
    return installed


@pytest.fixture(scope="session")
def zipapp_file(tmp_path_factory) -> Iterator[Path]:
    """The zipapp as the gateway builds it, for tests that need no server."""
    path = tmp_path_factory.mktemp("ccas") / "ccas"
    path.write_bytes(build().data)
    os.chmod(path, 0o755)
    yield path
