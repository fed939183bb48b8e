"""Defects the property tests found, kept as explicit examples through the real surfaces."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from accounts.services import skills_key_issue
from tests.conftest import Member

pytestmark = pytest.mark.django_db


def test_a_skill_whose_frontmatter_holds_an_infinity_imports_and_its_index_is_json(
    client: Client, member: Member
) -> None:
    # Found by test_accepted_frontmatter_is_always_storable_as_json: YAML's .inf became a float
    # that a JSON column (PostgreSQL jsonb) refuses, so the import answered 500.
    _, key = skills_key_issue(account=member.account)
    skill_md = (
        "---\nname: odd-numbers\ndescription: fine\nmetadata:\n  big: .inf\n  small: -.inf\n---\n"
    )
    response = client.post(
        f"/skills/k/{key}/import",
        json.dumps({"files": {"SKILL.md": skill_md}}),
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    index = client.get("/skills/index.json")
    json.loads(index.content, parse_constant=lambda name: pytest.fail(f"{name} in index.json"))
