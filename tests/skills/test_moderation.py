"""Moderation in the admin: list, search, hide, delete, change visibility, read warnings."""

from __future__ import annotations

from skills.models import Blob, Skill, SkillVersion
from tests.skills.conftest import make_zip, skill_files

PDF = skill_files("pdf-forms")
COMMIT = skill_files("commit-messages")


def action(admin_client, model: str, name: str, pks: list[int]) -> None:
    response = admin_client.post(
        f"/admin/skills/{model}/", {"action": name, "_selected_action": pks}
    )
    assert response.status_code == 302, response.content


def test_the_admin_lists_and_searches_skills_and_versions(admin_client, client, publisher):
    publisher.upload(client, make_zip(PDF))
    publisher.upload(client, make_zip({"odd-folder/SKILL.md": COMMIT["SKILL.md"]}))
    listing = admin_client.get("/admin/skills/skill/?q=pdf")
    assert b"pdf-forms" in listing.content and b"commit-messages" not in listing.content
    assert b"Upload skills" in listing.content
    version = SkillVersion.objects.get(skill__name="commit-messages")
    page = admin_client.get(f"/admin/skills/skillversion/{version.pk}/change/")
    assert b"the folder is named" in page.content  # the warning is shown
    assert admin_client.get("/admin/skills/skillversion/?q=commit").status_code == 200
    skill = Skill.objects.get(name="pdf-forms")
    assert admin_client.get(f"/admin/skills/skill/{skill.pk}/change/").status_code == 200


def test_hiding_a_skill_takes_it_offline_at_once(admin_client, client, publisher):
    publisher.upload(client, make_zip(PDF))
    assert client.get("/skills/pdf-forms/SKILL.md").status_code == 200  # now cached
    skill = Skill.objects.get(name="pdf-forms")
    action(admin_client, "skill", "hide", [skill.pk])
    assert client.get("/skills/pdf-forms/SKILL.md").status_code == 404
    assert client.get(f"{publisher.root}pdf-forms/SKILL.md").status_code == 404
    assert client.get("/skills/index.json").json() == {"skills": []}
    action(admin_client, "skill", "unhide", [skill.pk])
    assert client.get("/skills/pdf-forms/SKILL.md").status_code == 200


def test_changing_visibility_in_the_admin_applies_at_once(admin_client, client, publisher):
    publisher.upload(client, make_zip(PDF))
    client.get("/skills/index.json")
    skill = Skill.objects.get(name="pdf-forms")
    action(admin_client, "skill", "make_private", [skill.pk])
    assert client.get("/skills/pdf-forms/SKILL.md").status_code == 404
    assert client.get("/skills/index.json").json() == {"skills": []}
    assert client.get(f"{publisher.root}pdf-forms/SKILL.md").status_code == 200
    response = admin_client.post(
        f"/admin/skills/skill/{skill.pk}/change/",
        {"visibility": "public", "versions-TOTAL_FORMS": 0, "versions-INITIAL_FORMS": 0},
    )
    assert response.status_code == 302, response.content
    assert client.get("/skills/pdf-forms/SKILL.md").status_code == 200


def test_deleting_a_version_moves_latest_back_and_frees_its_blobs(admin_client, client, publisher):
    publisher.upload(client, make_zip(PDF))
    publisher.upload(client, make_zip({**PDF, "reference.md": b"# v2 only\n"}))
    v2 = SkillVersion.objects.get(skill__name="pdf-forms", number=2)
    action(admin_client, "skillversion", "delete_versions", [v2.pk])
    assert client.get("/skills/pdf-forms/reference.md").content == PDF["reference.md"]
    assert client.get("/skills/pdf-forms@2/reference.md").status_code == 404
    assert Blob.objects.count() == len(PDF)
    # The number is never reused: the next import is v3.
    assert publisher.upload(client, make_zip(PDF)).json()["skills"][0]["version"] == 3


def test_deleting_a_skill_frees_its_name(admin_client, client, publisher, other_publisher):
    publisher.upload(client, make_zip(PDF))
    skill = Skill.objects.get(name="pdf-forms")
    action(admin_client, "skill", "delete_skills", [skill.pk])
    assert client.get("/skills/pdf-forms/SKILL.md").status_code == 404
    assert not Blob.objects.exists()
    assert other_publisher.upload(client, make_zip(PDF)).status_code == 201
