"""Oversized and odd input (deep nesting, huge numbers, invalid UTF-8, odd headers) gets a clear
4xx in each surface's own error shape, never a 500. Driven against a live server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from accounts.services import api_key_mint, skills_key_issue
from catalog.models import CatalogModel
from tests.conftest import Member
from tests.servers import ServerProcess

DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE_NUMBER = b"9" * 100_000


@dataclass
class World:
    http: httpx.Client
    master: str
    api_key: str
    skills_key: str


@pytest.fixture
def world(
    hepgg_server: Callable[..., ServerProcess], member: Member, catalog_model: CatalogModel
) -> Iterator[World]:
    _, api_key = api_key_mint(account=member.account, model=catalog_model.slug)
    _, skills_key = skills_key_issue(account=member.account)
    server = hepgg_server()
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        yield World(http, member.master_token, api_key, skills_key)


def _openai_error(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def _account_error(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()) == {"error"}


def _skills_error(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["message"]


BODIES = {
    "deeply nested JSON": DEEP,
    "nested JSON inside a field": b'{"model": "m", "messages": ' + DEEP + b"}",
    "a huge number": b'{"model": "m", "messages": [{}], "max_tokens": ' + HUGE_NUMBER + b"}",
    "invalid UTF-8": b'{"model": "m", "messages": [{"content": "\xff\xfe"}]}',
}


def test_odd_json_and_odd_credentials_get_each_surfaces_own_4xx(world: World) -> None:
    for name, body in BODIES.items():
        try:
            _odd_json(world, body)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None
    _odd_credentials(world)


def _odd_json(world: World, body: bytes) -> None:
    json_header = {"content-type": "application/json"}
    v1 = world.http.post(
        "/v1/chat/completions",
        content=body,
        headers={**json_header, "authorization": f"Bearer {world.api_key}"},
    )
    _openai_error(v1)
    for path in ("/keys", "/sync/machines"):
        account = world.http.post(
            path, content=body, headers={**json_header, "authorization": f"Bearer {world.master}"}
        )
        _account_error(account)
    skills = world.http.post(
        f"/skills/k/{world.skills_key}/import",
        content=body.replace(b'"model"', b'"files"'),
        headers=json_header,
    )
    _skills_error(skills)


def _odd_credentials(world: World) -> None:
    garbled = b"Bearer \xff\xfe" + b"x" * 8000
    v1 = world.http.get("/v1/models", headers={"authorization": garbled})
    assert v1.status_code == 401 and v1.json()["error"] == "Invalid API key"
    me = world.http.get("/me", headers={"authorization": garbled})
    assert me.status_code == 401 and set(me.json()) == {"error"}
    proxy = world.http.get("/anthropic/pt_%ff%fe/v1/messages")
    assert proxy.status_code == 401 and proxy.json()["error"]["type"] == "authentication_error"


BIG_HEADERS = {
    "one 64 KiB header": {"x-big": "a" * 64 * 1024},
    "100 KiB in 100 headers": {f"x-h{n}": "b" * 1024 for n in range(100)},
}


@pytest.fixture
def uvicorn_world(
    hepgg_server: Callable[..., ServerProcess], member: Member, catalog_model: CatalogModel
) -> Iterator[World]:
    """``make run``'s server: uvicorn with httptools, which passes headers of any size on."""
    _, api_key = api_key_mint(account=member.account, model=catalog_model.slug)
    _, skills_key = skills_key_issue(account=member.account)
    server = hepgg_server(server="uvicorn")
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        yield World(http, member.master_token, api_key, skills_key)


def test_oversized_headers_get_431_in_each_surfaces_shape_under_uvicorn(
    uvicorn_world: World,
) -> None:
    world = uvicorn_world
    bearer = {"authorization": f"Bearer {world.api_key}"}
    master = {"authorization": f"Bearer {world.master}"}
    # Headers under the limit still reach the application (an 8 KiB credential included).
    assert (
        world.http.get("/v1/models", headers={**bearer, "x-pad": "p" * 16_000}).status_code == 200
    )
    assert world.http.get("/me", headers={**master, "x-pad": "p" * 16_000}).status_code == 200
    for name, big in BIG_HEADERS.items():
        v1 = world.http.get("/v1/models", headers={**bearer, **big})
        assert v1.status_code == 431, (name, v1.text)
        assert v1.json()["error"]["code"] == "request_headers_too_large"
        _openai_error(v1)
        chat = world.http.post("/v1/chat/completions", json={}, headers={**bearer, **big})
        assert chat.status_code == 431 and chat.json()["error"]["type"] == "invalid_request_error"
        proxy = world.http.post("/anthropic/pt_" + "x" * 43 + "/v1/messages", headers=big)
        assert proxy.status_code == 431, (name, proxy.text)
        assert proxy.json()["type"] == "error"
        assert proxy.json()["error"]["type"] == "invalid_request_error"
        for path in ("/me", "/keys", "/admin/login/"):
            account = world.http.get(path, headers={**master, **big})
            assert account.status_code == 431, (name, path, account.text)
            assert set(account.json()) == {"error"}
        for method, path in (
            ("GET", "/skills/"),
            ("GET", f"/skills/k/{world.skills_key}/index.json"),
            ("POST", f"/skills/k/{world.skills_key}/import"),
        ):
            skills = world.http.request(method, path, headers=big, content=b"{}")
            assert skills.status_code == 431, (name, path, skills.text)
            assert skills.json()["errors"][0]["message"].startswith("Request headers too large")
    # The refusals closed their connections; the server serves the next request as before.
    assert world.http.get("/v1/models", headers=bearer).status_code == 200
