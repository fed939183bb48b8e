"""Fixtures of the skills tests: skill folders in the open format, archives built from them,
accounts with skills access keys, and clean caches around every test."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from accounts.models import Account, SkillsAccessKey
from accounts.services import skills_key_issue
from skills import registry

FIXTURES = Path(__file__).parent / "fixtures"


def skill_files(name: str) -> dict[str, bytes]:
    """A fixture skill's files, relative to its folder."""
    root = FIXTURES / name
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def make_zip(files: dict[str, bytes], *, prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, content in files.items():
            zf.writestr(prefix + path, content)
    return buffer.getvalue()


def make_tar_gz(files: dict[str, bytes], *, prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, content in files.items():
            info = tarfile.TarInfo(prefix + path)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@dataclass
class Publisher:
    """An account that publishes skills, with its capability key."""

    account: Account
    key: str
    key_row: SkillsAccessKey

    @property
    def root(self) -> str:
        return f"/skills/k/{self.key}/"

    def upload(
        self, client: Client, body: bytes, *, content_type: str = "application/zip", query: str = ""
    ):  # -> the test client's response
        return client.post(f"{self.root}import{query}", body, content_type=content_type)


@pytest.fixture(autouse=True)
def _fresh_skills_caches() -> Iterator[None]:
    registry.clear_local()
    _clear_shared()
    yield
    registry.clear_local()
    _clear_shared()


def _clear_shared() -> None:
    # With Redis the shared cache outlives a test's database; drop this app's entries.
    if settings.REDIS_URL:
        from hepgg.lib.redis import sync_redis

        client = sync_redis()
        for key in client.scan_iter("hepgg:cache:skills:*"):
            client.delete(key)


@pytest.fixture
def publisher(member) -> Publisher:
    row, key = skills_key_issue(account=member.account, name="tests")
    return Publisher(member.account, key, row)


@pytest.fixture
def other_publisher(other_member) -> Publisher:
    row, key = skills_key_issue(account=other_member.account, name="tests")
    return Publisher(other_member.account, key, row)
