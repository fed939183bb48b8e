"""No secret reaches a log line: not the server's access log, not Django's request log."""

from __future__ import annotations

import logging
import time

import httpx

from accounts.services import account_create, machine_register, skills_key_issue
from hepgg.lib.redaction import RedactSecretsFilter, redact


def test_the_server_logs_show_only_prefixes(hepgg_server) -> None:
    account, master = account_create(email="ada@example.com")
    _machine, proxy_token = machine_register(account=account, hostname="box")
    _key, skills_key = skills_key_issue(account=account)
    server = hepgg_server(env={"LOG_LEVEL": "DEBUG"})

    with httpx.Client(base_url=server.base_url) as http:
        http.get("/me", headers={"Authorization": f"Bearer {master}"})
        http.get("/me", headers={"Authorization": f"Bearer {proxy_token}"})  # wrong type: 401
        http.get(f"/anthropic/{proxy_token}/v1/models", headers={"x-api-key": "sk-ant-secret-1"})
        http.get(f"/skills/k/{skills_key}/index.json")
        http.get(f"/nowhere/{master}")  # a 404 that Django logs with its path
    time.sleep(0.5)
    server.stop()
    logs = server.logs()

    assert "/me" in logs  # the access log is on
    assert proxy_token[:9] + "…" in logs
    for secret in (master, proxy_token, skills_key, "sk-ant-secret-1"):
        assert secret not in logs


def test_the_filter_masks_headers_and_tracebacks(caplog) -> None:
    logger = logging.getLogger("hepgg.test")
    logger.addFilter(RedactSecretsFilter())
    token = "hyd_" + "A" * 43
    try:
        raise ValueError(f"bad token {token}")
    except ValueError:
        logger.exception("request failed: %s", {"Authorization": f"Bearer {token}"})
    text = caplog.text
    assert token not in text and "hyd_AAAAAA…" in text
    assert redact("x-api-key: sk-ant-api03-abcdef") == "x-api-key: sk-ant…"
