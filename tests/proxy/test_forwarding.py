"""The proxy forwards requests and relays responses unchanged: headers, bodies, statuses."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable

import anthropic
import httpx
import httpx2
import pytest

from tests.proxy.conftest import CLIENT_API_KEY, INPUT, MODEL, FakeAnthropic, Proxy, message_json
from tests.waits import wait_for_events

pytestmark = pytest.mark.django_db(transaction=True)

# Not forwarded by design: hop-by-hop headers and Host (RFC 9110 §7.6.1).
NOT_FORWARDED = {"host", "connection", "keep-alive", "transfer-encoding"}
RELAYED = [
    "request-id",
    "x-should-retry",
    "anthropic-organization-id",
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-unified-status",
    "x-unknown-upstream-header",
]
OAUTH_TOKEN = "sk-ant-oat01-subscription-login-token"
CLIENT_HEADERS = {
    "anthropic-beta": "oauth-2025-04-20,interleaved-thinking-2025-05-14",
    "x-claude-code-session-id": "5e1d0c3b-9a8f-4c2d-8e7f-6a5b4c3d2e1f",
    "x-stainless-helper-method": "stream",
    "user-agent": "claude-cli/2.1.90 (external, cli)",
    "x-unknown-client-header": "kept",
    "x-api-key": CLIENT_API_KEY,
}


def sent_headers(request: httpx2.Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items() if k.lower() not in NOT_FORWARDED}


def test_a_message_goes_upstream_and_comes_back_byte_for_byte(
    start_proxy: Callable[..., Proxy], fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.extra_headers = {
        "anthropic-ratelimit-unified-status": "allowed",
        "x-unknown-upstream-header": "relayed",
    }
    proxy = start_proxy()
    raw = proxy.client().messages.with_raw_response.create(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": 'Hi, ünïcode and "quotes"'}],
        extra_headers=CLIENT_HEADERS,
        extra_query={"beta": "true"},
    )

    [seen] = fake_anthropic.requests
    [sent] = proxy.sent
    assert seen.method == "POST"
    assert seen.raw_path == "/v1/messages?beta=true"
    assert seen.body == sent.content  # the JSON body is never rewritten
    forwarded = {k.lower(): v for k, v in seen.headers}
    assert {k: forwarded.get(k) for k in sent_headers(sent)} == sent_headers(sent)
    assert forwarded["x-api-key"] == CLIENT_API_KEY
    assert forwarded["authorization"] == f"Bearer {CLIENT_API_KEY}"
    for name, value in CLIENT_HEADERS.items():
        assert forwarded[name] == value

    assert raw.http_response.status_code == 200
    assert raw.http_response.content == fake_anthropic.sent_bodies[0]
    for name in RELAYED:
        assert raw.http_response.headers[name], name
    assert raw.http_response.headers["request-id"] == "req_fake0001"
    assert raw.http_response.headers["x-unknown-upstream-header"] == "relayed"
    assert raw.parse().content[0].text == "Hello there"

    # A subscription login sends its OAuth token as Authorization, with the oauth beta.
    oauth = proxy.client(api_key=None, auth_token=OAUTH_TOKEN)
    oauth.messages.create(
        model=MODEL,
        max_tokens=8,
        messages=[{"role": "user", "content": "x"}],
        extra_headers={"anthropic-beta": "oauth-2025-04-20"},
    )
    forwarded = {k.lower(): v for k, v in fake_anthropic.requests[1].headers}
    assert forwarded["authorization"] == f"Bearer {OAUTH_TOKEN}"
    assert forwarded["anthropic-beta"] == "oauth-2025-04-20"
    assert "x-api-key" not in forwarded


def test_a_streamed_message_arrives_as_the_upstream_sent_it(
    start_proxy: Callable[..., Proxy], fake_anthropic: FakeAnthropic
) -> None:
    proxy = start_proxy()
    client = proxy.client()
    with client.messages.with_streaming_response.create(
        model=MODEL,
        max_tokens=64,
        stream=True,
        messages=[{"role": "user", "content": "Hi"}],
        extra_headers=CLIENT_HEADERS,
    ) as response:
        body = b"".join(response.iter_bytes())
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert body == fake_anthropic.sent_bodies[0]
    assert b"event: ping" in body

    with client.messages.stream(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello there"
    assert final.usage.output_tokens == 15


def test_count_tokens_models_and_the_warm_up_probe_pass_through(
    start_proxy: Callable[..., Proxy], fake_anthropic: FakeAnthropic
) -> None:
    proxy = start_proxy()
    client = proxy.client()
    counted = client.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}]
    )
    assert counted.input_tokens == INPUT
    assert [m.id for m in client.models.list()] == [MODEL]
    probe = httpx.head(f"{proxy.base_url}/api/hello", timeout=10)
    assert probe.status_code == 200
    assert probe.headers["request-id"].startswith("req_fake")
    assert [(r.method, r.raw_path) for r in fake_anthropic.requests] == [
        ("POST", "/v1/messages/count_tokens"),
        ("GET", "/v1/models"),
        ("HEAD", "/api/hello"),
    ]

    # Only /v1/messages is metered: the next event is the message's, nothing before it.
    client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "x"}])
    events = wait_for_events(1)
    assert len(events) == 1
    assert events[0].message_id == "msg_fake0004"


def test_an_upstream_error_reaches_the_client_verbatim(
    start_proxy: Callable[..., Proxy], fake_anthropic: FakeAnthropic
) -> None:
    error_body = b'{"type":"error","error":{"type":"rate_limit_error","message":"Slow down"}}'
    fake_anthropic.error = (429, error_body, {"retry-after": "17", "x-should-retry": "true"})
    proxy = start_proxy()
    with pytest.raises(anthropic.RateLimitError) as caught:
        proxy.client().messages.create(
            model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    response = caught.value.response
    assert response.status_code == 429
    assert response.content == error_body
    assert response.headers["retry-after"] == "17"
    assert response.headers["x-should-retry"] == "true"
    [event] = wait_for_events(1)
    assert (event.status_code, event.model, event.details["error_type"]) == (
        429,
        MODEL,
        "rate_limit_error",
    )


def test_a_gzip_response_is_passed_through_compressed_and_metered(
    start_proxy: Callable[..., Proxy], fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.compress = True
    proxy = start_proxy()
    body = json.dumps(
        {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}
    )
    with httpx.stream(
        "POST",
        f"{proxy.base_url}/v1/messages",
        content=body,
        headers={"content-type": "application/json", "accept-encoding": "gzip"},
        timeout=10,
    ) as response:
        raw = b"".join(response.iter_raw())
        assert response.headers["content-encoding"] == "gzip"
    assert raw == fake_anthropic.sent_bodies[0]
    assert json.loads(gzip.decompress(raw)) == message_json("msg_fake0001")

    # The SDK decodes it as it would from Anthropic; a gzip stream works the same way.
    client = proxy.client()
    message = client.messages.create(
        model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "x"}]
    )
    assert message.content[0].text == "Hello there"
    with client.messages.stream(
        model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "x"}]
    ) as stream:
        assert "".join(stream.text_stream) == "Hello there"

    events = wait_for_events(3)
    assert [(e.input_tokens, e.output_tokens) for e in events] == [(25, 15)] * 3
    assert [e.details["stream"] for e in events] == [False, False, True]
    assert all("unmetered" not in e.details for e in events)


def test_a_32_mib_body_passes_unchanged(
    start_proxy: Callable[..., Proxy], fake_anthropic: FakeAnthropic
) -> None:
    proxy = start_proxy()
    client = proxy.client()
    big = "x" * (32 * 1024 * 1024)
    message = client.messages.create(
        model=MODEL, max_tokens=8, messages=[{"role": "user", "content": big}]
    )
    assert message.content[0].text == "Hello there"
    [seen] = fake_anthropic.requests
    [sent] = proxy.sent
    assert len(seen.body) > 32 * 1024 * 1024
    assert hashlib.sha256(seen.body).digest() == hashlib.sha256(sent.content).digest()


def test_a_body_over_the_limit_gets_413_and_nothing_goes_upstream(
    start_proxy: Callable[..., Proxy], fake_anthropic: FakeAnthropic
) -> None:
    limit = 32 * 1024 * 1024
    proxy = start_proxy(env={"PROXY_MAX_BODY_BYTES": str(limit)})
    with pytest.raises(anthropic.APIStatusError) as caught:
        proxy.client().messages.create(
            model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "x" * (limit + 1)}]
        )
    assert caught.value.status_code == 413
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "request_too_large", "message": caught.value.body["error"]["message"]},
    }
    assert fake_anthropic.requests == []
