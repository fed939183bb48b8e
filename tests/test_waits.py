"""The wait helpers fail the test when what they wait for never comes."""

from __future__ import annotations

import time

import pytest

from accounts.services import account_create
from tests.waits import wait_for_events, wait_until
from usage.models import UsageEvent


def test_wait_until_raises_when_the_condition_never_holds() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError, match="timed out"):
        wait_until(lambda: None, timeout=0.2, what="nothing")
    assert time.monotonic() - started < 2


def test_wait_until_returns_the_first_truthy_value() -> None:
    values = iter([0, "", "found"])
    assert wait_until(lambda: next(values), timeout=2) == "found"


@pytest.mark.django_db
def test_wait_for_events_raises_when_no_event_is_written() -> None:
    with pytest.raises(AssertionError, match="1 usage event"):
        wait_for_events(1, timeout=0.2)


@pytest.mark.django_db
def test_wait_for_events_raises_when_there_are_more_events_than_expected() -> None:
    account, _ = account_create(email="twice@example.com")
    for _ in range(2):
        UsageEvent.objects.create(account=account, source="gateway")
    with pytest.raises(AssertionError, match="expected 1 usage event"):
        wait_for_events(1, timeout=0.2, settle=0)
    assert len(wait_for_events(2, timeout=0.2, settle=0)) == 2
