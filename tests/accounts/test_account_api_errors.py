"""The account API's 401s, wrong-credential hints and bad-input errors."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.services import api_key_mint, machine_register, skills_key_issue

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    ("get", "/me"),
    ("get", "/keys"),
    ("post", "/keys"),
    ("get", "/sync/machines"),
    ("post", "/sync/machines"),
    ("get", "/usage"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_no_credential_is_a_401_that_names_the_master_token(client: Client, method, path):
    response = getattr(client, method)(path)
    assert response.status_code == 401
    assert response.json() == {"error": "Missing master token: send Authorization: Bearer hyd_…"}
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Basic abc", "Bearer hyd_short", "Bearer hyd_" + "x" * 43, "Token hyd_abc"],
)
def test_malformed_or_unknown_master_tokens_are_401(client: Client, header: str) -> None:
    response = client.get("/me", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert set(response.json()) == {"error"}


def test_wrong_credential_types_get_a_hint_and_never_an_echo(client, member, catalog_model):
    _key, api_key = api_key_mint(account=member.account, model="cf-gpt-oss-20b")
    _machine, proxy_token = machine_register(account=member.account, hostname="box")
    _skills, skills_key = skills_key_issue(account=member.account)
    for secret, sent in [
        (api_key, "an API key (sk-hyd-…)"),
        (proxy_token, "a proxy token (pt_…)"),
        (skills_key, "a skills access key (48 hex characters)"),
    ]:
        response = client.get("/me", HTTP_AUTHORIZATION=f"Bearer {secret}")
        assert response.status_code == 401
        message = response.json()["error"]
        assert message == f"This endpoint expects a master token (hyd_…), but {sent} was sent."
        assert secret not in response.content.decode()


def test_malformed_json_is_a_400_in_the_account_shape(client: Client, member) -> None:
    response = client.post("/keys", "{not json", content_type="application/json", **member.auth)
    assert response.status_code == 400
    assert response.json()["error"].startswith("Malformed JSON body")


def test_a_missing_field_is_a_400_naming_it(client: Client, member) -> None:
    response = client.post("/sync/machines", {}, content_type="application/json", **member.auth)
    assert response.status_code == 400
    assert response.json()["error"].startswith("hostname:")


def test_an_oversized_body_is_a_413(client: Client, member) -> None:
    big = '{"model": "' + "x" * (2 * 1024 * 1024) + '"}'
    response = client.post("/keys", big, content_type="application/json", **member.auth)
    assert response.status_code == 413
    assert "too large" in response.json()["error"]


def test_deleting_an_unknown_key_is_a_404(client: Client, member) -> None:
    response = client.delete("/keys/00000000-0000-0000-0000-000000000000", **member.auth)
    assert response.status_code == 404
    assert response.json() == {"error": "No such API key."}


def test_me_reports_counts_and_recent_usage(client: Client, member, catalog_model) -> None:
    api_key_mint(account=member.account, model="cf-gpt-oss-20b")
    key, _ = api_key_mint(account=member.account, model="cf-gpt-oss-20b")
    key.disable()
    machine_register(account=member.account, hostname="box")
    me = client.get("/me", **member.auth).json()
    assert me["id"] == str(member.account.public_id)
    assert (me["active_keys"], me["active_machines"]) == (1, 1)
    assert me["usage_30d"]["requests"] == 0
