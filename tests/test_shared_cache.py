"""The shared cache's contract in one process: a warm lookup costs no query, a change made
anywhere on the host reaches this process's copies, and a value loaded while a change was being
made is not kept. (Across processes and servers: tests/accounts/test_revocation_is_immediate.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from asgiref.sync import async_to_sync
from django.test import override_settings

from accounts.credentials import aresolve, resolve
from accounts.tokens import Kind
from hepgg.lib import sharedcache
from tests.conftest import Member
from tests.servers import ROOT, server_env

pytestmark = pytest.mark.django_db


@pytest.mark.django_db(transaction=True)  # aresolve's load closes its connection afterwards
@pytest.mark.parametrize("redis", ["as_configured", "without_redis"])
def test_a_warm_lookup_makes_no_query_sync_or_async(
    member: Member, django_assert_num_queries, settings, redis: str
) -> None:
    if redis == "without_redis":
        settings.REDIS_URL = ""
    with django_assert_num_queries(1):
        assert resolve(member.master_token, Kind.MASTER) is not None
    with django_assert_num_queries(0):
        for _ in range(3):
            assert resolve(member.master_token, Kind.MASTER).account_id == member.account.id

    _key, token = _machine(member)
    # ``async_to_sync`` runs the thread-sensitive database load in this thread: it is counted.
    with django_assert_num_queries(1):
        assert async_to_sync(aresolve)(token, Kind.PROXY) is not None
    with django_assert_num_queries(0):
        for _ in range(3):
            assert async_to_sync(aresolve)(token, Kind.PROXY).account_id == member.account.id


def _machine(member: Member) -> tuple[object, str]:
    from accounts.services import machine_register

    return machine_register(account=member.account, hostname="box")


@override_settings(REDIS_URL="")
def test_a_value_loaded_while_something_changed_is_not_kept() -> None:
    loads: list[int] = []

    def load_during_a_change() -> dict[str, int]:
        loads.append(1)
        if len(loads) == 1:
            sharedcache.delete("another-key")  # as a revoke committing meanwhile would
        return {"load": len(loads)}

    assert sharedcache.fetch("k", load_during_a_change, 60) == {"load": 1}
    assert sharedcache.fetch("k", load_during_a_change, 60) == {"load": 2}  # not kept: reloaded
    assert sharedcache.fetch("k", load_during_a_change, 60) == {"load": 2}  # kept
    assert len(loads) == 2


@override_settings(REDIS_URL="")
def test_a_change_in_another_process_drops_this_process_copies() -> None:
    loads: list[int] = []

    def load() -> list[int]:
        loads.append(1)
        return [len(loads)]

    assert sharedcache.fetch("k", load, 60) == [1]
    assert sharedcache.fetch("k", load, 60) == [1]
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); "
            "from hepgg.lib import sharedcache; sharedcache.delete('anything')",
        ],
        cwd=ROOT,
        env={**server_env({"REDIS_URL": ""})},
        check=True,
        timeout=60,
    )
    assert sharedcache.fetch("k", load, 60) == [2]


def test_the_marker_changes_with_every_change_and_stays_small(settings) -> None:
    seen = {sharedcache.marker()}
    for _ in range(50):  # many within one clock tick: the size tells them apart
        sharedcache.delete("k")
        seen.add(sharedcache.marker())
    assert len(seen) == 51

    path = settings.DATA_DIR / sharedcache.MARKER_NAME
    with path.open("ab") as marker:
        marker.write(b"." * (1024 * 1024))
    before = sharedcache.marker()
    sharedcache.delete("k")  # this one rotates the file
    assert sharedcache.marker() not in (before, *seen)
    assert os.stat(path).st_size < 1024
