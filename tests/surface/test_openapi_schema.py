"""``GET /api/schema/`` is OpenAPI 3.1 covering the account API, ``/models`` and ``/v1``, with
every security scheme named and the contract's error shapes; ``/api/docs/`` is served from our own
static files; and the hand-written ``/v1`` part matches what the live ``/v1`` app serves."""

from __future__ import annotations

import re

import httpx
import pytest
from django.test import Client
from django.urls import Resolver404, resolve

from accounts.services import api_key_mint
from catalog.models import CatalogModel
from tests.conftest import Member
from tests.servers import ServerProcess
from tests.surface.openapi import assert_response_matches

pytestmark = pytest.mark.django_db

PUBLIC_PATHS = {"/models", "/prices"}  # no credential; /prices once its view exists


@pytest.fixture
def schema(client: Client) -> dict:
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def test_the_schema_is_openapi_3_1_and_names_every_surface(schema: dict) -> None:
    assert schema["openapi"] == "3.1.0"
    for path in [
        "/me",
        "/keys",
        "/keys/{public_id}",
        "/sync/machines",
        "/sync/machines/{public_id}",
        "/usage",
        "/models",
        "/v1/models",
        "/v1/models/{model}",
        "/v1/chat/completions",
    ]:
        assert path in schema["paths"], path


def test_every_operation_names_its_security_scheme(schema: dict) -> None:
    schemes = schema["components"]["securitySchemes"]
    assert schemes["masterToken"]["scheme"] == "bearer"
    assert schemes["apiKey"]["scheme"] == "bearer"
    for path, item in schema["paths"].items():
        for method, op in item.items():
            expected = (
                [{"apiKey": []}]
                if path.startswith("/v1/")
                else []
                if path in PUBLIC_PATHS
                else [{"masterToken": []}]
            )
            assert op.get("security", []) == expected, f"{method} {path}"


def test_refusals_are_documented_in_the_contracts_shapes(schema: dict) -> None:
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if op.get("security") == []:
                continue
            unauthorized = op["responses"]["401"]["content"]["application/json"]["schema"]
            wanted = "InvalidApiKey" if path.startswith("/v1/") else "AccountApiError"
            assert unauthorized["$ref"].endswith(f"/{wanted}"), f"{method} {path}"
    invalid = schema["components"]["schemas"]["InvalidApiKey"]
    assert invalid["properties"]["error"] == {"const": "Invalid API key"}
    assert schema["components"]["schemas"]["AccountApiError"]["required"] == ["error"]


def test_every_django_path_in_the_schema_resolves(schema: dict) -> None:
    for path in schema["paths"]:
        if path.startswith("/v1/"):
            continue
        concrete = re.sub(r"\{[^}]+\}", "0b9b6a4e-7a43-4c43-9c9c-0d0d0d0d0d0d", path)
        try:
            resolve(concrete)
        except Resolver404:
            pytest.fail(f"{path} is in the schema but no URL pattern serves it")


def test_the_docs_page_loads_its_assets_from_our_own_static_files(client: Client) -> None:
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any("swagger-ui" in s for s in sources), sources
    for source in sources:
        assert not source.startswith(("http://", "https://", "//")), source
    for asset in (s for s in sources if s.startswith("/static/")):
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert b"".join(response.streaming_content), asset
        response.close()


def test_the_home_page_links_the_api_docs(client: Client) -> None:
    assert b'href="/api/docs/"' in client.get("/").content


