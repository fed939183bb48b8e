"""The issuing dashboard in a real browser: create an account, copy its token once."""

from __future__ import annotations

import asyncio

from django.contrib.auth import get_user_model
from django.test import Client

from accounts.credentials import resolve
from accounts.tokens import Kind
from tests.browser import Browser


def test_an_operator_creates_an_account_and_copies_the_token_once(hepgg_server) -> None:
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-12345678")
    client = Client()
    client.force_login(admin)
    session = client.cookies["sessionid"].value
    server = hepgg_server()

    async def operate() -> tuple[str, str, str, str]:
        async with Browser() as browser:
            page = await browser.page()
            await page.call(
                "Network.setCookie", name="sessionid", value=session, url=server.base_url
            )
            await page.call(
                "Browser.grantPermissions",
                origin=server.base_url,
                permissions=["clipboardReadWrite", "clipboardSanitizedWrite"],
            )
            await page.goto(f"{server.base_url}/admin/accounts/account/add/")
            await page.js("document.querySelector('#id_email').value = 'new@example.com'")
            await page.js("document.querySelector('#issue-form').submit()")
            await page.wait_for("document.querySelector('#secret') !== null")
            secret = await page.js("document.querySelector('#secret').textContent")
            warning = await page.js("document.querySelector('.secret-once p').textContent")
            await page.js("document.querySelector('#copy-secret').click()")
            await page.wait_for("document.querySelector('#copy-secret').textContent === 'Copied'")
            copied = await page.js("navigator.clipboard.readText()")
            await page.goto(f"{server.base_url}/admin/accounts/account/")
            listing = await page.js("document.body.innerText")
            return secret, warning, copied, listing

    secret, warning, copied, listing = asyncio.run(operate())
    assert secret.startswith("hyd_")
    assert "only time this master token is shown" in warning
    assert copied == secret
    assert "new@example.com" in listing and secret not in listing
    assert resolve(secret, Kind.MASTER) is not None
