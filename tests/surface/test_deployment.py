"""Production settings: ``check --deploy`` is clean with the README's, every URL hepgg hands out
is https behind a TLS-terminating proxy, HSTS and secure cookies, a strict CSP on the admin's
one-time secret pages, and capability URLs on the skills host."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.core.management import call_command
from django.test import Client, override_settings

from accounts.services import skills_key_issue
from skills.services import skills_import
from tests.conftest import Member
from tests.servers import ROOT, ServerProcess

README = Path(ROOT, "README.md").read_text()


def readme_production_env() -> dict[str, str]:
    """The variables the README's production section exports (``…`` filled in)."""
    section = README.split("## Production", 1)[1].split("\n## ", 1)[0]
    env: dict[str, str] = {}
    for line in section.splitlines():
        if line.startswith("export "):
            for pair in line.removeprefix("export ").split("#", 1)[0].split():
                name, _, value = pair.partition("=")
                env[name] = secrets.token_urlsafe(50) if value == "…" else value
    return env


def check_deploy(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in __import__("os").environ.items() if not k.startswith("SECURE_")}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**clean, "HEPGG_DATA_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_is_clean_with_the_readmes_production_settings(tmp_path: Path) -> None:
    env = readme_production_env()
    assert env["DEBUG"] == "false" and env["SECURE_PROXY_SSL_HEADER"]
    run = check_deploy(env, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no issues" in run.stdout


def test_check_deploy_warns_without_the_proxy_ssl_header(tmp_path: Path) -> None:
    env = {k: v for k, v in readme_production_env().items() if k != "SECURE_PROXY_SSL_HEADER"}
    run = check_deploy(env, tmp_path)
    assert run.returncode != 0 and "security.W008" in run.stdout + run.stderr


@pytest.fixture
def behind_tls_proxy(hepgg_server, member: Member) -> ServerProcess:
    skills_import(
        account=member.account,
        files={"SKILL.md": b"---\nname: tls-check\ndescription: d\n---\n"},
        visibility="public",
    )
    return hepgg_server(
        env={
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "*",
            "GATEWAY_PUBLIC_URL": "https://ai.test",
            "SKILLS_HOSTS": "skills.test",
            "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
        }
    )


def test_behind_a_tls_proxy_every_url_handed_out_is_https(
    behind_tls_proxy: ServerProcess, member: Member
) -> None:
    https = {"x-forwarded-proto": "https"}
    with httpx.Client(base_url=behind_tls_proxy.base_url, timeout=10) as http:
        for host, path in [("ai.test", "/skills/index.json"), ("skills.test", "/index.json")]:
            index = http.get(path, headers={**https, "host": host})
            assert index.status_code == 200, index.text
            urls = re.findall(r'"url": ?"([^"]+)"', index.text)
            assert urls and all(u.startswith("https://") for u in urls), urls
            assert index.headers["strict-transport-security"].startswith("max-age=31536000")
        for host, path in [
            ("ai.test", "/skills/llms.txt"),
            ("skills.test", "/.well-known/skills/index.json"),
        ]:
            body = http.get(path, headers={**https, "host": host}).text
            assert "http://" not in body, body[:500]
        machine = http.post(
            "/sync/machines",
            json={"hostname": "laptop"},
            headers={**https, "authorization": f"Bearer {member.master_token}"},
        )
        assert machine.json()["base_url"].startswith("https://ai.test/anthropic/pt_")
        login = http.get("/admin/login/", headers=https)
        assert login.status_code == 200
        assert "secure" in login.headers["set-cookie"].lower()
        # Plain http is sent to https, except the load balancer's probes.
        plain = http.get("/admin/login/", headers={"host": "ai.test"})
        assert plain.status_code == 301 and plain.headers["location"].startswith("https://")
        assert http.get("/healthz").status_code == 200


def test_the_one_time_secret_page_has_a_strict_content_security_policy(
    admin_client: Client, member: Member
) -> None:
    page = admin_client.post(
        f"/admin/accounts/account/{member.account.pk}/issue-skills-key/", {"name": "csp"}
    )
    policy = page["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy).group(1)
    assert "default-src 'none'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy and "connect-src 'self'" in policy
    html = page.content.decode()
    inline = re.findall(r"<(script|style)(\s[^>]*)?>(?!\s*</)", html)
    assert inline, "the page has inline script and style"
    for tag, attributes in inline:
        if "src=" not in (attributes or ""):
            assert f'nonce="{nonce}"' in (attributes or ""), f"<{tag}{attributes}> has no nonce"
    assert "no-store" in page["Cache-Control"]


@override_settings(GATEWAY_PUBLIC_URL="https://ai.test", SKILLS_HOSTS=["skills.test"])
def test_capability_urls_point_at_the_skills_host_when_there_is_one(
    admin_client: Client, member: Member, capsys: pytest.CaptureFixture[str]
) -> None:
    html = admin_client.post(
        f"/admin/accounts/account/{member.account.pk}/issue-skills-key/", {"name": "host"}
    ).content.decode()
    assert re.search(r"https://skills\.test/k/[0-9a-f]{48}/", html), html
    assert "ai.test/skills/k/" not in html
    call_command("issue_skills_key", member.account.email)
    assert re.search(
        r"Capability URL: https://skills\.test/k/[0-9a-f]{48}/", capsys.readouterr().out
    )


@pytest.mark.django_db
def test_capability_urls_stay_under_skills_without_a_skills_host(member: Member) -> None:
    from hepgg.lib.sites import capability_url

    _, key = skills_key_issue(account=member.account)
    assert capability_url(key) == f"http://127.0.0.1:8000/skills/k/{key}/"
