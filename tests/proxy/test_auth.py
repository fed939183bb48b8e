"""Only a live proxy token opens the proxy, and nothing goes upstream before it is checked."""

from __future__ import annotations

from collections.abc import Callable

import anthropic
import pytest

from accounts.services import api_key_mint
from catalog.models import CatalogModel
from tests.conftest import Member
from tests.proxy.conftest import MODEL, FakeAnthropic, Proxy, Registered
from tests.servers import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def ask(client: anthropic.Anthropic) -> None:
    client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "x"}])


def assert_anthropic_error(error: anthropic.APIStatusError, status: int, kind: str) -> str:
    assert error.status_code == status
    assert error.body["type"] == "error"
    assert error.body["error"]["type"] == kind
    return error.body["error"]["message"]


@pytest.mark.parametrize(
    "token",
    ["pt_" + "A" * 43, "pt_short", "not-a-token", ""],
    ids=["unknown", "short", "junk", "empty"],
)
def test_an_unknown_token_gets_401_and_nothing_goes_upstream(
    start_proxy: Callable[..., Proxy], fake_anthropic: FakeAnthropic, token: str
) -> None:
    proxy = start_proxy()
    proxy.base_url = proxy.base_url.rsplit("/", 1)[0] + "/" + token
    with pytest.raises(anthropic.AuthenticationError) as caught:
        ask(proxy.client())
    assert_anthropic_error(caught.value, 401, "authentication_error")
    assert fake_anthropic.requests == []


def test_a_revoked_machine_gets_401(
    start_proxy: Callable[..., Proxy], fake_anthropic: FakeAnthropic, machine: Registered
) -> None:
    machine.machine.revoke()
    proxy = start_proxy()
    with pytest.raises(anthropic.AuthenticationError):
        ask(proxy.client())
    assert fake_anthropic.requests == []


def test_revoking_a_machine_in_use_takes_effect_at_once(
    start_proxy: Callable[..., Proxy], fake_anthropic: FakeAnthropic, machine: Registered
) -> None:
    proxy = start_proxy()
    client = proxy.client()
    for _ in range(20):
        ask(client)  # the token is resolved and cached by the server
    machine.machine.revoke()  # in this process, as the admin or a shell would
    for _ in range(20):
        with pytest.raises(anthropic.AuthenticationError):
            ask(client)
    assert len(fake_anthropic.requests) == 20


def test_another_credential_in_the_path_is_named_but_not_echoed(
    start_proxy: Callable[..., Proxy],
    fake_anthropic: FakeAnthropic,
    member: Member,
    catalog_model: CatalogModel,
) -> None:
    _, api_key = api_key_mint(account=member.account, model=catalog_model.slug)
    proxy = start_proxy()
    proxy.base_url = proxy.base_url.rsplit("/", 1)[0] + "/" + api_key
    with pytest.raises(anthropic.AuthenticationError) as caught:
        ask(proxy.client())
    message = assert_anthropic_error(caught.value, 401, "authentication_error")
    assert "API key" in message
    assert api_key not in message and api_key[7:] not in message
    assert fake_anthropic.requests == []


def test_an_unreachable_upstream_gets_502_in_anthropics_shape(
    start_proxy: Callable[..., Proxy],
) -> None:
    proxy = start_proxy(env={"ANTHROPIC_UPSTREAM_URL": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(anthropic.APIStatusError) as caught:
        ask(proxy.client())
    assert_anthropic_error(caught.value, 502, "api_error")
