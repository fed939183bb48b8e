"""ccas status says what is set up and the usage of today and the week; ccas doctor runs the same
checks and prints the fix for each failure (and exits non-zero)."""

from __future__ import annotations

import json

import pytest

from accounts.models import Machine
from tests.ccas.fixtures import SONNET, Req, assistant_lines, dump

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_healthy_setup(initialised, gateway, member) -> None:
    # usage today, through sync (the day's date, whatever day the test runs)
    from datetime import UTC, datetime

    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    project = initialised.path / ".claude" / "projects" / "-p"
    project.mkdir(parents=True)
    req = Req("msg_T", "req_T", SONNET, now, 1000, 500, 0, 0, 0)
    (project / "s.jsonl").write_text(dump(assistant_lines(req, "s", "/p")))
    assert initialised.run("sync").returncode == 0

    status = initialised.run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    out = status.stdout
    assert f"host:    {gateway.url}" in out
    machine = Machine.objects.get()
    assert f"machine: laptop ({machine.public_id})" in out
    assert "[ok  ] claude settings" in out
    assert "[ok  ] overrides: nothing overrides" in out
    assert "[ok  ] gateway: reachable" in out
    assert "[ok  ] proxy: the proxy accepted this machine" in out
    assert "today:   1 requests, 1,500 tokens" in out
    assert "7 days:  1 requests, 1,500 tokens" in out
    assert member.master_token not in out

    doctor = initialised.run("doctor")
    assert doctor.returncode == 0, doctor.stdout
    assert "All checks passed." in doctor.stdout


@pytest.mark.parametrize(
    ("breakage", "check", "fix"),
    [
        ("unwired", "claude settings", "run `ccas init`"),
        ("shell", "overrides", "unset the variable"),
        ("project", "overrides", "remove those settings"),
        ("revoked", "machine", "run `ccas init` to register it"),
        ("token", "master token", "ccas init --token"),
        ("down", "gateway", "check that"),
    ],
)
def test_doctor_names_each_failure_and_its_fix(
    initialised, gateway, member, breakage, check, fix
) -> None:
    env = {}
    if breakage == "unwired":
        assert initialised.run("unwire").returncode == 0
    elif breakage == "shell":
        # another machine's proxy URL: its token must not be shown
        env["ANTHROPIC_BASE_URL"] = "http://127.0.0.1:1/anthropic/pt_" + "s" * 43
    elif breakage == "project":
        (initialised.path / "work" / ".claude").mkdir(parents=True)
        (initialised.path / "work" / ".claude" / "settings.local.json").write_text(
            json.dumps({"env": {"ANTHROPIC_BASE_URL": "http://elsewhere"}})
        )
        initialised.path = initialised.path / "work"  # run from inside that project
    elif breakage == "revoked":
        Machine.objects.get().revoke()
    elif breakage == "token":  # rotated since init: the saved one is no longer the account's
        path = initialised.config_dir / "config.json"
        config = json.loads(path.read_text())
        path.write_text(json.dumps({**config, "master_token": "hyd_" + "x" * 43}))
    elif breakage == "down":
        gateway.stop()
    doctor = initialised.run("doctor", env=env)
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    assert f"[FAIL] {check}:" in doctor.stdout, doctor.stdout
    assert fix in doctor.stdout
    assert "Traceback" not in doctor.stdout + doctor.stderr
    assert "s" * 43 not in doctor.stdout
    status = initialised.run("status", env=env)
    assert status.returncode == 1
    assert f"[FAIL] {check}:" in status.stdout
    assert "ccas doctor" in status.stdout
