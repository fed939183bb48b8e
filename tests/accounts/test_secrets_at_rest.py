"""No secret is ever stored in plaintext: read every row of every table and look for them."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client

from accounts.services import api_key_mint, machine_register, master_token_rotate, skills_key_issue
from accounts.tokens import hash_secret

pytestmark = pytest.mark.django_db


def every_stored_value() -> str:
    chunks: list[str] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            chunks.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(chunks)


def test_no_issued_secret_is_stored_only_its_hash(member, catalog_model, admin_client: Client):
    secrets = [member.master_token]
    secrets.append(master_token_rotate(account=member.account)[1])
    secrets.append(api_key_mint(account=member.account, model="cf-gpt-oss-20b")[1])
    secrets.append(machine_register(account=member.account, hostname="box")[1])
    secrets.append(skills_key_issue(account=member.account)[1])
    # And through the dashboard, which must not keep what it shows.
    page = admin_client.post(
        f"/admin/accounts/account/{member.account.pk}/mint-api-key/",
        {"model": "cf-gpt-oss-20b", "name": "web"},
    )
    shown = page.context["secret"]
    secrets.append(shown)

    stored = every_stored_value()
    for secret in secrets:
        assert secret not in stored
        assert secret[-20:] not in stored
        assert hash_secret(secret) in stored
