"""Strict errors refuse the whole upload (nothing stored); lenient warnings are kept."""

from __future__ import annotations

import json

import pytest

from skills.models import Blob, Skill, SkillVersion
from tests.skills.conftest import make_zip, skill_files

COMMIT = skill_files("commit-messages")


def skill_md(frontmatter: str, body: str = "# body\n") -> bytes:
    return f"---\n{frontmatter}---\n{body}".encode()


def assert_nothing_stored() -> None:
    assert not Skill.objects.exists()
    assert not SkillVersion.objects.exists()
    assert not Blob.objects.exists()


BAD = {
    "no SKILL.md": ({"README.md": b"hello"}, "no SKILL.md"),
    "no frontmatter": ({"SKILL.md": b"# just markdown\n"}, "frontmatter"),
    "unclosed frontmatter": ({"SKILL.md": b"---\nname: a\n"}, "frontmatter"),
    "frontmatter not YAML": ({"SKILL.md": skill_md("name: [a\n")}, "not valid YAML"),
    "frontmatter not a mapping": ({"SKILL.md": skill_md("- a\n- b\n")}, "mapping"),
    "YAML aliases": (
        {"SKILL.md": skill_md("name: a\ndescription: &x d\nother: *x\n")},
        "aliases",
    ),
    "name missing": ({"SKILL.md": skill_md("description: d\n")}, "no 'name'"),
    "name uppercase": ({"SKILL.md": skill_md("name: PDF\ndescription: d\n")}, "'name'"),
    "name double hyphen": ({"SKILL.md": skill_md("name: a--b\ndescription: d\n")}, "'name'"),
    "name leading hyphen": ({"SKILL.md": skill_md("name: -ab\ndescription: d\n")}, "'name'"),
    "name too long": ({"SKILL.md": skill_md(f"name: {'a' * 65}\ndescription: d\n")}, "'name'"),
    "name reserved": ({"SKILL.md": skill_md("name: k\ndescription: d\n")}, "reserved"),
    "description missing": ({"SKILL.md": skill_md("name: a\n")}, "no 'description'"),
    "description too long": (
        {"SKILL.md": skill_md(f"name: a\ndescription: {'d' * 1025}\n")},
        "longer than 1024",
    ),
    "SKILL.md not UTF-8": ({"SKILL.md": b"---\nname: a\ndescription: \xff\n---\n"}, "UTF-8"),
    "two skills with one name": (
        {
            "one/SKILL.md": skill_md("name: same\ndescription: d\n"),
            "two/SKILL.md": skill_md("name: same\ndescription: d\n"),
        },
        "two skills",
    ),
    "one bad skill among good ones": (
        {
            "good/SKILL.md": skill_md("name: good\ndescription: d\n"),
            "bad/SKILL.md": skill_md("name: Bad\ndescription: d\n"),
        },
        "'name'",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_it_refuses_an_invalid_skill_and_stores_nothing(client, publisher, case):
    files, message = BAD[case]
    response = publisher.upload(client, make_zip(files))
    assert response.status_code == 400
    problems = response.json()["errors"]
    assert problems and all(set(p) == {"path", "message"} for p in problems)
    assert any(message in p["message"] for p in problems), problems
    assert_nothing_stored()


def test_it_refuses_a_body_that_is_no_archive(client, publisher):
    response = publisher.upload(client, b"hello world", content_type="text/plain")
    assert response.status_code == 400
    assert_nothing_stored()


def test_it_refuses_a_bad_visibility(client, publisher):
    response = publisher.upload(client, make_zip(COMMIT), query="?visibility=secret")
    assert response.status_code == 400
    assert_nothing_stored()


def test_it_keeps_lenient_warnings_with_the_version(client, publisher):
    files = {
        "folder-name/SKILL.md": skill_md(
            "name: real-name\ndescription: Uses <b>bold</b> markup\nversion: 3\nauthor: me\n"
        )
    }
    response = publisher.upload(client, make_zip(files))
    assert response.status_code == 201, response.content
    warnings = response.json()["skills"][0]["warnings"]
    assert any("folder is named 'folder-name'" in w and "name wins" in w for w in warnings)
    assert any("'version' is not in the Agent Skills spec" in w for w in warnings)
    assert any("'author'" in w for w in warnings)
    assert any("markup" in w for w in warnings)
    version = SkillVersion.objects.get(skill__name="real-name")
    assert version.warnings == warnings
    assert version.frontmatter["author"] == "me"


def test_it_keeps_every_frontmatter_field(client, publisher):
    publisher.upload(client, make_zip(skill_files("pdf-forms")))
    version = SkillVersion.objects.get(skill__name="pdf-forms")
    assert version.license == "Apache-2.0"
    assert version.compatibility.startswith("Needs Python")
    assert version.allowed_tools == "Bash(python3:*) Read"
    assert version.metadata == {"author": "hepgg tests", "version": "1.2"}
    assert version.warnings == []


def test_a_name_owned_by_another_account_is_a_conflict(client, publisher, other_publisher):
    assert publisher.upload(client, make_zip(COMMIT)).status_code == 201
    response = other_publisher.upload(client, make_zip(COMMIT))
    assert response.status_code == 409
    assert response.json()["errors"][0]["message"].startswith("the skill name")
    assert SkillVersion.objects.count() == 1


def test_a_conflict_on_one_skill_stores_none_of_the_upload(client, publisher, other_publisher):
    publisher.upload(client, make_zip(COMMIT))
    both = {f"commit-messages/{p}": c for p, c in COMMIT.items()}
    both["fresh/SKILL.md"] = skill_md("name: fresh\ndescription: d\n")
    assert other_publisher.upload(client, make_zip(both)).status_code == 409
    assert not Skill.objects.filter(name="fresh").exists()


def test_a_wrong_key_cannot_import(client, publisher):
    wrong = "0" * 48
    response = client.post(
        f"/skills/k/{wrong}/import", make_zip(COMMIT), content_type="application/zip"
    )
    assert response.status_code == 404
    for _ in range(20):  # the key is resolved and cached
        assert client.get(f"{publisher.root}index.json").status_code == 200
    publisher.key_row.revoke()
    assert publisher.upload(client, make_zip(COMMIT)).status_code == 404
    assert_nothing_stored()


def test_json_with_non_text_values_is_refused(client, publisher):
    response = client.post(
        f"{publisher.root}import",
        json.dumps({"files": {"SKILL.md": 3}}),
        content_type="application/json",
    )
    assert response.status_code == 400
