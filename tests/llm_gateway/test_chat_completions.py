"""Chat Completions through hepgg with the official OpenAI SDK: JSON and streamed, forwarded to
the catalog model's provider, metered with the provider's counts."""

from __future__ import annotations

import itertools
import time

import httpx
import pytest

from catalog.models import CatalogModel
from tests.llm_gateway.conftest import MESSAGES, sdk
from tests.llm_gateway.fake_upstream import CF_ACCOUNT, CF_TOKEN, OPENAI_KEY, WORDS, FakeUpstream
from tests.servers import ServerProcess
from tests.waits import wait_for_events

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_sdk_gets_a_completion_under_the_gateways_model_name(
    gateway: ServerProcess, api_key: str, fake: FakeUpstream
) -> None:
    completion = sdk(gateway, api_key).chat.completions.create(
        model="cf-gpt-oss-20b", messages=MESSAGES
    )

    assert completion.model == "cf-gpt-oss-20b"
    assert completion.choices[0].message.content == "".join(WORDS)
    assert completion.usage is not None and completion.usage.prompt_tokens == 14


def test_the_provider_receives_its_model_name_credentials_and_every_field(
    gateway: ServerProcess, api_key: str, fake: FakeUpstream
) -> None:
    sdk(gateway, api_key).chat.completions.create(
        model="cf-gpt-oss-20b",
        messages=MESSAGES,
        temperature=0.25,
        max_tokens=64,
        extra_body={"top_k": 5, "hepgg_unknown_field": {"nested": [1, 2]}},
    )

    received = fake.last
    assert received.path == f"/client/v4/accounts/{CF_ACCOUNT}/ai/v1/chat/completions"
    assert received.headers["Authorization"] == f"Bearer {CF_TOKEN}"
    assert received.body["model"] == "@cf/openai/gpt-oss-20b"
    assert received.body["messages"] == MESSAGES
    assert received.body["temperature"] == 0.25
    assert received.body["max_tokens"] == 64
    assert received.body["top_k"] == 5
    assert received.body["hepgg_unknown_field"] == {"nested": [1, 2]}
    assert api_key not in str(received.headers)


