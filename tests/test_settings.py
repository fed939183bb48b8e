"""The settings module: embedded defaults with no environment, a loud refusal without a key."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.servers import ROOT

BARE_ENV = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}


def django_shell(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env={**BARE_ENV, "DJANGO_SETTINGS_MODULE": "hepgg.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_no_environment_means_sqlite_local_cache_and_eager_tasks(tmp_path) -> None:
    result = django_shell(
        "from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE'], s.CACHES['default']['BACKEND'], "
        "s.CELERY_TASK_ALWAYS_EAGER, s.CHANNEL_LAYERS['default']['BACKEND'])",
        {"HEPGG_DATA_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        "django.core.cache.backends.locmem.LocMemCache",
        "True",
        "channels.layers.InMemoryChannelLayer",
    ]
    key = (tmp_path / "secret_key").read_text()
    assert len(key) >= 50
    again = django_shell(
        "from django.conf import settings as s; print(s.SECRET_KEY)",
        {"HEPGG_DATA_DIR": str(tmp_path)},
    )
    assert again.stdout.strip() == key  # generated once, then kept


def test_database_and_redis_urls_switch_to_postgres_redis_and_workers(tmp_path) -> None:
    result = django_shell(
        "from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE'], s.CACHES['default']['BACKEND'], "
        "s.CELERY_TASK_ALWAYS_EAGER, s.CELERY_BROKER_URL)",
        {
            "HEPGG_DATA_DIR": str(tmp_path),
            "DATABASE_URL": "postgres://u@db:5432/h",
            "REDIS_URL": "redis://cache:6379/1",
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.postgresql",
        "django.core.cache.backends.locmem.LocMemCache",  # nothing uses it; see the settings
        "False",
        "redis://cache:6379/1",
    ]


def test_debug_off_without_a_secret_key_refuses_to_start_with_one_line(tmp_path) -> None:
    result = django_shell("", {"HEPGG_DATA_DIR": str(tmp_path), "DEBUG": "false"})
    assert result.returncode != 0
    assert result.stderr.startswith("hepgg: SECRET_KEY is not set.")
    assert len(result.stderr.strip().splitlines()) == 1  # a sentence, not a traceback


def test_the_server_refuses_to_start_with_the_same_line(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "daphne", "-p", "0", "hepgg.asgi:application"],
        cwd=ROOT,
        env={**BARE_ENV, "HEPGG_DATA_DIR": str(tmp_path), "DEBUG": "false"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("hepgg: SECRET_KEY is not set.")
    assert "Traceback" not in result.stderr
