"""Serving: exact bytes, safe headers, ETags, pinning, and who may see what."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest
from django.test import Client, override_settings

from skills.models import Skill
from tests.skills.conftest import make_zip, skill_files

PDF = skill_files("pdf-forms")
COMMIT = skill_files("commit-messages")


@pytest.fixture
def published(client, publisher):
    assert publisher.upload(client, make_zip(PDF)).status_code == 201
    return publisher


def test_skill_md_is_served_byte_for_byte_as_markdown(client, published):
    response = client.get("/skills/pdf-forms/SKILL.md")
    assert response.content == PDF["SKILL.md"]
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["ETag"] == f'"{hashlib.sha256(PDF["SKILL.md"]).hexdigest()}"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "sandbox; default-src 'none'"
    assert response["Access-Control-Allow-Origin"] == "*"
    assert response["Content-Length"] == str(len(PDF["SKILL.md"]))


@pytest.mark.parametrize("path", ["/skills/pdf-forms", "/skills/pdf-forms/"])
def test_the_skill_url_answers_the_skill_md_to_a_non_browser(client, published, path):
    response = client.get(path, HTTP_ACCEPT="*/*")
    assert response.content == PDF["SKILL.md"]
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Vary"] == "Accept"


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("reference.md", "text/markdown; charset=utf-8"),
        ("scripts/fill.py", "text/plain; charset=utf-8"),
        ("assets/marker.png", "application/octet-stream"),
    ],
)
def test_supporting_files_are_raw_and_never_html(client, published, path, content_type):
    response = client.get(f"/skills/pdf-forms/{path}")
    assert response.content == PDF[path]
    assert response["Content-Type"] == content_type
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "text/html" not in response["Content-Type"]
    if content_type == "application/octet-stream":
        assert response["Content-Disposition"] == 'attachment; filename="marker.png"'


def test_an_html_file_in_a_skill_is_served_as_plain_text(client, publisher):
    files = {**COMMIT, "page.html": b"<script>alert(1)</script>"}
    publisher.upload(client, make_zip(files))
    response = client.get("/skills/commit-messages/page.html")
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Security-Policy"] == "sandbox; default-src 'none'"


def test_etag_revalidation_answers_304(client, published):
    etag = client.get("/skills/pdf-forms/SKILL.md")["ETag"]
    response = client.get("/skills/pdf-forms/SKILL.md", HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 304
    assert response.content == b""
    assert response["ETag"] == etag
    assert client.get("/skills/pdf-forms/SKILL.md", HTTP_IF_NONE_MATCH='"nope"').status_code == 200


def test_head_works_everywhere(client, published):
    for path in [
        "/skills/pdf-forms/SKILL.md",
        "/skills/pdf-forms.zip",
        "/skills/index.json",
        "/skills/",
        "/skills/.well-known/agent-skills/index.json",
    ]:
        get, head = client.get(path), client.head(path)
        assert head.status_code == 200, path
        assert head.content == b""
        assert head["Content-Length"] == get["Content-Length"] == str(len(get.content))
        assert head.get("ETag") == get.get("ETag")


def test_the_zip_holds_one_top_folder_and_is_deterministic(client, published):
    first = client.get("/skills/pdf-forms.zip")
    assert first["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(first.content)).namelist()
    assert names == sorted(f"pdf-forms/{p}" for p in PDF)
    with zipfile.ZipFile(io.BytesIO(first.content)) as zf:
        for path, content in PDF.items():
            assert zf.read(f"pdf-forms/{path}") == content
            assert zf.getinfo(f"pdf-forms/{path}").date_time == (1980, 1, 1, 0, 0, 0)
    from skills import registry

    registry.clear_local()  # rebuilt from the blobs: the same bytes
    again = client.get("/skills/pdf-forms@1.zip")
    assert again.content == first.content
    assert first["ETag"] == f'"{hashlib.sha256(first.content).hexdigest()}"'


def test_pinned_versions_never_change_after_a_new_import(client, published):
    old_zip = client.get("/skills/pdf-forms@1.zip").content
    changed = {**PDF, "SKILL.md": PDF["SKILL.md"].replace(b"# Filling", b"# Now filling")}
    assert published.upload(client, make_zip(changed)).json()["skills"][0]["version"] == 2
    assert client.get("/skills/pdf-forms/SKILL.md").content == changed["SKILL.md"]
    assert client.get("/skills/pdf-forms@2/SKILL.md").content == changed["SKILL.md"]
    assert client.get("/skills/pdf-forms@1/SKILL.md").content == PDF["SKILL.md"]
    assert client.get("/skills/pdf-forms@1.zip").content == old_zip
    pinned = client.get("/skills/pdf-forms@1/SKILL.md")
    assert pinned["Cache-Control"] == "public, max-age=31536000, immutable"
    assert client.get("/skills/pdf-forms/SKILL.md")["Cache-Control"].startswith("public, max-age=0")
    assert client.get("/skills/pdf-forms@3/SKILL.md").status_code == 404


def test_a_private_skill_is_served_only_through_its_accounts_key(
    client, publisher, other_publisher
):
    publisher.upload(client, make_zip(COMMIT), query="?visibility=private")
    own = client.get(f"{publisher.root}commit-messages/SKILL.md")
    assert own.status_code == 200
    assert own.content == COMMIT["SKILL.md"]
    assert own["Cache-Control"] == "private, no-store"
    assert own["Referrer-Policy"] == "no-referrer"
    assert own["X-Robots-Tag"] == "noindex"
    assert "Access-Control-Allow-Origin" not in own
    public = client.get("/skills/commit-messages/SKILL.md")
    other = client.get(f"{other_publisher.root}commit-messages/SKILL.md")
    wrong = client.get(f"/skills/k/{'0' * 48}/commit-messages/SKILL.md")
    malformed = client.get("/skills/k/not-a-key/commit-messages/SKILL.md")
    missing = client.get(f"{publisher.root}no-such-skill/SKILL.md")
    for response in (public, other, wrong, malformed, missing):
        assert response.status_code == 404
        assert response.content == b"Not found\n"


def test_a_revoked_key_gets_the_same_404(client, publisher):
    publisher.upload(client, make_zip(COMMIT), query="?visibility=private")
    for _ in range(20):  # warm every cache on the way
        assert client.get(f"{publisher.root}commit-messages/SKILL.md").status_code == 200
        assert client.get(f"{publisher.root}index.json").status_code == 200
    publisher.key_row.revoke()
    for _ in range(20):
        response = client.get(f"{publisher.root}commit-messages/SKILL.md")
        assert response.status_code == 404
        assert response.content == b"Not found\n"
        assert client.get(f"{publisher.root}index.json").status_code == 404


def test_a_key_also_serves_public_skills(client, published, other_publisher):
    response = client.get(f"{other_publisher.root}pdf-forms/SKILL.md")
    assert response.status_code == 200
    assert response["Cache-Control"] == "private, no-store"


def test_reimporting_without_visibility_keeps_a_skill_private(client, publisher):
    publisher.upload(client, make_zip(COMMIT), query="?visibility=private")
    publisher.upload(client, make_zip(COMMIT))
    assert Skill.objects.get(name="commit-messages").visibility == "private"
    assert client.get("/skills/commit-messages/SKILL.md").status_code == 404


def test_the_skills_site_sets_no_cookies(client, admin_client, published):
    for c in (client, admin_client):
        for path in ["/skills/", "/skills/pdf-forms/", "/skills/pdf-forms/SKILL.md"]:
            response = c.get(path, HTTP_ACCEPT="text/html")
            assert not response.cookies, path
            assert "Set-Cookie" not in response


@override_settings(SKILLS_HOSTS=["skills.example.test"])
def test_a_skills_host_serves_the_site_at_its_root(published):
    client = Client(HTTP_HOST="skills.example.test")
    response = client.get("/pdf-forms/SKILL.md")
    assert response.content == PDF["SKILL.md"]
    index = client.get("/index.json").json()
    assert index["skills"][0]["url"] == "http://skills.example.test/pdf-forms/SKILL.md"
    assert client.get("/").content.startswith(b"# hepgg skills")
    assert not client.get("/").cookies


def test_a_hidden_version_is_not_served_and_unpinned_urls_fall_back(client, published):
    from skills.models import SkillVersion
    from skills.services import skill_version_update

    changed = {**PDF, "SKILL.md": PDF["SKILL.md"] + b"\nv2\n"}
    published.upload(client, make_zip(changed))
    v2 = SkillVersion.objects.get(skill__name="pdf-forms", number=2)
    skill_version_update(version=v2, hidden=True)
    assert client.get("/skills/pdf-forms@2/SKILL.md").status_code == 404
    assert client.get("/skills/pdf-forms/SKILL.md").content == PDF["SKILL.md"]
