"""ccas init registers the machine once and merges the proxy URL into Claude Code's settings
(keys kept, mode kept, backup made, no credential); ccas unwire takes back exactly that."""

from __future__ import annotations

import json
import os
import stat

import pytest

from accounts.models import Machine

pytestmark = pytest.mark.django_db(transaction=True)

# A settings file as people have them: other env variables, permissions, hooks, odd spacing.
EXISTING = (
    b'{\n    "model": "opus",\n    "env": {"DISABLE_TELEMETRY": "1"},\n'
    b'    "permissions": {"allow": ["Bash(npm run test:*)"], "deny": []},\n'
    b'    "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "say done"}]}]},\n'
    b'    "statusLine": {"type": "command", "command": "~/.claude/statusline.sh"}\n}\n'
)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_init_merges_into_existing_settings_and_unwire_restores_them_byte_for_byte(
    installed, gateway, member
) -> None:
    installed.settings.parent.mkdir()
    installed.settings.write_bytes(EXISTING)
    os.chmod(installed.settings, 0o640)

    result = installed.run("init", "--token", member.master_token, "--name", "laptop")
    assert result.returncode == 0, result.stdout + result.stderr
    machine = Machine.objects.get(account=member.account)
    assert machine.hostname == "laptop"

    settings = json.loads(installed.settings.read_bytes())
    config = json.loads((installed.config_dir / "config.json").read_text())
    assert settings["env"] == {
        "DISABLE_TELEMETRY": "1",
        "ANTHROPIC_BASE_URL": config["base_url"],
        "CLAUDE_CODE_GATEWAY_HINT_HEADERS": "1",
    }
    assert config["base_url"].startswith(f"{gateway.url}/anthropic/pt_")
    for key in ("model", "permissions", "hooks", "statusLine"):
        assert settings[key] == json.loads(EXISTING)[key]
    # no credential: a claude.ai login must keep working
    assert "apiKeyHelper" not in settings
    assert not {"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"} & set(settings["env"])
    assert mode(installed.settings) == 0o640
    backups = list(installed.settings.parent.glob("settings.json.ccas-backup-*"))
    assert [b.read_bytes() for b in backups] == [EXISTING]
    # what it did, and how to undo it; never a secret
    assert "ccas unwire" in result.stdout
    assert "Proxy check: the proxy accepted this machine" in result.stdout
    output = result.stdout + result.stderr
    assert member.master_token not in output and config["proxy_token"] not in output
    # its own config is private
    assert mode(installed.config_dir) == 0o700
    assert mode(installed.config_dir / "config.json") == 0o600

    again = installed.run("init", "--token", member.master_token)
    assert again.returncode == 0, again.stdout + again.stderr
    assert Machine.objects.filter(account=member.account).count() == 1
    assert "Reusing this machine" in again.stdout
    assert len(list(installed.settings.parent.glob("settings.json.ccas-backup-*"))) == 1

    undone = installed.run("unwire")
    assert undone.returncode == 0, undone.stderr
    assert installed.settings.read_bytes() == EXISTING
    assert mode(installed.settings) == 0o640
    assert "wiring" not in json.loads((installed.config_dir / "config.json").read_text())


def test_unwire_after_other_edits_removes_only_what_init_added(installed, member) -> None:
    installed.settings.parent.mkdir()
    installed.settings.write_text(json.dumps({"env": {"ANTHROPIC_BASE_URL": "http://old"}}))
    assert installed.run("init", "--token", member.master_token).returncode == 0
    settings = json.loads(installed.settings.read_text())
    settings["theme"] = "dark"  # the user changes something else meanwhile
    settings["env"]["EDITOR"] = "vim"
    installed.settings.write_text(json.dumps(settings, indent=4))

    assert installed.run("unwire").returncode == 0
    assert json.loads(installed.settings.read_text()) == {
        "env": {"ANTHROPIC_BASE_URL": "http://old", "EDITOR": "vim"},
        "theme": "dark",
    }


def test_without_a_settings_file_init_creates_one_and_unwire_removes_it(installed, member) -> None:
    assert installed.run("init", "--token", member.master_token).returncode == 0
    assert set(json.loads(installed.settings.read_text())) == {"env"}
    assert installed.run("unwire").returncode == 0
    assert not installed.settings.exists()
    assert installed.run("unwire").stdout.startswith("ccas has not changed")


def test_claude_config_dir_is_honoured_and_the_token_can_come_from_the_environment(
    installed, member, tmp_path
) -> None:
    elsewhere = tmp_path / "claude-config"
    elsewhere.mkdir()
    env = {"CLAUDE_CONFIG_DIR": str(elsewhere), "HYD_MASTER_TOKEN": member.master_token}
    result = installed.run("init", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ANTHROPIC_BASE_URL" in json.loads((elsewhere / "settings.json").read_text())["env"]
    assert not installed.settings.exists()


def test_a_symlinked_settings_file_stays_a_symlink(installed, member, tmp_path) -> None:
    dotfiles = tmp_path / "dotfiles" / "claude-settings.json"
    dotfiles.parent.mkdir()
    dotfiles.write_bytes(EXISTING)
    installed.settings.parent.mkdir()
    installed.settings.symlink_to(dotfiles)
    assert installed.run("init", "--token", member.master_token).returncode == 0
    assert installed.settings.is_symlink()
    assert "ANTHROPIC_BASE_URL" in json.loads(dotfiles.read_text())["env"]
    assert installed.run("unwire").returncode == 0
    assert installed.settings.is_symlink() and dotfiles.read_bytes() == EXISTING
