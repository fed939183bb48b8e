"""Every import form round-trips: what was uploaded is served back byte for byte."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from skills.models import Blob, Skill, SkillVersion
from tests.skills.conftest import FIXTURES, make_tar_gz, make_zip, skill_files

PDF = skill_files("pdf-forms")
COMMIT = skill_files("commit-messages")


def assert_served(client, name: str, files: dict[str, bytes], root: str = "/skills/") -> None:
    for path, content in files.items():
        response = client.get(f"{root}{name}/{path}")
        assert response.status_code == 200, path
        assert response.content == content, path


BODIES = {
    "zip at the root": (lambda: make_zip(PDF), "application/zip"),
    "zip with a wrapper folder": (lambda: make_zip(PDF, prefix="pdf-forms/"), "application/zip"),
    ".skill file (a zip)": (lambda: make_zip(PDF, prefix="pdf-forms/"), "application/octet-stream"),
    "tar.gz at the root": (lambda: make_tar_gz(PDF), "application/gzip"),
    "tar.gz with a wrapper folder": (
        lambda: make_tar_gz(PDF, prefix="pdf-forms-main/"),
        "application/gzip",
    ),
}


@pytest.mark.parametrize("form", list(BODIES))
def test_it_imports_and_serves_every_archive_form(client, publisher, form):
    make, content_type = BODIES[form]
    response = publisher.upload(client, make(), content_type=content_type)
    assert response.status_code == 201, response.content
    (skill,) = response.json()["skills"]
    assert skill["name"] == "pdf-forms"
    assert skill["version"] == 1
    assert skill["files"] == sorted(PDF)
    assert_served(client, "pdf-forms", PDF)


def test_it_imports_json_files(client, publisher):
    text_files = {k: v.decode() for k, v in COMMIT.items()}
    response = client.post(
        f"{publisher.root}import",
        json.dumps({"files": text_files, "visibility": "private"}),
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["skills"][0]["name"] == "commit-messages"
    assert Skill.objects.get(name="commit-messages").visibility == "private"
    assert client.get("/skills/commit-messages/SKILL.md").status_code == 404
    assert_served(client, "commit-messages", COMMIT, root=publisher.root)


def test_it_imports_several_skills_from_a_repository_tree(client, publisher):
    repo = {"README.md": b"# my skills repo\n"}
    repo.update({f"skills/pdf-forms/{p}": c for p, c in PDF.items()})
    repo.update({f"skills/commit-messages/{p}": c for p, c in COMMIT.items()})
    response = publisher.upload(
        client, make_tar_gz(repo, prefix="repo-main/"), content_type="application/gzip"
    )
    assert response.status_code == 201, response.content
    assert sorted(s["name"] for s in response.json()["skills"]) == ["commit-messages", "pdf-forms"]
    assert_served(client, "pdf-forms", PDF)
    assert_served(client, "commit-messages", COMMIT)


def test_a_skill_keeps_nested_skill_md_files_as_plain_files(client, publisher):
    files = {**PDF, "examples/inner/SKILL.md": b"---\nname: inner\ndescription: x\n---\n"}
    response = publisher.upload(client, make_zip(files))
    assert [s["name"] for s in response.json()["skills"]] == ["pdf-forms"]
    assert not Skill.objects.filter(name="inner").exists()


def test_identical_files_are_stored_once_across_versions(client, publisher):
    publisher.upload(client, make_zip(PDF))
    changed = {**PDF, "reference.md": b"# changed\n"}
    response = publisher.upload(client, make_zip(changed))
    assert response.json()["skills"][0]["version"] == 2
    assert Blob.objects.count() == len(PDF) + 1
    assert SkillVersion.objects.filter(skill__name="pdf-forms").count() == 2


def test_the_management_command_imports_a_folder(publisher, capsys):
    call_command("import_skills", str(FIXTURES / "pdf-forms"), account=publisher.account.email)
    assert "pdf-forms@1" in capsys.readouterr().out
    assert Skill.objects.get(name="pdf-forms").account == publisher.account


def test_the_management_command_imports_a_zip_file(publisher, tmp_path, client, capsys):
    archive = tmp_path / "pdf-forms.skill"
    archive.write_bytes(make_zip(PDF, prefix="pdf-forms/"))
    call_command("import_skills", str(archive), account=publisher.account.email, json=True)
    result = json.loads(capsys.readouterr().out)
    assert result["skills"][0]["name"] == "pdf-forms"
    assert_served(client, "pdf-forms", PDF)


def test_the_admin_upload_form_imports_an_archive(admin_client, publisher, client):
    upload = io.BytesIO(make_zip(PDF, prefix="pdf-forms/"))
    upload.name = "pdf-forms.zip"
    response = admin_client.post(
        "/admin/skills/skill/upload/",
        {"account": publisher.account.pk, "archive": upload, "visibility": ""},
    )
    assert response.status_code == 302, response.content
    assert_served(client, "pdf-forms", PDF)


def test_the_admin_upload_form_shows_errors_and_stores_nothing(admin_client, publisher):
    upload = io.BytesIO(make_zip({"README.md": b"no skill here"}))
    upload.name = "nothing.zip"
    response = admin_client.post(
        "/admin/skills/skill/upload/", {"account": publisher.account.pk, "archive": upload}
    )
    assert response.status_code == 200
    assert b"no SKILL.md found" in response.content
    assert not Skill.objects.exists()
