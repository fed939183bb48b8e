"""The issuing dashboard: every new secret is shown once, on one page, and never again."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from accounts.credentials import resolve
from accounts.models import Account
from accounts.services import api_key_mint
from accounts.tokens import Kind

pytestmark = pytest.mark.django_db


def shown_secret(html: str) -> str:
    match = re.search(r'<code class="secret" id="secret">([^<]+)</code>', html)
    assert match, "the page shows no secret"
    return match.group(1)


def test_creating_an_account_shows_its_master_token_once_with_a_quickstart(
    admin_client: Client, catalog_model
) -> None:
    page = admin_client.post("/admin/accounts/account/add/", {"email": "new@example.com"})
    assert page.status_code == 200
    html = page.content.decode()
    token = shown_secret(html)
    assert token.startswith("hyd_")
    assert "This is the only time this master token is shown" in html
    assert 'base_url="http://127.0.0.1:8000/v1"' in html  # quickstart uses GATEWAY_PUBLIC_URL
    assert f"Authorization: Bearer {token}" in html
    assert "no-store" in page["Cache-Control"]
    account = Account.objects.get(email="new@example.com")
    assert resolve(token, Kind.MASTER).account_id == account.id

    # Reloading the account (or any admin page) never shows it again.
    for url in [
        "/admin/accounts/account/",
        f"/admin/accounts/account/{account.pk}/change/",
        "/admin/accounts/apikey/",
    ]:
        assert token not in admin_client.get(url).content.decode()


def test_rotating_from_the_dashboard_kills_the_old_token(admin_client: Client, member) -> None:
    url = f"/admin/accounts/account/{member.account.pk}/rotate-master-token/"
    assert "Rotate" in admin_client.get(url).content.decode()  # a confirmation page first
    new = shown_secret(admin_client.post(url).content.decode())
    assert resolve(member.master_token, Kind.MASTER) is None
    assert resolve(new, Kind.MASTER).account_id == member.account.id
    assert new not in admin_client.get(url).content.decode()


def test_minting_an_api_key_for_a_chosen_model(admin_client: Client, member, catalog_model):
    url = f"/admin/accounts/account/{member.account.pk}/mint-api-key/"
    key = shown_secret(
        admin_client.post(url, {"model": "cf-gpt-oss-20b", "name": "ci"}).content.decode()
    )
    assert resolve(key, Kind.API_KEY).model_slug == "cf-gpt-oss-20b"
    change = admin_client.get(
        f"/admin/accounts/account/{member.account.pk}/change/"
    ).content.decode()
    assert key[:13] in change and key not in change  # the prefix, never the key


def test_issuing_a_skills_key_shows_its_capability_url(admin_client: Client, member) -> None:
    url = f"/admin/accounts/account/{member.account.pk}/issue-skills-key/"
    html = admin_client.post(url, {"name": "laptop"}).content.decode()
    key = shown_secret(html)
    assert re.fullmatch(r"[0-9a-f]{48}", key)
    assert f"/skills/k/{key}/" in html


def test_disabling_keys_from_the_list_takes_effect_at_once(admin_client, member, catalog_model):
    key, secret = api_key_mint(account=member.account, model="cf-gpt-oss-20b")
    assert resolve(secret, Kind.API_KEY) is not None  # warm the cache
    response = admin_client.post(
        "/admin/accounts/apikey/",
        {"action": "disable_keys", "_selected_action": [key.pk]},
        follow=True,
    )
    assert "Disabled 1 API key" in response.content.decode()
    assert resolve(secret, Kind.API_KEY) is None


def test_revoking_a_machine_from_the_list(admin_client: Client, member) -> None:
    from accounts.services import machine_register

    machine, token = machine_register(account=member.account, hostname="box")
    admin_client.post(
        "/admin/accounts/machine/", {"action": "revoke_machines", "_selected_action": [machine.pk]}
    )
    assert resolve(token, Kind.PROXY) is None


def test_the_admin_pages_render(admin_client: Client, member, catalog_model) -> None:
    for url in [
        "/admin/",
        "/admin/accounts/account/",
        "/admin/accounts/apikey/",
        "/admin/accounts/machine/",
        "/admin/accounts/skillsaccesskey/",
        "/admin/catalog/catalogmodel/",
        f"/admin/accounts/account/{member.account.pk}/change/",
    ]:
        assert admin_client.get(url).status_code == 200, url
