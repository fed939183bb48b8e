"""Markup in a skill never runs on the site: sanitized by nh3, then checked in a real browser."""

from __future__ import annotations

import re
import subprocess

from skills.rendering import skill_md_html
from skills.services import skills_import
from tests.browser import chromium_path
from tests.skills.conftest import make_zip, skill_files

HOSTILE = skill_files("hostile-page")


def test_the_sanitizer_makes_hostile_markup_inert():
    html = skill_md_html(HOSTILE["SKILL.md"].decode())
    lowered = html.lower()
    for needle in [
        "<script",
        "onerror",
        "onmouseover",
        "onfocus",
        "javascript:",
        "<iframe",
        "<svg",
        "<form",
        "<input",
        "style=",
    ]:
        assert needle not in lowered, needle
    assert "<strong>bold</strong>" in html


def test_the_skill_page_serves_only_sanitized_html_under_a_no_script_csp(client, publisher):
    publisher.upload(client, make_zip(HOSTILE))
    response = client.get("/skills/hostile-page/", HTTP_ACCEPT="text/html")
    body = response.content.decode().lower()
    assert "<script" not in body and "onerror" not in body and "javascript:" not in body
    assert "script-src" not in response["Content-Security-Policy"]
    assert "default-src 'none'" in response["Content-Security-Policy"]


def test_a_headless_browser_runs_nothing_from_a_hostile_skill(hepgg_server, member, tmp_path):
    chromium = chromium_path()  # fails in CI when missing, skips elsewhere
    skills_import(account=member.account, files=HOSTILE)
    server = hepgg_server()
    url = f"{server.base_url}/skills/hostile-page/"
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=3000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    dom = result.stdout
    assert "Normal <strong>bold</strong> text stays." in dom, (result.stderr[-2000:], dom[:2000])
    assert _title(dom).startswith("hostile-page")  # no script renamed the page
    assert "data-pwned" not in dom
    assert "onerror" not in dom.lower()
    assert "<script" not in dom.lower()


def _title(dom: str) -> str:
    match = re.search(r"<title>(.*?)</title>", dom, re.S)
    return match.group(1) if match else ""
