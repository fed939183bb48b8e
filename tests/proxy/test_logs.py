"""Neither the proxy token in the path nor the client's Anthropic key reaches a log line."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.proxy.conftest import CLIENT_API_KEY, MODEL, FakeAnthropic, Proxy, Registered

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_the_server_log_shows_only_the_tokens_prefix(
    start_proxy: Callable[..., Proxy],
    fake_anthropic: FakeAnthropic,
    machine: Registered,
    server: str,
) -> None:
    proxy = start_proxy(server=server, env={"LOG_LEVEL": "DEBUG"})
    client = proxy.client()
    client.messages.create(
        model=MODEL,
        max_tokens=8,
        messages=[{"role": "user", "content": "x"}],
        extra_headers={"x-api-key": CLIENT_API_KEY},
    )
    proxy.server.stop()

    logs = proxy.server.logs()
    assert machine.token[:9] in logs  # the access log line is there, redacted to the prefix
    assert machine.token not in logs
    assert machine.token[9:] not in logs
    assert CLIENT_API_KEY not in logs
    assert CLIENT_API_KEY[12:] not in logs
    # The masked access line is formatted by the server's own formatter, not dumped in a
    # "Logging error" traceback (uvicorn's formatter unpacks the record's arguments).
    assert "Logging error" not in logs and "Traceback" not in logs
    assert f"/anthropic/{machine.token[:9]}" in logs
