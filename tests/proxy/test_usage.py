"""/v1/messages is metered per machine, exactly, after the response; attribution included."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from accounts.models import Machine
from proxy.models import MachineRateLimit
from tests.proxy.conftest import (
    CACHE_READ,
    CACHE_SPLIT,
    CACHE_WRITE,
    INPUT,
    MODEL,
    OUTPUT,
    FakeAnthropic,
    Proxy,
    Registered,
)
from tests.waits import wait_for_events, wait_until

pytestmark = pytest.mark.django_db(transaction=True)
SESSION = "0c6a5f2e-4b3d-4a1c-9e8f-7d6c5b4a3f2e"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_message_is_metered_exactly(
    start_proxy: Callable[..., Proxy],
    fake_anthropic: FakeAnthropic,
    machine: Registered,
    stream: bool,
) -> None:
    proxy = start_proxy()
    client = proxy.client()
    if stream:
        with client.messages.stream(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
        ) as events:
            events.until_done()
    else:
        client.messages.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
        )

    [event] = wait_for_events(1)
    assert event.source == "proxy"
    assert event.account_id == machine.machine.account_id
    assert event.machine_id == machine.machine.id
    assert event.api_key_id is None
    assert event.model == MODEL
    assert (event.input_tokens, event.output_tokens) == (INPUT, OUTPUT)
    assert event.cache_creation_input_tokens == CACHE_WRITE
    assert event.cache_read_input_tokens == CACHE_READ
    assert event.details["cache_creation"] == CACHE_SPLIT
    assert event.details["stream"] is stream
    assert "partial" not in event.details
    assert (event.request_id, event.message_id) == ("req_fake0001", "msg_fake0001")
    assert (event.status_code, event.stop_reason) == (200, "end_turn")
    assert event.latency_ms is not None and event.ttfb_ms is not None
    assert 0 < event.ttfb_ms <= event.latency_ms


@pytest.mark.parametrize(
    ("headers", "user_id"),
    [
        ({"x-claude-code-session-id": SESSION}, "user_" + "a" * 64),
        ({}, json.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": SESSION})),
        ({}, f"user_{'b' * 64}_account__session_{SESSION}"),
    ],
    ids=["header", "metadata-json", "metadata-legacy"],
)
def test_the_claude_code_session_is_attributed(
    start_proxy: Callable[..., Proxy],
    fake_anthropic: FakeAnthropic,
    headers: dict[str, str],
    user_id: str,
) -> None:
    proxy = start_proxy()
    proxy.client().messages.create(
        model=MODEL,
        max_tokens=8,
        messages=[{"role": "user", "content": "x"}],
        metadata={"user_id": user_id},
        extra_headers={**headers, "x-claude-code-agent-id": "agent-7"},
    )
    [event] = wait_for_events(1)
    assert event.session_id == SESSION
    assert event.details["agent_id"] == "agent-7"


def test_subscription_limits_and_last_seen_are_kept_per_machine(
    start_proxy: Callable[..., Proxy], fake_anthropic: FakeAnthropic, machine: Registered
) -> None:
    fake_anthropic.extra_headers = {
        "anthropic-ratelimit-unified-status": "allowed",
        "anthropic-ratelimit-unified-5h-utilization": "0.42",
        "anthropic-ratelimit-unified-5h-reset": "1893456000",
        "anthropic-ratelimit-unified-7d-utilization": "0.17",
    }
    proxy = start_proxy()
    client = proxy.client()
    client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "x"}])

    snapshot = wait_until(lambda: MachineRateLimit.objects.filter(machine=machine.machine).first())
    assert snapshot is not None
    assert snapshot.status == "allowed"
    assert (snapshot.five_hour_utilization, snapshot.weekly_utilization) == (0.42, 0.17)
    assert snapshot.five_hour_reset is not None and snapshot.five_hour_reset.year == 2030

    fake_anthropic.extra_headers["anthropic-ratelimit-unified-5h-utilization"] = "0.5"
    client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert wait_until(
        lambda: MachineRateLimit.objects.get(machine=machine.machine).five_hour_utilization == 0.5
    )
    assert MachineRateLimit.objects.count() == 1

    seen = wait_until(lambda: Machine.objects.get(pk=machine.machine.pk).last_seen_at)
    assert seen is not None
    for _ in range(3):  # within the minute, last_seen is not rewritten per request
        client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "x"}])
    client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "x"}])
    [event] = wait_for_events(1)  # count_tokens is not metered; the message is, once
    assert event.machine_id == machine.machine.id
    assert Machine.objects.get(pk=machine.machine.pk).last_seen_at == seen
