"""A large skill's zip is built once per process and kept (however many ask at once), and its
deflating runs off the thread that credential look-ups and sync views share."""

from __future__ import annotations

import asyncio
import io
import os
import zipfile
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from django.db import connections

from skills import registry
from skills.services import skills_import
from tests.conftest import Member

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture(autouse=True)
async def _close_the_shared_threads_connections() -> AsyncIterator[None]:
    """The registry reads on asgiref's shared thread, whose database connection would otherwise
    outlive the test and keep the test database from being dropped."""
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
def big_skill(transactional_db: None, member: Member) -> str:
    skills_import(
        account=member.account,
        files={
            "SKILL.md": b"---\nname: big-data\ndescription: a large skill\n---\n",
            "data/a.bin": os.urandom(6 * 1024 * 1024),  # incompressible: the zip is ~12 MiB,
            "data/b.bin": os.urandom(6 * 1024 * 1024),  # over an eighth of the blob cache
        },
        visibility="public",
    )
    registry.clear_local()
    return "big-data"


async def test_a_large_zip_is_built_once_for_32_concurrent_requests(big_skill: str) -> None:
    version = await registry.alookup(big_skill, None, None)
    assert version is not None
    before = registry.zip_builds
    zips = await asyncio.gather(*(registry.azip_get(version, root=False) for _ in range(32)))
    assert registry.zip_builds == before + 1
    assert len({id(z) for z in zips}) == 1
    again = await registry.azip_get(version, root=False)
    assert again is zips[0] and registry.zip_builds == before + 1  # kept, not rebuilt
    names = zipfile.ZipFile(io.BytesIO(again)).namelist()
    assert sorted(names) == ["big-data/SKILL.md", "big-data/data/a.bin", "big-data/data/b.bin"]


async def test_the_event_loop_keeps_answering_while_a_large_zip_is_built(big_skill: str) -> None:
    version = await registry.alookup(big_skill, None, None)
    assert version is not None
    build = asyncio.ensure_future(registry.azip_get(version, root=True))
    ticks = 0
    while not build.done():
        await asyncio.sleep(0.005)
        ticks += 1
    await build
    assert ticks > 1  # the loop ran other work while the zip was deflated