def test_the_sdk_streams_the_chunks_without_a_usage_chunk_unless_asked(
    gateway: ServerProcess, api_key: str, fake: FakeUpstream
) -> None:
    chunks = list(
        sdk(gateway, api_key).chat.completions.create(
            model="cf-gpt-oss-20b", messages=MESSAGES, stream=True
        )
    )

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(WORDS)
    assert all(c.model == "cf-gpt-oss-20b" for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    # The gateway asked for usage all the same, to meter the request.
    assert fake.last.body["stream_options"] == {"include_usage": True}


def test_the_usage_chunk_reaches_the_client_that_asks_for_it(
    gateway: ServerProcess, api_key: str, fake: FakeUpstream
) -> None:
    chunks = list(
        sdk(gateway, api_key).chat.completions.create(
            model="cf-gpt-oss-20b",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (14, len(WORDS))


def test_the_stream_ends_with_done(gateway: ServerProcess, api_key: str) -> None:
    response = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"model": "cf-gpt-oss-20b", "messages": MESSAGES, "stream": True},
        timeout=20,
    )

    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("data: [DONE]\n\n")
    assert response.text.count("data: ") == len(WORDS) + 1


def test_chunks_reach_the_client_as_the_provider_sends_them(
    gateway: ServerProcess, api_key: str, fake: FakeUpstream
) -> None:
    fake.chunk_delay = 0.3
    arrivals: list[float] = []
    stream = sdk(gateway, api_key).chat.completions.create(
        model="cf-gpt-oss-20b", messages=MESSAGES, stream=True
    )
    for _ in stream:
        arrivals.append(time.monotonic())

    # The first chunk arrives long before the provider sent its last one: nothing is buffered.
    assert len(arrivals) == len(WORDS)
    assert arrivals[0] < fake.chunks_sent[-1] - 0.6
    assert all(a < b for a, b in itertools.pairwise(arrivals))


def test_every_request_records_one_usage_event_with_the_providers_counts(
    gateway: ServerProcess, api_key: str, member, fake: FakeUpstream
) -> None:
    client = sdk(gateway, api_key)
    client.chat.completions.create(model="cf-gpt-oss-20b", messages=MESSAGES)
    list(client.chat.completions.create(model="cf-gpt-oss-20b", messages=MESSAGES, stream=True))

    events = wait_for_events(2, account=member.account)
    assert len(events) == 2
    for event in events:
        assert event.source == "gateway"
        assert event.model == "cf-gpt-oss-20b"
        assert event.api_key.name == "tests"
        assert (event.input_tokens, event.output_tokens) == (14, len(WORDS))
        assert not event.estimated
        assert event.status_code == 200
        assert event.stop_reason == "stop"
        assert event.message_id == "chatcmpl-fake"
        assert event.latency_ms is not None and event.ttfb_ms is not None
        assert event.ttfb_ms <= event.latency_ms
    assert [e.details["stream"] for e in events] == [False, True]


@pytest.mark.parametrize("stream", [False, True])
def test_usage_the_provider_does_not_report_is_counted_with_the_tokenizer(
    gateway: ServerProcess, api_key: str, member, fake: FakeUpstream, stream: bool
) -> None:
    fake.behavior = "no_usage"
    response = sdk(gateway, api_key).chat.completions.create(
        model="cf-gpt-oss-20b", messages=MESSAGES, stream=stream
    )
    if stream:
        list(response)

    [event] = wait_for_events(1, account=member.account)
    assert event.estimated
    # o200k: "Hello from the fake upstream." is 6 tokens; the prompt is its words plus framing.
    assert event.output_tokens == 6
    assert event.input_tokens > 3 * len(MESSAGES)
    assert event.details["tokenizer"] == "o200k_base"


def test_an_openai_compatible_model_goes_to_its_base_url_with_the_key_from_the_environment(
    start_gateway, member, fake: FakeUpstream
) -> None:
    from accounts.services import api_key_mint

    CatalogModel.objects.create(
        slug="local-llama",
        provider="openai_compatible",
        upstream_model="llama-3.1-8b-instruct",
        base_url=f"{fake.url}/v1",
        api_key_env="HEPGG_UPSTREAM_KEY_FAKE_OPENAI",
    )
    _, key = api_key_mint(account=member.account, model="local-llama")
    server = start_gateway()

    completion = sdk(server, key).chat.completions.create(model="local-llama", messages=MESSAGES)

    assert completion.model == "local-llama"
    assert fake.last.path == "/v1/chat/completions"
    assert fake.last.headers["Authorization"] == f"Bearer {OPENAI_KEY}"
    assert fake.last.body["model"] == "llama-3.1-8b-instruct"


def test_v1_models_lists_the_keys_one_model(gateway: ServerProcess, api_key: str) -> None:
    client = sdk(gateway, api_key)

    assert [m.id for m in client.models.list()] == ["cf-gpt-oss-20b"]
    assert client.models.retrieve("cf-gpt-oss-20b").id == "cf-gpt-oss-20b"


def test_responses_carry_a_request_id_and_the_gateways_overhead(
    gateway: ServerProcess, api_key: str
) -> None:
    ok = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"model": "cf-gpt-oss-20b", "messages": MESSAGES},
        timeout=20,
    )
    refused = httpx.post(f"{gateway.base_url}/v1/chat/completions", json={}, timeout=20)

    ids = {ok.headers["x-request-id"], refused.headers["x-request-id"]}
    assert len(ids) == 2 and all(i.startswith("req_") for i in ids)
    assert float(ok.headers["x-hepgg-overhead-ms"]) >= 0


def test_the_gateway_also_works_under_uvicorn(start_gateway, api_key: str, member) -> None:
    server = start_gateway(server="uvicorn")
    client = sdk(server, api_key)

    assert client.chat.completions.create(model="cf-gpt-oss-20b", messages=MESSAGES).choices
    assert len(
        list(client.chat.completions.create(model="cf-gpt-oss-20b", messages=MESSAGES, stream=True))
    ) == len(WORDS)
    assert len(wait_for_events(2, account=member.account)) == 2
