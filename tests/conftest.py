"""Shared fixtures: a small cast (an account, a second account that must see nothing of the
first), their credentials, and the real services the suite runs against."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from accounts.models import Account
from accounts.services import account_create
from catalog.models import CatalogModel, Price
from catalog.pricing import forget_prices
from catalog.services import price_file_read, prices_load
from hepgg.lib import authfailures, sharedcache
from hepgg.lib.batching import close_writer_connections
from tests.servers import ServerProcess, start_hepgg
from usage.writer import usage_writer

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# Every test's failed authentications come from 127.0.0.1 and would add up over a run: only the
# tests of that limit (tests/surface/test_auth_failures.py) set real thresholds, for their server.
_NO_AUTH_FAILURE_LIMITS = {"AUTH_FAILURES_LIMIT": "1000000", "AUTH_FAILURES_SLOW_AFTER": "1000000"}
os.environ.update(_NO_AUTH_FAILURE_LIMITS)  # for the servers the tests start


@pytest.fixture(scope="session", autouse=True)
def _no_auth_failure_limits() -> Iterator[None]:
    with override_settings(**{k: int(v) for k, v in _NO_AUTH_FAILURE_LIMITS.items()}):
        yield


@dataclass
class Member:
    account: Account
    master_token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Bearer {self.master_token}"}


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """A test database of this run's own, so that concurrent runs on one machine don't collide."""
    db = settings.DATABASES["default"]
    test = db.setdefault("TEST", {})
    suffix = f"_{os.getpid()}"
    if db["ENGINE"] == "django.db.backends.sqlite3":
        path = Path(test.get("NAME") or settings.DATA_DIR / "test.sqlite3")
        test["NAME"] = str(path.with_name(f"{path.stem}{suffix}{path.suffix}"))
    else:
        test["NAME"] = (test.get("NAME") or f"test_{db['NAME']}") + suffix


@pytest.fixture(autouse=True)
def _fresh_process_state(settings, tmp_path: Path) -> Iterator[None]:
    # Each test spills (and sets usage aside) in a folder of its own.
    settings.USAGE_SPILL_DIR = tmp_path / "usage"
    # Writers made in this process write themselves; servers a test starts have their writer
    # process (``usage.writer_process``), and its own tests turn it on.
    settings.USAGE_WRITER_PROCESS = False
    sharedcache.clear_local()
    forget_prices()
    authfailures.clear_local()
    yield
    usage_writer.flush()
    # The writer thread keeps its connection between flushes: not past a test (a test
    # database is dropped at the end, and some tests point the settings elsewhere).
    close_writer_connections()
    sharedcache.clear_local()
    forget_prices()
    authfailures.clear_local()


@pytest.fixture
def catalog_model(db: None) -> CatalogModel:
    """The seeded ``cf-gpt-oss-20b`` (re-created when a transactional test flushed it)."""
    model, _ = CatalogModel.objects.get_or_create(
        slug="cf-gpt-oss-20b",
        defaults={"provider": "cloudflare", "upstream_model": "@cf/openai/gpt-oss-20b"},
    )
    return model


@pytest.fixture
def prices(db: None) -> None:
    """The seeded price table (re-loaded from catalog/data/prices.json when a transactional test
    flushed it)."""
    if not Price.objects.exists():
        prices_load(rows=price_file_read())
    forget_prices()


@pytest.fixture
def member(db: None) -> Member:
    account, token = account_create(email="ada@example.com")
    return Member(account, token)


@pytest.fixture
def other_member(db: None) -> Member:
    account, token = account_create(email="grace@example.com")
    return Member(account, token)


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    """Clients (SDK clients, say) that the test wants closed when it ends."""
    clients: list[Any] = []
    yield clients
    for client in clients:
        client.close()


@pytest.fixture
def requires_redis() -> str:
    """The Redis URL; in CI a missing Redis is a failure, elsewhere a skip."""
    if not settings.REDIS_URL:
        if IN_CI:
            pytest.fail("REDIS_URL is not set: CI must run against the real Redis")
        pytest.skip("needs REDIS_URL")
    return settings.REDIS_URL


@pytest.fixture
def requires_postgres() -> None:
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        if IN_CI:
            pytest.fail("DATABASE_URL is not PostgreSQL: CI must run against the real PostgreSQL")
        pytest.skip("needs PostgreSQL")


@pytest.fixture
def hepgg_server(transactional_db: None) -> Iterator[callable]:
    """Factory: ``hepgg_server(env={...}, server="daphne")`` starts hepgg; stopped at teardown."""
    started: list[ServerProcess] = []

    def start(**kwargs: object) -> ServerProcess:
        handle = start_hepgg(**kwargs)  # type: ignore[arg-type]
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()
