"""The operator commands print each secret once, as JSON with --json."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.credentials import resolve
from accounts.tokens import Kind

pytestmark = pytest.mark.django_db


def run(*args: str) -> dict:
    out = StringIO()
    call_command(*args, "--json", stdout=out, stderr=StringIO())
    return json.loads(out.getvalue())


def test_the_commands_issue_every_credential(catalog_model) -> None:
    created = run("create_account", "ops@example.com")
    assert set(created) == {"account_id", "email", "master_token"}
    assert created["email"] == "ops@example.com"
    assert resolve(created["master_token"], Kind.MASTER).account_public_id == created["account_id"]

    rotated = run("rotate_master_token", "ops@example.com")
    assert resolve(created["master_token"], Kind.MASTER) is None
    assert resolve(rotated["master_token"], Kind.MASTER) is not None

    skills = run("issue_skills_key", "ops@example.com")
    assert resolve(skills["skills_access_key"], Kind.SKILLS) is not None
    # The capability URL the admin shows, ready to give to an agent.
    assert skills["capability_url"] == (
        f"http://127.0.0.1:8000/skills/k/{skills['skills_access_key']}/"
    )

    minted = run("mint_key", "ops@example.com", "--model", "cf-gpt-oss-20b")
    assert set(minted) == {"id", "key", "model"} and minted["model"] == "cf-gpt-oss-20b"
    assert resolve(minted["key"], Kind.API_KEY).key_public_id == minted["id"]


def test_they_refuse_unknown_accounts_models_and_duplicates(catalog_model) -> None:
    run("create_account", "ops@example.com")
    with pytest.raises(CommandError, match="already exists"):
        run("create_account", "ops@example.com")
    with pytest.raises(CommandError, match="No account"):
        run("rotate_master_token", "nobody@example.com")
    with pytest.raises(CommandError, match="Unknown or disabled model"):
        run("mint_key", "ops@example.com", "--model", "gpt-9")
    with pytest.raises(CommandError, match="Not an email"):
        run("create_account", "not-an-email")
