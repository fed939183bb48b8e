"""Text the skills site writes: sanitized HTML of a SKILL.md, the markdown index, the JSON indexes.

User content reaches HTML only through ``skill_md_html``: markdown-it renders it (raw HTML
allowed, as on GitHub) and nh3 (ammonia) keeps a small allow-list of tags and attributes, so a
``<script>``, an ``onerror`` or a ``javascript:`` link comes out inert. The page's CSP forbids
scripts as a second line of defence.
"""

from __future__ import annotations

from typing import Any

import nh3
from markdown_it import MarkdownIt

from skills.bundle import split_frontmatter

DISCOVERY_SCHEMA = "https://schemas.agentskills.io/discovery/0.2.0/schema.json"

_markdown = (
    MarkdownIt("commonmark", {"html": True, "linkify": False})
    .enable("table")
    .enable("strikethrough")
)


def sanitize_html(html: str) -> str:
    return nh3.clean(
        html,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow ugc",
        strip_comments=True,
    )


def skill_md_html(text: str) -> str:
    """The body of a SKILL.md (frontmatter removed) as sanitized HTML."""
    parts = split_frontmatter(text)
    body = parts[1] if parts else text
    return sanitize_html(_markdown.render(body))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def index_markdown(*, site_url: str, entries: list[dict[str, Any]], private: bool) -> str:
    """The markdown index served at ``/`` and ``/llms.txt``: what is here and how to install it."""
    lines = [
        "# hepgg skills",
        "",
        "> Agent Skills (folders with a SKILL.md) to install into Claude Code or any agent that "
        "reads the open Agent Skills format.",
        "",
        "## Install",
        "",
        "- Claude Code: `curl -fsSL "
        f"{site_url}<name>.zip -o s.zip && unzip s.zip -d ~/.claude/skills/`",
        f"- Any agent, with the `skills` CLI: `npx skills add {site_url}`",
        f"- Read one directly: `{site_url}<name>/SKILL.md`",
        f"- Machine-readable: [{site_url}index.json]({site_url}index.json), "
        f"[agent-skills discovery]({site_url}.well-known/agent-skills/index.json)",
        "",
        "## Skills" + (" (public, and this key's private ones)" if private else ""),
        "",
    ]
    if not entries:
        lines.append("No skills yet.")
    for entry in entries:
        lines.append(
            f"- [{entry['name']}]({site_url}{entry['name']}/SKILL.md): "
            f"{_one_line(entry['description'])}"
        )
    return "\n".join(lines) + "\n"


def index_json(*, site_url: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "skills": [
            {
                "name": entry["name"],
                "description": entry["description"],
                "version": entry["version"],
                "updated_at": entry["updated_at"],
                "url": f"{site_url}{entry['name']}/SKILL.md",
                "zip": f"{site_url}{entry['name']}@{entry['version']}.zip",
                "digest": f"sha256:{entry['digest']}",
                "files": [
                    {"path": path, "size": size, "sha256": sha}
                    for path, size, sha, _is_text in entry["files"]
                ],
            }
            for entry in entries
        ]
    }


def _legacy_path_ok(path: str) -> bool:
    # The `skills` CLI drops the whole legacy index if any path contains "..", even "a..b".
    return ".." not in path


def legacy_index(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """``/.well-known/skills/index.json``: names, descriptions and plain path strings.

    Files are served beside it under ``.well-known/skills/<name>/<path>``.
    """
    return {
        "skills": [
            {
                "name": entry["name"],
                "description": entry["description"],
                "files": [path for path, *_ in entry["files"] if _legacy_path_ok(path)],
            }
            for entry in entries
        ]
    }


def discovery_index(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """``/.well-known/agent-skills/index.json``, Agent Skills Discovery v0.2.0.

    A skill that is only a SKILL.md is a ``skill-md`` entry; any other is an ``archive`` (a zip
    holding the files at its root). URLs are relative to the index and pinned to the version,
    so the digest always matches the bytes even while a new version is being imported.
    """
    skills = []
    for entry in entries:
        pinned = f"{entry['name']}@{entry['version']}"
        if len(entry["files"]) == 1:
            ((_path, _size, sha, _is_text),) = entry["files"]
            kind, url, digest = "skill-md", f"{pinned}/SKILL.md", sha
        else:
            kind, url, digest = "archive", f"{pinned}.zip", entry["archive_sha256"]
        skills.append(
            {
                "name": entry["name"],
                "type": kind,
                "description": entry["description"],
                "url": url,
                "digest": f"sha256:{digest}",
            }
        )
    return {"$schema": DISCOVERY_SCHEMA, "skills": skills}
