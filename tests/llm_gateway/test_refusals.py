"""Every refusal of the contract, with its exact body: bad keys, wrong models, bad requests, too
large bodies, an unconfigured provider. None of them reaches the provider."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from accounts.services import machine_register
from catalog.models import CatalogModel
from tests.llm_gateway.conftest import MESSAGES, gateway_env, sdk
from tests.llm_gateway.fake_upstream import FakeUpstream
from tests.servers import ServerProcess, start_hepgg
from tests.waits import wait_for_events

pytestmark = pytest.mark.django_db(transaction=True)

MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def server(
    django_db_setup: None, django_db_blocker: Any, _fake_server: FakeUpstream
) -> Iterator[ServerProcess]:
    """One server for the module: these requests write nothing, so tests cannot disturb it."""
    with django_db_blocker.unblock():
        handle = start_hepgg(env=gateway_env(_fake_server, GATEWAY_MAX_BODY_BYTES=str(MAX_BODY)))
    yield handle
    handle.stop()


def post(server: ServerProcess, body: Any = None, *, key: str | None, **kwargs: Any):
    headers = kwargs.pop("headers", {})
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if body is not None:
        kwargs["json"] = body
    return httpx.post(
        f"{server.base_url}/v1/chat/completions", headers=headers, timeout=20, **kwargs
    )


GOOD = {"model": "cf-gpt-oss-20b", "messages": MESSAGES}


@pytest.mark.parametrize(
    "key",
    [
        None,
        "not-a-key",
        "sk-hyd-" + "x" * 43,  # well formed, unknown
        "sk-hyd-short",
        "sk-" + "y" * 48,  # an OpenAI key, say
    ],
)
def test_a_missing_or_unknown_key_gets_exactly_invalid_api_key(
    server: ServerProcess, fake: FakeUpstream, key: str | None
) -> None:
    response = post(server, GOOD, key=key)

    assert response.status_code == 401
    assert response.json() == {"error": "Invalid API key"}
    assert response.headers["x-should-retry"] == "false"
    assert fake.requests == []


def test_another_credential_type_gets_a_hint_naming_it_but_not_its_value(
    server: ServerProcess, member, catalog_model
) -> None:
    _, proxy_token = machine_register(account=member.account, hostname="laptop")

    master = post(server, GOOD, key=member.master_token)
    proxy = post(server, GOOD, key=proxy_token)

    assert master.status_code == proxy.status_code == 401
    assert master.json()["error"] == "Invalid API key"
    assert master.json()["hint"].startswith("This is a master token (hyd_")
    assert proxy.json()["hint"].startswith("This is a proxy token (pt_")
    assert member.master_token not in master.text and proxy_token not in proxy.text
    # RFC 6750: the same hint in the challenge, printable ASCII, never the value.
    challenge = master.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="hepgg", error="invalid_token", error_description=')
    assert "This is a master token (hyd_...)" in challenge
    assert member.master_token not in challenge


def test_a_request_without_credentials_gets_a_bare_challenge(server: ServerProcess) -> None:
    response = post(server, GOOD, key=None)
    assert response.headers["www-authenticate"] == 'Bearer realm="hepgg"'
    unknown = post(server, GOOD, key="sk-hyd-" + "x" * 43)
    assert (
        'error="invalid_token", error_description="Invalid API key"'
        in (unknown.headers["www-authenticate"])
    )


def test_the_sdk_shows_the_hint_to_the_person_who_sent_a_master_token(
    server: ServerProcess, member
) -> None:
    with pytest.raises(openai.AuthenticationError) as raised:
        sdk(server, member.master_token).chat.completions.create(
            model="cf-gpt-oss-20b", messages=MESSAGES
        )
    error = raised.value
    # openai 3.x prints only "Error code: 401" for the contract's fixed body (it appends
    # error.message, and our "error" is a string; ``error.body`` keeps only that string), so the
    # hint reaches the person through the response the exception carries: the body's "hint"
    # and the RFC 6750 challenge.
    assert error.response.json()["hint"].startswith("This is a master token")
    assert "This is a master token" in error.response.headers["www-authenticate"]
    assert member.master_token not in error.response.text + str(error.response.headers)


def test_the_sdk_raises_authentication_error(server: ServerProcess) -> None:
    with pytest.raises(openai.AuthenticationError) as raised:
        sdk(server, "sk-hyd-" + "z" * 43).chat.completions.create(
            model="cf-gpt-oss-20b", messages=MESSAGES
        )
    assert raised.value.status_code == 401


def test_a_disabled_key_is_refused_at_once(
    server: ServerProcess, api_key: str, member, fake: FakeUpstream
) -> None:
    for _ in range(20):  # the server caches the key: warm it first
        assert post(server, GOOD, key=api_key).status_code == 200
    events = wait_for_events(20, account=member.account)  # before this test's data is flushed
    assert {event.status_code for event in events} == {200}
    key_id = httpx.get(
        f"{server.base_url}/keys", headers={"Authorization": f"Bearer {member.master_token}"}
    ).json()["data"][0]["id"]
    disabled = httpx.delete(
        f"{server.base_url}/keys/{key_id}",
        headers={"Authorization": f"Bearer {member.master_token}"},
    )
    assert disabled.status_code in (200, 204)

    for _ in range(20):
        response = post(server, GOOD, key=api_key)
        assert response.status_code == 401
        assert response.json() == {"error": "Invalid API key"}
    assert len(fake.requests) == 20


def test_a_model_other_than_the_keys_is_not_found(server: ServerProcess, api_key: str) -> None:
    response = post(server, {**GOOD, "model": "gpt-4o"}, key=api_key)

    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "The model `gpt-4o` does not exist or you do not have access to it.",
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_found",
        }
    }
    with pytest.raises(openai.NotFoundError):
        sdk(server, api_key).chat.completions.create(model="gpt-4o", messages=MESSAGES)


def test_a_catalog_model_the_key_was_not_minted_for_is_not_found(
    server: ServerProcess, api_key: str, fake: FakeUpstream
) -> None:
    CatalogModel.objects.create(slug="other-model", provider="cloudflare", upstream_model="@cf/x")

    response = post(server, {**GOOD, "model": "other-model"}, key=api_key)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert fake.requests == []


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            b'{"model": "cf-gpt-oss-20b", "messages": [',
            {"type": "invalid_request_error", "param": None, "code": "invalid_json"},
        ),
        (
            b"[1, 2]",
            {
                "message": "The request body must be a JSON object.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_json",
            },
        ),
        (
            b'{"model": "cf-gpt-oss-20b"}',
            {
                "message": "Missing required parameter: 'messages'.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "missing_required_parameter",
            },
        ),
        (
            b'{"messages": [{"role": "user", "content": "hi"}]}',
            {
                "message": "Missing required parameter: 'model'.",
                "type": "invalid_request_error",
                "param": "model",
                "code": "missing_required_parameter",
            },
        ),
        (
            b'{"model": "cf-gpt-oss-20b", "messages": "hi"}',
            {
                "message": "Invalid type for 'messages': expected an array of objects, "
                "but got str.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "invalid_type",
            },
        ),
    ],
)
def test_a_malformed_request_is_a_400(
    server: ServerProcess, api_key: str, fake: FakeUpstream, content: bytes, expected: dict
) -> None:
    response = post(
        server, key=api_key, content=content, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert {k: error[k] for k in expected} == expected
    assert set(error) == {"message", "type", "param", "code"}
    assert response.headers["x-should-retry"] == "false"
    assert fake.requests == []


def test_a_body_above_the_limit_is_a_413(
    server: ServerProcess, api_key: str, fake: FakeUpstream
) -> None:
    big = [{"role": "user", "content": "x" * MAX_BODY}]
    response = post(server, {**GOOD, "messages": big}, key=api_key)

    assert response.status_code == 413
    assert response.json() == {
        "error": {
            "message": f"The request body is larger than this gateway accepts ({MAX_BODY} bytes).",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_too_large",
        }
    }
    assert fake.requests == []


def test_an_unknown_v1_path_is_an_openai_404(server: ServerProcess, api_key: str) -> None:
    response = httpx.post(f"{server.base_url}/v1/embeddings", json={}, timeout=10)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_url"


def test_an_unconfigured_provider_is_a_503_naming_the_missing_variables(
    start_gateway, api_key: str, fake: FakeUpstream
) -> None:
    server = start_gateway(CLOUDFLARE_ACCOUNT_ID="", CLOUDFLARE_API_TOKEN="")

    response = post(server, GOOD, key=api_key)

    assert response.status_code == 503
    assert response.json() == {
        "error": {
            "message": "The provider of model `cf-gpt-oss-20b` (cloudflare) is not configured: "
            "set CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_API_TOKEN.",
            "type": "server_error",
            "param": None,
            "code": "provider_not_configured",
        }
    }
    assert response.headers["x-should-retry"] == "false"
    assert fake.requests == []
