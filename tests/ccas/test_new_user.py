"""A new user, start to finish, on a fresh HOME: install from the gateway, init, use Claude
through the proxy (the official SDK configured from settings.json as Claude Code is), see it in
``ccas report daily`` and ``blocks`` with the plan's real limits, then unwire."""

from __future__ import annotations

import json

import anthropic
import pytest

from accounts.models import Machine
from tests.ccas.conftest import run_installer
from tests.proxy.conftest import CACHE_READ, CACHE_WRITE, INPUT, MODEL, OUTPUT
from tests.waits import wait_for_events

pytestmark = pytest.mark.django_db(transaction=True)

SETTINGS = b'{\n  "model": "sonnet",\n  "env": {\n    "DISABLE_AUTOUPDATER": "1"\n  }\n}\n'


def test_install_init_meter_report_unwire(home, gateway, member) -> None:
    home.settings.parent.mkdir()
    home.settings.write_bytes(SETTINGS)
    gateway.upstream.extra_headers = {
        "anthropic-ratelimit-unified-status": "allowed",
        "anthropic-ratelimit-unified-5h-utilization": "0.37",
        "anthropic-ratelimit-unified-5h-reset": "1795860000",
        "anthropic-ratelimit-unified-7d-utilization": "0.12",
        "anthropic-ratelimit-unified-7d-reset": "1796300000",
    }

    installed = run_installer(home, gateway.url)
    assert installed.returncode == 0, installed.stderr
    init = home.run("init", env={"HYD_MASTER_TOKEN": member.master_token})  # host: the installer's
    assert init.returncode == 0, init.stdout + init.stderr

    # Claude Code reads env.ANTHROPIC_BASE_URL from settings.json; its own login is untouched
    base_url = json.loads(home.settings.read_text())["env"]["ANTHROPIC_BASE_URL"]
    with anthropic.Anthropic(base_url=base_url, api_key="sk-ant-own-key", max_retries=0) as client:
        for _ in range(2):
            client.messages.create(
                model=MODEL,
                max_tokens=50,
                messages=[{"role": "user", "content": "hello"}],
                extra_headers={"x-claude-code-session-id": "sess-new-user"},
            )
    events = wait_for_events(2)
    machine = Machine.objects.get(account=member.account)
    assert {(e.source, e.machine_id, e.session_id) for e in events} == {
        ("proxy", machine.id, "sess-new-user")
    }
    posts = [r for r in gateway.upstream.requests if r.method == "POST"]
    assert len(posts) == 2
    for seen in posts:  # the client's own credential went upstream as it was sent
        assert "sk-ant-own-key" in (seen.header("x-api-key") or seen.header("authorization"))

    daily = home.run("report", "daily")
    assert daily.returncode == 0, daily.stderr
    total = next(line for line in daily.stdout.splitlines() if line.startswith("Total"))
    assert total.split()[1:6] == [
        str(2 * INPUT),
        str(2 * OUTPUT),
        str(2 * CACHE_WRITE),
        str(2 * CACHE_READ),
        str(2 * (INPUT + OUTPUT + CACHE_WRITE + CACHE_READ)),
    ]

    blocks = home.run("report", "blocks")
    assert blocks.returncode == 0, blocks.stderr
    assert "Plan limits reported by Anthropic" in blocks.stdout
    assert "5h 37%" in blocks.stdout and "week 12%" in blocks.stdout
    limits = json.loads(home.run("report", "blocks", "--json").stdout)["rate_limits"]
    assert limits[0]["five_hour_utilization"] == 0.37
    assert limits[0]["machine_id"] == str(machine.public_id)

    unwire = home.run("unwire")
    assert unwire.returncode == 0, unwire.stderr
    assert home.settings.read_bytes() == SETTINGS
