"""The admin login is limited too (django-axes): failures from one address lock that address out
with 429 and Retry-After; other addresses log in as usual."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

pytestmark = pytest.mark.django_db


@override_settings(AXES_FAILURE_LIMIT=3)
def test_failed_admin_logins_lock_out_the_address_and_only_it() -> None:
    get_user_model().objects.create_superuser("root", "root@example.com", "right-password-9")
    attacker, admin = Client(REMOTE_ADDR="203.0.113.7"), Client(REMOTE_ADDR="198.51.100.2")
    wrong = {"username": "root", "password": "wrong", "next": "/admin/"}
    for _ in range(2):
        assert attacker.post("/admin/login/", wrong).status_code == 200  # the form, again
    locked = attacker.post("/admin/login/", wrong)
    assert locked.status_code == 429
    assert int(locked["Retry-After"]) > 0
    right = {"username": "root", "password": "right-password-9", "next": "/admin/"}
    assert attacker.post("/admin/login/", right).status_code == 429  # even the right password
    assert admin.post("/admin/login/", right).status_code == 302  # another address logs in
