"""The README's quickstart and how-tos, run the way they are written.

The commands come from the README's own code blocks (those marked ``<!-- readme-test: NAME -->``),
never from a copy in this file, so the README cannot drift from what works. The test only swaps
what a reader would: the server's address, the secrets an earlier block printed (``hyd_…``,
``sk-hyd-…``, ``pt_…``), the skill folder, and ``npx`` for the tool installed from npm. The
upstreams are the benchmark's fake (OpenAI, Cloudflare and Anthropic on one loopback port), the
clients are the real ones: the openai SDK, Claude Code and the ``skills`` CLI from npm.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import ROOT, ServerProcess, free_port, server_env
from tests.tools import npm_package
from tests.waits import wait_until
from usage.models import UsageEvent

pytestmark = pytest.mark.django_db(transaction=True)

README = (ROOT / "README.md").read_text()
BLOCK = re.compile(
    r"<!-- readme-test: (?P<name>[\w-]+) -->\n```(?P<lang>\w+)\n(?P<code>.*?)\n```", re.S
)
SECRETS = {
    "hyd_…": re.compile(r"hyd_[A-Za-z0-9_-]{43,}"),
    "sk-hyd-…": re.compile(r"sk-hyd-[A-Za-z0-9_-]{43,}"),
    "pt_…": re.compile(r"pt_[A-Za-z0-9_-]{43,}"),
}
CLAUDE_CODE = "2.1.332"
SKILLS_CLI = "1.5.18"
SKILL_MD = (
    "---\nname: my-skill\ndescription: Says hello the way this team does.\n---\n\nSay hello.\n"
)


def readme_blocks() -> dict[str, tuple[str, str]]:
    blocks = {m["name"]: (m["lang"], m["code"]) for m in BLOCK.finditer(README)}
    assert blocks, "the README lost its readme-test markers"
    return blocks


@pytest.fixture
def fake_upstream() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "fake_upstream.py"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, what="the fake upstream")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


class Reader:
    """Someone following the README: runs its blocks in order, keeps what they printed."""

    def __init__(self, server: ServerProcess, home: Path, tools: Path) -> None:
        self.server = server
        self.home = home
        self.found: dict[str, str] = {}
        self.swaps: dict[str, str] = {"http://127.0.0.1:8000": server.base_url}
        tools.mkdir(exist_ok=True)
        self.env = {
            **server_env(),
            "HOME": str(home),
            "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}",
            # What a user's shell has that the README does not set: their own Anthropic key
            # (it passes through the proxy untouched), and CLIs kept off the network.
            "ANTHROPIC_API_KEY": "sk-ant-readme-reader",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }

    def run(self, name: str) -> str:
        lang, code = readme_blocks()[name]
        for placeholder, value in [*self.swaps.items(), *self.found.items()]:
            code = code.replace(placeholder, value)
        commands = "\n".join(re.sub(r"(^|\s)#.*", "", line) for line in code.splitlines())
        unresolved = [p for p in SECRETS if p in commands]  # comments may show them as is
        assert not unresolved, f"block {name} needs {unresolved}, which no earlier block printed"
        # One terminal session: what a block exports (HYD, ANTHROPIC_BASE_URL) stays set.
        saved = self.home.parent / "readme-env"
        script = f"{code}\nenv -0 > {saved}"
        argv = ["bash", "-euo", "pipefail", "-c", script] if lang == "sh" else [sys.executable]
        result = subprocess.run(
            argv,
            input=None if lang == "sh" else code,
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, f"README block {name} failed:\n{result.stderr}"
        if lang == "sh":
            pairs = saved.read_bytes().decode().split("\0")
            self.env = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
        for placeholder, pattern in SECRETS.items():
            if match := pattern.search(result.stdout):
                self.found[placeholder] = match.group()
        return result.stdout


@pytest.fixture
def reader(hepgg_server, fake_upstream: str, catalog_model, tmp_path: Path) -> Reader:
    server = hepgg_server(
        env={
            "CLOUDFLARE_API_BASE": f"{fake_upstream}/client/v4",
            "CLOUDFLARE_ACCOUNT_ID": "readme",
            "CLOUDFLARE_API_TOKEN": "readme-token",
            "ANTHROPIC_UPSTREAM_URL": fake_upstream,
        }
    )
    return Reader(server, tmp_path / "home", tmp_path / "bin")


def test_the_quickstart_gets_a_completion_through_the_openai_sdk(reader: Reader) -> None:
    reader.run("create-account")
    keys = reader.run("mint-key")
    assert '"id": "cf-gpt-oss-20b"' in keys or '"id":"cf-gpt-oss-20b"' in keys
    reply = reader.run("openai-sdk")
    assert reply.split() == [f"word{i}" for i in range(20)]  # the fake's completion
    wait_until(lambda: UsageEvent.objects.filter(source="gateway").exists(), what="the usage event")


def test_claude_code_is_wired_and_metered_as_the_readme_says(reader: Reader, tmp_path) -> None:
    package = npm_package("@anthropic-ai/claude-code", CLAUDE_CODE)
    arch = {"x86_64": "x64", "aarch64": "arm64"}[platform.machine()]
    binary = package.parent / f"claude-code-linux-{arch}" / "claude"
    (tmp_path / "bin").mkdir(exist_ok=True)
    (tmp_path / "bin" / "claude").symlink_to(binary)

    reader.run("create-account")
    reader.run("mint-key")
    reader.run("register-machine")
    said = reader.run("claude-code")

    assert "word19" in said  # Claude Code printed the fake upstream's answer
    wait_until(
        lambda: UsageEvent.objects.filter(source="proxy", machine__isnull=False).exists(),
        what="the proxy's usage event",
    )
    event = UsageEvent.objects.get(source="proxy")
    assert event.machine.hostname == "laptop" and event.output_tokens > 0


def test_a_published_skill_installs_with_the_skills_cli(reader: Reader, tmp_path) -> None:
    skill = tmp_path / "my-skill"
    skill.mkdir()
    (skill / "SKILL.md").write_text(SKILL_MD)
    reader.swaps["./my-skill"] = str(skill)
    reader.swaps["npx skills"] = f"node {npm_package('skills', SKILLS_CLI) / 'bin' / 'cli.mjs'}"

    reader.run("create-account")
    issued = reader.run("publish-skill")
    assert '"capability_url"' in issued
    listed = reader.run("install-skill")

    assert "my-skill" in listed
    installed = tmp_path / "home" / ".claude" / "skills" / "my-skill" / "SKILL.md"
    assert installed.read_text() == SKILL_MD
