"""What schemathesis found, kept as explicit cases (each failed before its fix)."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.conftest import Member

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "path",
    [
        "/keys/null,null",
        "/keys/%0AId",  # a newline in the id
        "/keys/",
        "/keys/a/b",
        "/sync/machines/null,null",
        "/sync/machines/%F3%BD%B4%B4%C3%84P%0A%C3%A0",
        "/sync/machines/",
    ],
)
def test_a_malformed_id_is_the_account_apis_json_404(
    client: Client, member: Member, path: str
) -> None:
    # Found: Django's own HTML 404 page answered, not the account API's {"error": ...}.
    response = client.delete(path, **member.auth)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert set(response.json()) == {"error"}


def test_a_malformed_id_without_a_token_is_still_a_401_first(client: Client) -> None:
    response = client.delete("/keys/null,null")
    assert response.status_code == 401
    assert "master token" in response.json()["error"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "TRACE", "QUERY"])
def test_the_public_catalog_answers_other_methods_with_405(client: Client, method: str) -> None:
    # Found: TRACE /models answered 200 with the catalog, and QUERY got CSRF's HTML 403.
    response = client.generic(method, "/models")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
