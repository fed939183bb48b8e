"""In CI the suite must run on the real PostgreSQL and Redis, never silently on the defaults."""

import pytest
from django.db import connection

from hepgg.lib.redis import sync_redis


@pytest.mark.django_db
def test_it_runs_on_postgresql(requires_postgres: None) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        assert "PostgreSQL" in cursor.fetchone()[0]


def test_it_talks_to_redis(requires_redis: str) -> None:
    assert sync_redis().ping() is True
