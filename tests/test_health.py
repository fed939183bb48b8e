"""/healthz answers while the process serves; /readyz says which dependency is down."""

from __future__ import annotations

import httpx
import pytest
from django.test import Client

from tests.servers import free_port


@pytest.mark.django_db
def test_both_probes_are_200_when_everything_answers(client: Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"


def test_readyz_is_503_naming_the_database_when_it_is_unreachable(hepgg_server) -> None:
    dead_db = f"postgres://postgres@127.0.0.1:{free_port()}/nothing"
    server = hepgg_server(env={"DATABASE_URL": dead_db, "REDIS_URL": ""})
    assert httpx.get(f"{server.base_url}/healthz").status_code == 200
    ready = httpx.get(f"{server.base_url}/readyz", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["failed"] == ["database"]


def test_readyz_is_503_naming_redis_when_it_is_unreachable(hepgg_server) -> None:
    server = hepgg_server(env={"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    ready = httpx.get(f"{server.base_url}/readyz", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["failed"] == ["redis"]
