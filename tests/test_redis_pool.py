"""A burst of requests larger than the Redis pool waits for connections instead of failing."""

from __future__ import annotations

import asyncio

import aiohttp

from accounts.services import account_create, api_key_mint
from catalog.models import CatalogModel


def test_a_burst_bigger_than_the_redis_pool_gets_no_errors(hepgg_server, requires_redis) -> None:
    CatalogModel.objects.get_or_create(
        slug="cf-gpt-oss-20b",
        defaults={"provider": "cloudflare", "upstream_model": "@cf/openai/gpt-oss-20b"},
    )
    account, _ = account_create(email="burst@example.com")
    _key, secret = api_key_mint(account=account, model="cf-gpt-oss-20b")
    server = hepgg_server(env={"REDIS_MAX_CONNECTIONS": "2"})

    async def burst() -> list[int]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            headers = {"Authorization": f"Bearer {secret}"}

            async def one() -> int:
                async with http.get(f"{server.base_url}/v1/models", headers=headers) as r:
                    return r.status

            return await asyncio.gather(*(one() for _ in range(400)))

    assert asyncio.run(burst()) == [200] * 400
    assert "Too many connections" not in server.logs()
