"""A provider that fails: errors before the first byte become OpenAI errors with 4xx/502/504,
failures after it an in-band SSE error event, never a silent truncation. A client that goes away
mid-stream closes the upstream request, and what it used so far is metered."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.llm_gateway.conftest import MESSAGES, sdk
from tests.llm_gateway.fake_upstream import FakeUpstream
from tests.rawhttp import leave_before_headers
from tests.servers import ServerProcess, free_port
from tests.waits import wait_for_events

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = {"model": "cf-gpt-oss-20b", "messages": MESSAGES}


def post(server: ServerProcess, key: str, **body: object) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={**GOOD, **body},
        timeout=30,
    )


def sse_data(text: str) -> list[str]:
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


def test_a_provider_5xx_is_a_502_the_sdk_may_retry(
    gateway: ServerProcess, api_key: str, fake: FakeUpstream, member
) -> None:
    fake.behavior = "error_500"

    response = post(gateway, api_key)

    assert response.status_code == 502
    assert response.json() == {
        "error": {
            "message": "The provider failed (HTTP 500): upstream exploded",
            "type": "upstream_error",
            "param": None,
            "code": None,
        }
    }
    assert "x-should-retry" not in response.headers
    [event] = wait_for_events(1, account=member.account)
    assert (event.status_code, event.input_tokens, event.estimated) == (502, 0, False)


def test_cloudflares_error_envelope_becomes_an_openai_error(
    gateway: ServerProcess, api_key: str, fake: FakeUpstream, member
) -> None:
    fake.behavior = "cf_error"

    with pytest.raises(openai.BadRequestError) as raised:
        sdk(gateway, api_key).chat.completions.create(model="cf-gpt-oss-20b", messages=MESSAGES)

    assert raised.value.status_code == 400
    assert raised.value.body == {
        "message": "bad input: prompt",
        "type": "invalid_request_error",
        "param": None,
        "code": "5006",
    }
    [event] = wait_for_events(1, account=member.account)
    assert (event.status_code, event.output_tokens) == (400, 0)


def test_a_provider_that_does_not_answer_in_time_is_a_504(
    start_gateway, api_key: str, fake: FakeUpstream, member
) -> None:
    server = start_gateway(GATEWAY_UPSTREAM_READ_TIMEOUT="1")
    fake.behavior = "timeout"

    response = post(server, api_key)

    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert response.json()["error"]["type"] == "upstream_error"
    [event] = wait_for_events(1, account=member.account)
    assert event.status_code == 504


def test_a_connection_reset_before_the_first_byte_is_a_502(
    gateway: ServerProcess, api_key: str, fake: FakeUpstream, member
) -> None:
    fake.behavior = "reset_before"

    response = post(gateway, api_key, stream=True)

    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_error"
    [event] = wait_for_events(1, account=member.account)
    assert (event.status_code, event.output_tokens) == (502, 0)


def test_an_unreachable_provider_is_a_502(start_gateway, api_key: str) -> None:
    server = start_gateway(CLOUDFLARE_API_BASE=f"http://127.0.0.1:{free_port()}/client/v4")

    response = post(server, api_key)

    assert response.status_code == 502
    assert response.json()["error"]["message"] == "The provider could not be reached."


def test_a_reset_after_the_first_byte_ends_the_stream_with_an_error_event(
    gateway: ServerProcess, api_key: str, fake: FakeUpstream, member
) -> None:
    fake.behavior = "reset_after"

    response = post(gateway, api_key, stream=True)

    assert response.status_code == 200
    data = sse_data(response.text)
    assert "[DONE]" not in data
    assert len(data) == 3  # two chunks, then the error
    error = json.loads(data[-1])["error"]
    assert error["type"] == "upstream_error"
    assert error["message"].startswith("The provider's stream broke off")
    with pytest.raises(openai.APIError):
        list(
            sdk(gateway, api_key).chat.completions.create(
                model="cf-gpt-oss-20b", messages=MESSAGES, stream=True
            )
        )
    events = wait_for_events(2, account=member.account)
    assert [e.status_code for e in events] == [502, 502]
    assert events[0].estimated and events[0].output_tokens == 2  # "Hello", " from"


def test_a_stream_the_provider_ends_without_done_ends_with_an_error_event(
    gateway: ServerProcess, api_key: str, fake: FakeUpstream, member
) -> None:
    fake.behavior = "truncate"

    data = sse_data(post(gateway, api_key, stream=True).text)

    assert json.loads(data[-1]) == {
        "error": {
            "message": "The provider ended the stream before it was complete.",
            "type": "upstream_error",
            "param": None,
            "code": "upstream_error",
        }
    }
    [event] = wait_for_events(1, account=member.account)
    assert event.status_code == 502
    assert event.details["error"] == "The provider ended the stream before it was complete."
    # The provider reported no usage before it stopped: the words it sent are counted.
    assert event.estimated and event.output_tokens == 6


def test_a_stream_that_stalls_past_the_read_timeout_ends_with_a_504_event(
    start_gateway, api_key: str, fake: FakeUpstream, member
) -> None:
    server = start_gateway(GATEWAY_UPSTREAM_READ_TIMEOUT="1")
    fake.chunk_delay = 2

    data = sse_data(post(server, api_key, stream=True).text)

    assert json.loads(data[0])["choices"][0]["delta"]["content"] == "Hello"
    assert json.loads(data[-1])["error"]["code"] == "upstream_timeout"
    [event] = wait_for_events(1, account=member.account)
    assert event.status_code == 504
    assert event.estimated and event.output_tokens >= 1


def test_a_client_leaving_mid_stream_closes_the_upstream_and_records_partial_usage(
    gateway: ServerProcess, api_key: str, fake: FakeUpstream, member
) -> None:
    fake.n_chunks, fake.chunk_delay = 100, 0.1
    received = 0
    with httpx.stream(
        "POST",
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key}"},
        json={**GOOD, "stream": True},
        timeout=30,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                received += 1
            if received == 3:
                break
    left = time.monotonic()

    assert fake.stream_aborted.wait(10), "the gateway kept the upstream request open"
    assert time.monotonic() - left < 10
    [event] = wait_for_events(1, account=member.account)
    assert event.details["client_disconnected"] is True
    assert event.estimated
    assert 3 <= event.output_tokens < 100
    assert event.input_tokens > 0
    assert len(fake.chunks_sent) < 100


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_a_client_leaving_before_the_headers_closes_the_upstream_and_is_metered(
    start_gateway, api_key: str, fake: FakeUpstream, member, server: str
) -> None:
    fake.header_delay = 10  # the provider is still thinking when the client hangs up
    gateway = start_gateway(server=server)

    leave_before_headers(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        body=json.dumps(GOOD).encode(),
        sent=lambda: fake.requests,
    )

    assert fake.stream_aborted.wait(5), "the gateway kept the upstream request open"
    [event] = wait_for_events(1, account=member.account)
    assert event.status_code == 499  # the client closed the request (nginx's code)
    assert event.details["client_disconnected"] is True
    # The provider had the prompt: it is counted (estimated); no output was generated for us.
    assert event.estimated and event.input_tokens > 0 and event.output_tokens == 0
