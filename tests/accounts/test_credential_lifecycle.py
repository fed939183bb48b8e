"""Each credential's whole life: issue, use, rotate/disable/revoke, and the 401 after."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.credentials import resolve
from accounts.services import master_token_rotate, skills_key_issue
from accounts.tokens import Kind

pytestmark = pytest.mark.django_db


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def test_a_master_token_opens_the_account_until_it_is_rotated(client: Client, member) -> None:
    me = client.get("/me", **bearer(member.master_token))
    assert me.status_code == 200
    assert me.json()["email"] == "ada@example.com"

    _token, new_secret = master_token_rotate(account=member.account)

    old = client.get("/me", **bearer(member.master_token))
    assert old.status_code == 401
    assert old.json() == {"error": old.json()["error"]}
    assert client.get("/me", **bearer(new_secret)).status_code == 200


def test_rotation_leaves_exactly_one_active_master_token(member) -> None:
    master_token_rotate(account=member.account)
    master_token_rotate(account=member.account)
    assert member.account.master_tokens.count() == 3
    assert member.account.master_tokens.active().count() == 1


def test_an_api_key_is_minted_listed_and_disabled(client: Client, member, catalog_model) -> None:
    minted = client.post(
        "/keys",
        {"model": "cf-gpt-oss-20b", "name": "ci"},
        content_type="application/json",
        **bearer(member.master_token),
    )
    assert minted.status_code == 201
    body = minted.json()
    assert set(body) >= {"id", "key", "model", "name", "prefix", "created_at"}
    assert body["key"].startswith("sk-hyd-") and len(body["key"]) >= 7 + 43
    assert body["key"].startswith(body["prefix"]) and body["model"] == "cf-gpt-oss-20b"
    assert resolve(body["key"], Kind.API_KEY).model_slug == "cf-gpt-oss-20b"

    listed = client.get("/keys", **bearer(member.master_token)).json()["data"]
    assert [k["id"] for k in listed] == [body["id"]]
    assert listed[0]["active"] is True
    assert "key" not in listed[0] and body["key"] not in str(listed)

    deleted = client.delete(f"/keys/{body['id']}", **bearer(member.master_token))
    assert deleted.status_code == 204
    assert resolve(body["key"], Kind.API_KEY) is None  # the cached identity went at once
    assert client.get("/keys", **bearer(member.master_token)).json()["data"][0]["active"] is False


def test_minting_for_an_unknown_or_disabled_model_is_a_400(client: Client, member, catalog_model):
    unknown = client.post(
        "/keys", {"model": "gpt-9"}, content_type="application/json", **bearer(member.master_token)
    )
    assert unknown.status_code == 400
    assert "gpt-9" in unknown.json()["error"]

    catalog_model.enabled = False
    catalog_model.save()
    disabled = client.post(
        "/keys",
        {"model": "cf-gpt-oss-20b"},
        content_type="application/json",
        **bearer(member.master_token),
    )
    assert disabled.status_code == 400


def test_a_machine_registers_and_its_proxy_token_dies_with_revocation(client: Client, member):
    registered = client.post(
        "/sync/machines",
        {"hostname": "box", "platform": "linux", "ccas_version": "0.1.0"},
        content_type="application/json",
        **bearer(member.master_token),
    )
    assert registered.status_code == 201
    body = registered.json()
    assert body["proxy_token"].startswith("pt_")
    assert body["base_url"] == f"http://127.0.0.1:8000/anthropic/{body['proxy_token']}"
    assert resolve(body["proxy_token"], Kind.PROXY).account_id == member.account.id

    listed = client.get("/sync/machines", **bearer(member.master_token)).json()["data"]
    assert listed[0]["hostname"] == "box" and body["proxy_token"] not in str(listed)

    assert (
        client.delete(f"/sync/machines/{body['id']}", **bearer(member.master_token)).status_code
        == 204
    )
    assert resolve(body["proxy_token"], Kind.PROXY) is None


def test_a_skills_access_key_resolves_until_revoked(member) -> None:
    key, secret = skills_key_issue(account=member.account)
    assert len(secret) == 48 and secret == secret.lower()
    assert resolve(secret, Kind.SKILLS).account_id == member.account.id
    key.revoke()
    assert resolve(secret, Kind.SKILLS) is None


def test_one_account_cannot_see_or_touch_anothers_keys(client, member, other_member, catalog_model):
    minted = client.post(
        "/keys",
        {"model": "cf-gpt-oss-20b"},
        content_type="application/json",
        **bearer(member.master_token),
    ).json()
    assert client.get("/keys", **bearer(other_member.master_token)).json()["data"] == []
    stolen = client.delete(f"/keys/{minted['id']}", **bearer(other_member.master_token))
    assert stolen.status_code == 404
    assert resolve(minted["key"], Kind.API_KEY) is not None


def test_a_warm_cache_resolves_without_a_query(member, django_assert_num_queries) -> None:
    with django_assert_num_queries(1):
        resolve(member.master_token, Kind.MASTER)
    with django_assert_num_queries(0):
        assert resolve(member.master_token, Kind.MASTER).account_id == member.account.id
