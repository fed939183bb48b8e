"""Every error is one clear line on stderr with a non-zero exit, never a traceback, and never a
secret: an unreachable or wrong gateway, a wrong credential type, broken files, bad arguments."""

from __future__ import annotations

import json

import pytest

from tests.servers import free_port

pytestmark = pytest.mark.django_db(transaction=True)

UNKNOWN_MASTER = "hyd_" + "A" * 43


def setup_config(home, **values) -> None:
    home.config_dir.mkdir(parents=True, exist_ok=True)
    (home.config_dir / "config.json").write_text(json.dumps(values))


CASES = {
    "unreachable gateway": (
        lambda h, g, m: ["init", "--host", f"http://127.0.0.1:{free_port()}", "--token", m],
        "cannot reach the gateway",
    ),
    "an API key instead of the master token": (
        lambda h, g, m: ["init", "--host", g.url, "--token", "sk-hyd-" + "k" * 43],
        "needs the account's master token (hyd_…); this is an API key",
    ),
    "a proxy token in the config": (
        lambda h, g, m: (
            setup_config(h, host=g.url, master_token="pt_" + "p" * 43),
            ["report", "daily"],
        )[1],
        "expects a master token (hyd_…), but a proxy token (pt_…) was sent",
    ),
    "an unknown master token": (
        lambda h, g, m: ["init", "--host", g.url, "--token", UNKNOWN_MASTER],
        "Invalid master token",
    ),
    "not a URL": (lambda h, g, m: ["init", "--host", "ftp://x", "--token", m], "not a gateway URL"),
    "not a hepgg gateway": (
        lambda h, g, m: ["init", "--host", g.upstream.url, "--token", m],
        "a hepgg gateway?",
    ),
    "settings.json is not JSON": (
        lambda h, g, m: (
            h.settings.parent.mkdir(),
            h.settings.write_text("{ nope"),
            ["init", "--token", m],
        )[2],
        "settings.json is not valid JSON",
    ),
    "settings.json is a folder": (
        lambda h, g, m: (h.settings.mkdir(parents=True), ["init", "--token", m])[1],
        "settings.json",
    ),
    "config.json is corrupt": (
        lambda h, g, m: (
            h.config_dir.mkdir(parents=True, exist_ok=True),
            (h.config_dir / "config.json").write_text("[1, 2"),
            ["status"],
        )[2],
        "config.json is not valid JSON",
    ),
    "an unknown time zone": (
        lambda h, g, m: ["report", "daily", "--local", "--timezone", "Mars/Olympus"],
        "unknown time zone",
    ),
    "a bad date": (
        lambda h, g, m: ["report", "daily", "--local", "--since", "last tuesday"],
        "--since must be a date",
    ),
    "since after until": (
        lambda h, g, m: [
            "report",
            "daily",
            "--local",
            "--since",
            "20261130",
            "--until",
            "20261101",
        ],
        "--since is after --until",
    ),
    "report before init": (lambda h, g, m: ["report", "daily"], "run `ccas init"),
    "sync before init": (lambda h, g, m: ["sync"], "run `ccas init"),
    "no token and no terminal": (lambda h, g, m: ["init", "--host", g.url], "no master token"),
}


# These fail before any request: they run without a gateway.
OFFLINE = {
    "an API key instead of the master token",
    "not a URL",
    "an unknown time zone",
    "a bad date",
    "since after until",
    "report before init",
    "sync before init",
    "no token and no terminal",
    "config.json is corrupt",
}


@pytest.fixture
def offline_home(home, zipapp_file):
    home.bin.mkdir(parents=True)
    home.ccas.symlink_to(zipapp_file)
    return home


@pytest.mark.parametrize("case", sorted(OFFLINE))
def test_each_error_before_any_request_is_one_line(offline_home, case) -> None:
    make_args, message = CASES[case]
    gateway = type("NoGateway", (), {"url": "http://127.0.0.1:9", "upstream": None})()
    args = make_args(offline_home, gateway, "hyd_" + "m" * 43)
    check_one_line(offline_home.run(*args, input=""), message, "m" * 43)


@pytest.mark.parametrize("case", sorted(set(CASES) - OFFLINE))
def test_each_error_is_one_line_without_a_traceback(installed, gateway, member, case) -> None:
    make_args, message = CASES[case]
    args = make_args(installed, gateway, member.master_token)
    check_one_line(installed.run(*args, input=""), message, member.master_token)


def check_one_line(result, message: str, secret: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ccas: ")
    assert message in lines[0]
    output = result.stdout + result.stderr
    assert secret not in output
    assert "p" * 43 not in output and "k" * 43 not in output and "A" * 43 not in output
