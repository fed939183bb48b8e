"""The indexes (markdown, index.json, both discovery indexes) agree with what is stored."""

from __future__ import annotations

import hashlib
import io
import zipfile
from urllib.parse import urljoin

import pytest

from skills.models import SkillVersion
from tests.skills.conftest import make_zip, skill_files

PDF = skill_files("pdf-forms")
COMMIT = skill_files("commit-messages")


@pytest.fixture
def catalog(client, publisher):
    publisher.upload(client, make_zip(PDF))
    publisher.upload(client, make_zip(COMMIT), query="?visibility=private")
    return publisher


def test_index_json_lists_public_skills_with_their_stored_digests(client, catalog):
    index = client.get("/skills/index.json").json()
    assert [s["name"] for s in index["skills"]] == ["pdf-forms"]
    (entry,) = index["skills"]
    version = SkillVersion.objects.get(skill__name="pdf-forms")
    assert entry["version"] == version.number
    assert entry["digest"] == f"sha256:{version.digest}"
    assert entry["url"] == "http://testserver/skills/pdf-forms/SKILL.md"
    assert entry["updated_at"]
    assert {f["path"]: (f["size"], f["sha256"]) for f in entry["files"]} == {
        path: (len(content), hashlib.sha256(content).hexdigest()) for path, content in PDF.items()
    }
    manifest = "".join(f"{hashlib.sha256(PDF[p]).hexdigest()}  {p}\n" for p in sorted(PDF)).encode()
    assert version.digest == hashlib.sha256(manifest).hexdigest()


def test_a_key_adds_its_private_skills_to_every_index(client, catalog, other_publisher):
    names = lambda root, path: [s["name"] for s in client.get(f"{root}{path}").json()["skills"]]  # noqa: E731
    for path in [
        "index.json",
        ".well-known/skills/index.json",
        ".well-known/agent-skills/index.json",
    ]:
        assert names(catalog.root, path) == ["commit-messages", "pdf-forms"]
        assert names(other_publisher.root, path) == ["pdf-forms"]
        assert names("/skills/", path) == ["pdf-forms"]


def test_the_agent_skills_index_digests_match_the_served_artifacts(client, catalog):
    index_url = f"{catalog.root}.well-known/agent-skills/index.json"
    index = client.get(index_url).json()
    assert index["$schema"] == "https://schemas.agentskills.io/discovery/0.2.0/schema.json"
    entries = {entry["name"]: entry for entry in index["skills"]}
    # A multi-file skill is a zip with its files at the archive root.
    archive = entries["pdf-forms"]
    assert archive["type"] == "archive"
    body = client.get(urljoin(index_url, archive["url"])).content
    assert archive["digest"] == f"sha256:{hashlib.sha256(body).hexdigest()}"
    version = SkillVersion.objects.get(skill__name="pdf-forms")
    assert archive["digest"] == f"sha256:{version.archive_sha256}"
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert sorted(zf.namelist()) == sorted(PDF)
        assert all(zf.read(p) == c for p, c in PDF.items())
    # A skill that is only a SKILL.md is a skill-md entry.
    single = entries["commit-messages"]
    assert single["type"] == "skill-md"
    body = client.get(urljoin(index_url, single["url"])).content
    assert body == COMMIT["SKILL.md"]
    assert single["digest"] == f"sha256:{hashlib.sha256(body).hexdigest()}"


def test_the_legacy_index_lists_plain_paths_served_beside_it(client, catalog):
    index = client.get("/skills/.well-known/skills/index.json").json()
    (entry,) = index["skills"]
    assert entry["files"] == sorted(PDF)
    assert all(isinstance(path, str) for path in entry["files"])
    for path in entry["files"]:
        for space in ("skills", "agent-skills"):
            response = client.get(f"/skills/.well-known/{space}/pdf-forms/{path}")
            assert response.content == PDF[path]


def test_the_index_is_markdown_for_agents_and_html_for_browsers(client, catalog):
    for path in ["/skills/", "/skills/llms.txt"]:
        response = client.get(path, HTTP_ACCEPT="*/*")
        assert response["Content-Type"] == "text/markdown; charset=utf-8"
        text = response.content.decode()
        assert "[pdf-forms](http://testserver/skills/pdf-forms/SKILL.md)" in text
        assert "~/.claude/skills/" in text and "npx skills add http://testserver/skills/" in text
        assert "commit-messages" not in text
    html = client.get("/skills/", HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")
    assert html["Content-Type"].startswith("text/html")
    assert b"pdf-forms" in html.content


def test_the_html_index_searches_names_and_descriptions(client, catalog):
    accept = {"HTTP_ACCEPT": "text/html"}
    assert b"pdf-forms" in client.get("/skills/?q=flatten", **accept).content
    assert b"pdf-forms" not in client.get("/skills/?q=zebra", **accept).content


def test_the_skill_page_shows_what_people_need(client, catalog):
    page = client.get("/skills/pdf-forms/", HTTP_ACCEPT="text/html").content.decode()
    version = SkillVersion.objects.get(skill__name="pdf-forms")
    assert "<h1>Filling PDF forms</h1>" in page
    assert f"sha256:{version.digest}" in page
    assert "Apache-2.0" in page
    assert "curl -fsSL http://testserver/skills/pdf-forms.zip -o s.zip" in page
    assert "npx skills add http://testserver/skills/ --skill pdf-forms" in page
    for path in PDF:
        assert f"/skills/pdf-forms@1/{path}" in page
