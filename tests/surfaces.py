"""Each surface as its client uses it, one request per call on a connection of its own (so that
with several workers each call may reach another), answering ``Answer(status, body)``.

- ``/v1``: the official OpenAI SDK; ``/anthropic/pt_…``: the official Anthropic SDK;
- the account API (``/me``) and the skills site: plain HTTP, as curl or an agent would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import httpx2
import openai

from tests.llm_gateway.conftest import MESSAGES
from tests.proxy.conftest import CLIENT_API_KEY, MODEL


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any


Send = Callable[[], Answer]

# The contract's refusals that are the same every time.
INVALID_API_KEY = Answer(401, {"error": "Invalid API key"})
NOT_FOUND = Answer(404, b"Not found\n")


def v1_chat(base_url: str, key: str, closing: list[Any], *, timeout: float = 20) -> Send:
    http = httpx.Client(timeout=timeout, limits=httpx.Limits(max_keepalive_connections=0))
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, http_client=http)
    closing.append(client)

    def send() -> Answer:
        try:
            client.chat.completions.create(model="cf-gpt-oss-20b", messages=MESSAGES)
        except openai.APIStatusError as error:
            return Answer(error.status_code, error.response.json())
        return Answer(200, None)

    return send


def proxy_messages(base_url: str, token: str, closing: list[Any], *, timeout: float = 20) -> Send:
    http = httpx2.Client(timeout=timeout, limits=httpx2.Limits(max_keepalive_connections=0))
    client = anthropic.Anthropic(
        base_url=f"{base_url}/anthropic/{token}",
        api_key=CLIENT_API_KEY,
        max_retries=0,
        http_client=http,
    )
    closing.append(client)

    def send() -> Answer:
        try:
            client.messages.create(
                model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "x"}]
            )
        except anthropic.APIStatusError as error:
            return Answer(error.status_code, error.response.json())
        return Answer(200, None)

    return send


def account_api(base_url: str, token: str, *, timeout: float = 20) -> Send:
    def send() -> Answer:
        response = httpx.get(
            f"{base_url}/me", headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )
        return Answer(response.status_code, response.json())

    return send


def skills_read(base_url: str, path: str, *, timeout: float = 20) -> Send:
    """``path`` relative to the skills site, which is under ``/skills/`` on the gateway host."""

    def send() -> Answer:
        response = httpx.get(f"{base_url}/skills/{path}", timeout=timeout)
        return Answer(response.status_code, response.content)

    return send


def assert_all(answers: list[Answer], expected: Answer) -> None:
    assert len(answers) >= 20
    assert [answer for answer in answers if answer != expected] == []


def assert_proxy_refusals(answers: list[Answer], status: int = 401) -> None:
    """Anthropic's error shape, ``authentication_error`` for a 401."""
    assert len(answers) >= 20
    for answer in answers:
        assert answer.status == status
        assert answer.body["type"] == "error"
        assert answer.body["error"]["type"] == "authentication_error"
        assert set(answer.body) == {"type", "error"}


def assert_account_api_refusals(answers: list[Answer]) -> None:
    """``{"error": "…"}`` naming the master token."""
    assert len(answers) >= 20
    for answer in answers:
        assert answer.status == 401
        assert list(answer.body) == ["error"] and "master token" in answer.body["error"]