def test_account_api_answers_match_the_schema(schema: dict, member: Member, client: Client) -> None:
    CatalogModel.objects.get_or_create(
        slug="cf-gpt-oss-20b",
        defaults={"provider": "cloudflare", "upstream_model": "@cf/openai/gpt-oss-20b"},
    )
    auth = member.auth
    cases = [
        ("get", "/me", "/me", {}, None),
        ("get", "/keys", "/keys", {}, None),
        ("post", "/keys", "/keys", auth, {"model": "cf-gpt-oss-20b", "name": "ci"}),
        ("post", "/keys", "/keys", auth, {"model": "no-such-model"}),
        ("post", "/sync/machines", "/sync/machines", auth, {"hostname": "box"}),
        ("get", "/sync/machines", "/sync/machines", {}, None),
        ("get", "/usage", "/usage?group_by=model", {}, None),
        ("get", "/usage", "/usage?since=yesterday", {}, None),
        ("get", "/models", "/models", {}, None),
    ]
    for method, documented, url, _, data in cases:
        for headers in (auth, {}):
            kwargs = {"data": data, "content_type": "application/json"} if data else {}
            response = getattr(client, method)(url, **headers, **kwargs)
            body = response.json() if response.content else None
            assert_response_matches(schema, documented, method, response.status_code, body)
    gone = client.delete("/keys/0b9b6a4e-7a43-4c43-9c9c-0d0d0d0d0d0d", **auth)
    assert gone.status_code == 404
    assert_response_matches(schema, "/keys/{public_id}", "delete", 404, gone.json())


# -- the hand-written /v1 part against the live /v1 app ------------------------------------------

# OpenAI paths the gateway does not serve: if one starts being dispatched, it must be documented.
UNDOCUMENTED_OPENAI_PATHS = [
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/audio/speech",
    "/v1/files",
    "/v1/batches",
    "/v1/chat",
    "/v1/",
]
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@pytest.fixture
def live(hepgg_server, catalog_model: CatalogModel) -> ServerProcess:
    return hepgg_server()


def _v1_paths(schema: dict) -> dict[str, list[str]]:
    return {p: [m.upper() for m in ops] for p, ops in schema["paths"].items() if p[:4] == "/v1/"}


def test_every_documented_v1_operation_is_served_and_answers_as_documented(
    schema: dict, live: ServerProcess, member: Member, catalog_model: CatalogModel
) -> None:
    _, key = api_key_mint(account=member.account, model=catalog_model.slug, name="schema")
    bearer = {"authorization": f"Bearer {key}"}
    requests = {
        ("GET", "/v1/models"): [("/v1/models", bearer, None), ("/v1/models", {}, None)],
        ("GET", "/v1/models/{model}"): [
            (f"/v1/models/{catalog_model.slug}", bearer, None),
            ("/v1/models/not-mine", bearer, None),
            (f"/v1/models/{catalog_model.slug}", {"authorization": "Bearer hyd_x"}, None),
        ],
        ("POST", "/v1/chat/completions"): [
            ("/v1/chat/completions", bearer, {"model": "not-mine", "messages": [{}]}),
            ("/v1/chat/completions", bearer, {"model": catalog_model.slug}),
            ("/v1/chat/completions", {}, {"model": catalog_model.slug, "messages": [{}]}),
        ],
    }
    documented = {(m, p) for p, methods in _v1_paths(schema).items() for m in methods}
    assert documented == set(requests), "every documented /v1 operation needs a request here"
    with httpx.Client(base_url=live.base_url, timeout=10) as http:
        for (method, template), calls in requests.items():
            for url, headers, body in calls:
                response = http.request(method, url, headers=headers, json=body)
                assert response.status_code not in (405,), (method, url)
                assert response.json().get("error", {}) != {} or response.status_code == 200
                if isinstance(response.json().get("error"), dict):
                    assert response.json()["error"]["code"] != "unknown_url", (method, url)
                assert_response_matches(
                    schema, template, method, response.status_code, response.json()
                )


def test_every_path_and_method_the_v1_app_serves_is_documented(
    schema: dict, live: ServerProcess
) -> None:
    documented = _v1_paths(schema)
    with httpx.Client(base_url=live.base_url, timeout=10) as http:
        for template, methods in documented.items():
            url = template.replace("{model}", "some-model")
            for method in ALL_METHODS:
                if method in methods:
                    continue
                response = http.request(method, url)
                assert response.status_code == 405, (method, url, response.text)
                assert_response_matches(schema, template, methods[0], 405, response.json())
        for url in UNDOCUMENTED_OPENAI_PATHS:
            assert url not in documented
            for method in ("GET", "POST"):
                response = http.request(method, url)
                assert response.status_code == 404, (method, url)
                assert response.json()["error"]["code"] == "unknown_url", (method, url)
