"""A catalog entry names the environment variable that holds its upstream's key; only names with
the documented prefix ``HEPGG_UPSTREAM_KEY_`` may be named, so that no other secret of the
process (``SECRET_KEY``, ``DATABASE_URL``) can be sent to a host an admin picks."""

from __future__ import annotations

import httpx
import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from accounts.services import api_key_mint
from catalog.models import CatalogModel
from tests.llm_gateway.conftest import MESSAGES, sdk
from tests.llm_gateway.fake_upstream import OPENAI_KEY, FakeUpstream

LEAKY_NAMES = ["SECRET_KEY", "DATABASE_URL", "HEPGG_UPSTREAM_KEY_", "hepgg_upstream_key_x", "PATH"]


def local_model(fake: FakeUpstream, api_key_env: str) -> CatalogModel:
    return CatalogModel(
        slug="local-llama",
        provider="openai_compatible",
        upstream_model="llama-3.1-8b-instruct",
        base_url=f"{fake.url}/v1",
        api_key_env=api_key_env,
    )


@pytest.mark.parametrize("name", LEAKY_NAMES)
def test_an_entry_naming_a_variable_without_the_prefix_is_refused_when_saved(
    db: None, fake: FakeUpstream, name: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        local_model(fake, name).full_clean()

    assert "HEPGG_UPSTREAM_KEY_" in str(caught.value.message_dict["api_key_env"])


def test_an_entry_naming_a_prefixed_variable_is_accepted(db: None, fake: FakeUpstream) -> None:
    local_model(fake, "HEPGG_UPSTREAM_KEY_LOCAL_LLAMA").full_clean()
    local_model(fake, "").full_clean()  # a server without a key


def test_the_admin_form_shows_the_error_and_saves_nothing(
    admin_client: Client, fake: FakeUpstream
) -> None:
    response = admin_client.post(
        "/admin/catalog/catalogmodel/add/",
        {
            "slug": "local-llama",
            "provider": "openai_compatible",
            "upstream_model": "llama-3.1-8b-instruct",
            "enabled": "on",
            "base_url": f"{fake.url}/v1",
            "api_key_env": "SECRET_KEY",
            "input_price_per_mtok": "0",
            "output_price_per_mtok": "0",
            "cache_read_price_per_mtok": "0",
            "cache_write_price_per_mtok": "0",
        },
    )

    assert response.status_code == 200  # the form again, with its error
    assert "HEPGG_UPSTREAM_KEY_" in response.content.decode()
    assert not CatalogModel.objects.filter(slug="local-llama").exists()


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_a_row_written_around_the_form_sends_no_secret_upstream(
    start_gateway, member, fake: FakeUpstream, server: str
) -> None:
    local_model(fake, "SECRET_KEY").save()  # save() does not validate: as a script or a fixture
    _, key = api_key_mint(account=member.account, model="local-llama")
    gateway = start_gateway(server=server, SECRET_KEY="the-process-secret-key")

    response = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "local-llama", "messages": MESSAGES},
        timeout=20,
    )

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "provider_not_configured"
    assert "HEPGG_UPSTREAM_KEY_" in response.json()["error"]["message"]
    assert "the-process-secret-key" not in response.text
    assert fake.requests == []  # nothing went upstream, the secret least of all


def test_a_prefixed_variable_still_reaches_the_upstream(
    start_gateway, member, fake: FakeUpstream
) -> None:
    local_model(fake, "HEPGG_UPSTREAM_KEY_FAKE_OPENAI").save()
    _, key = api_key_mint(account=member.account, model="local-llama")
    gateway = start_gateway()

    with sdk(gateway, key) as client:
        client.chat.completions.create(model="local-llama", messages=MESSAGES)

    assert fake.last.headers["Authorization"] == f"Bearer {OPENAI_KEY}"
