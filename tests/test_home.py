"""``GET /``: a newcomer who opens the start banner's URL finds a page, not a 404."""

from __future__ import annotations

import pytest
from django.test import Client


@pytest.mark.django_db
def test_the_home_page_says_what_hepgg_is_and_links_everything(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "open-source AI gateway" in page
    for link in ('href="/admin/"', 'href="/models"', 'href="/skills/"', 'href="/healthz"'):
        assert link in page
    for path in ("/admin/login/", "/models", "/skills/", "/healthz"):  # and each link works
        assert client.get(path).status_code == 200, path


@pytest.mark.django_db
def test_the_admin_is_branded_and_its_view_site_link_lands_on_the_home_page(
    client: Client, admin_user
) -> None:
    client.force_login(admin_user)
    page = client.get("/admin/").content.decode()
    assert "hepgg dashboard" in page
    assert 'href="/"' in page  # "View site"
