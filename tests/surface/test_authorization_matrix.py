"""The authorization matrix: one row per endpoint of both sites, each called against a live
hepgg with no credential, with every wrong type of credential, with a second account's
credential of the right type against the first account's objects, and with a revoked credential.
Each call must get its surface's refusal and never any of the first account's data; the owner's
own credential must work (so that a refusal is not the only thing an endpoint can say).

``test_every_url_pattern_has_a_row`` fails when a URL pattern (Django's resolver, plus the ASGI
routes of ``llm_gateway.routing`` and ``proxy.routing``) is added without a row here. A new
endpoint is one more ``Row``: ``GET /prices`` and ``/ccas/install.sh`` are public rows,
``POST /sync/usage`` a master-token row.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from accounts.models import ApiKey, Machine
from accounts.services import (
    api_key_mint,
    machine_register,
    master_token_rotate,
    skills_key_issue,
)
from accounts.tokens import Kind
from catalog.models import CatalogModel
from llm_gateway.routing import urlpatterns as gateway_routes
from proxy.routing import urlpatterns as proxy_routes
from skills.models import Skill
from skills.services import skills_import
from tests.conftest import Member
from tests.servers import ServerProcess
from usage.models import UsageEvent

SKILLS_HOST = "skills.matrix.test"


@dataclass
class Cast:
    """One account's credentials and objects."""

    master: str
    api_key: str
    proxy: str
    skills: str
    email: str = ""
    key_id: str = ""
    machine_id: str = ""
    spare_key_id: str = ""  # what the owner's own DELETE removes
    spare_machine_id: str = ""
    revoked: dict[Kind, str] = field(default_factory=dict)
    markers: list[str] = field(default_factory=list)  # strings that identify its data

    def credential(self, kind: Kind) -> str:
        return {
            Kind.MASTER: self.master,
            Kind.API_KEY: self.api_key,
            Kind.PROXY: self.proxy,
            Kind.SKILLS: self.skills,
        }[kind]


def _skill_md(name: str, description: str) -> bytes:
    return f"---\nname: {name}\ndescription: {description}\n---\n\n# {name}\n".encode()


def _cast(member: Member, model: CatalogModel, *, skill: str, revoked: bool) -> Cast:
    account = member.account
    key, api_key = api_key_mint(account=account, model=model.slug, name=f"{skill}-key")
    machine, proxy = machine_register(account=account, hostname=f"{skill}-host")
    _, skills = skills_key_issue(account=account, name="matrix")
    skills_import(
        account=account,
        files={"SKILL.md": _skill_md(skill, f"{skill} private notes")},
        visibility="private",
    )
    UsageEvent.objects.create(account=account, source="gateway", model=model.slug, input_tokens=7)
    spare_key, _ = api_key_mint(account=account, model=model.slug, name="spare")
    spare_machine, _ = machine_register(account=account, hostname="spare")
    cast = Cast(
        email=account.email,
        spare_key_id=str(spare_key.public_id),
        spare_machine_id=str(spare_machine.public_id),
        master=member.master_token,
        api_key=api_key,
        proxy=proxy,
        skills=skills,
        key_id=str(key.public_id),
        machine_id=str(machine.public_id),
        markers=[
            account.email,
            str(account.public_id),
            str(key.public_id),
            str(machine.public_id),
            key.prefix,
            machine.prefix,
            f"{skill}-host",
            f"{skill} private notes",
        ],
    )
    if revoked:
        _, fresh = master_token_rotate(account=account)
        cast.revoked[Kind.MASTER], cast.master = cast.master, fresh
        gone, cast.revoked[Kind.API_KEY] = api_key_mint(account=account, model=model.slug)
        gone.disable()
        gone_machine, cast.revoked[Kind.PROXY] = machine_register(account=account, hostname="old")
        gone_machine.revoke()
        gone_skills, cast.revoked[Kind.SKILLS] = skills_key_issue(account=account, name="old")
        gone_skills.revoke()
    cast.markers += [cast.master, cast.api_key, cast.proxy, cast.skills]
    return cast


# -- the surfaces' refusals ----------------------------------------------------------------------
def _account_api_refusal(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert set(body) == {"error"} and "master token" in body["error"], body


def _v1_refusal(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"] == "Invalid API key" and set(body) <= {"error", "hint"}, body


def _proxy_refusal(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error", body


def _capability_refusal(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text


def _admin_refusal(response: httpx.Response) -> None:
    assert response.status_code == 302, response.text
    assert response.headers["location"].startswith("/admin/login/"), response.headers


@dataclass
class Row:
    """One endpoint. ``path`` may hold ``{cred}`` (a credential in the path), ``{key_id}``,
    ``{machine_id}``, ``{private}`` (the owner's private skill) and ``{public}``."""

    patterns: tuple[str, ...]  # the URL patterns this row stands for
    method: str
    path: str
    kind: Kind | None  # the credential that opens it; None: public
    refusal: Callable[[httpx.Response], None] | None = None
    body: Any = None
    content_type: str = "application/json"
    # With a second account's right credential: "refused", or "own-data" (answers for its own
    # account, so it must show none of the first's), or "name-taken" (imports).
    cross_account: str = "own-data"
    owner_ok: tuple[int, ...] = (200,)
    skills_site: bool = False


_SKILL_READS = [
    ("", "/"),
    ("llms.txt", "/llms.txt"),
    ("index.json", "/index.json"),
    (".well-known/skills/index.json", "/.well-known/skills/index.json"),
    (".well-known/agent-skills/index.json", "/.well-known/agent-skills/index.json"),
    (".well-known/<space:space>/<ref:ref>.zip", "/.well-known/agent-skills/{private}.zip"),
    (".well-known/<space:space>/<ref:ref>/<path:path>", "/.well-known/skills/{private}/SKILL.md"),
    ("<ref:ref>.zip", "/{private}.zip"),
    ("<ref:ref>", "/{private}"),
    ("<ref:ref>/", "/{private}/"),
    ("<ref:ref>/<path:path>", "/{private}/SKILL.md"),
]

ROWS: list[Row] = [
    # gateway site, public
    Row(("",), "GET", "/", None),
    Row(("healthz",), "GET", "/healthz", None),
    Row(("readyz",), "GET", "/readyz", None),
    Row(("models",), "GET", "/models", None),
    Row(("api/schema/",), "GET", "/api/schema/", None),
    Row(("api/docs/",), "GET", "/api/docs/", None),
    Row(("prices",), "GET", "/prices", None),
    Row(("ccas/install.sh",), "GET", "/ccas/install.sh", None),
    Row(("ccas/ccas.pyz",), "GET", "/ccas/ccas.pyz", None),
    Row(("ccas/ccas.pyz.sha256",), "GET", "/ccas/ccas.pyz.sha256", None),
    # the dashboard: a session, never a bearer credential
    Row(("admin/",), "GET", "/admin/accounts/account/", None, refusal=_admin_refusal),
    Row(("admin/analytics/",), "GET", "/admin/analytics/", None, refusal=_admin_refusal),
    Row(
        ("admin/analytics/export.csv",),
        "GET",
        "/admin/analytics/export.csv",
        None,
        refusal=_admin_refusal,
    ),
    # account API
    Row(("me",), "GET", "/me", Kind.MASTER, _account_api_refusal),
    Row(("keys",), "GET", "/keys", Kind.MASTER, _account_api_refusal),
    Row(
        ("keys",),
        "POST",
        "/keys",
        Kind.MASTER,
        _account_api_refusal,
        body={"model": "cf-gpt-oss-20b", "name": "matrix"},
        owner_ok=(201,),
    ),
    Row(
        ("^keys/(?P<public_id>[\\s\\S]*)\\Z",),
        "DELETE",
        "/keys/{key_id}",
        Kind.MASTER,
        _account_api_refusal,
        cross_account="refused-404",
        owner_ok=(204,),
    ),
    Row(("sync/machines",), "GET", "/sync/machines", Kind.MASTER, _account_api_refusal),
    Row(
        ("sync/machines",),
        "POST",
        "/sync/machines",
        Kind.MASTER,
        _account_api_refusal,
        body={"hostname": "matrix"},
        owner_ok=(201,),
    ),
    Row(
        ("^sync/machines/(?P<public_id>[\\s\\S]*)\\Z",),
        "DELETE",
        "/sync/machines/{machine_id}",
        Kind.MASTER,
        _account_api_refusal,
        cross_account="refused-404",
        owner_ok=(204,),
    ),
    Row(("usage",), "GET", "/usage?group_by=model", Kind.MASTER, _account_api_refusal),
    Row(("sync/usage",), "GET", "/sync/usage", Kind.MASTER, _account_api_refusal),
    Row(
        ("sync/usage",),
        "POST",
        "/sync/usage",
        Kind.MASTER,
        _account_api_refusal,
        body={"machine_id": "{machine_id}", "records": []},
        cross_account="refused-404",
    ),
    Row(("sync/rate-limits",), "GET", "/sync/rate-limits", Kind.MASTER, _account_api_refusal),
    # /v1 (bare ASGI); an API key is its own object: a second account's key opens its own model
    Row(("^v1/",), "GET", "/v1/models", Kind.API_KEY, _v1_refusal),
    Row(("^v1/",), "GET", "/v1/models/cf-gpt-oss-20b", Kind.API_KEY, _v1_refusal),
    Row(
        ("^v1/",),
        "POST",
        "/v1/chat/completions",
        Kind.API_KEY,
        _v1_refusal,
        body={"model": "cf-gpt-oss-20b", "messages": [{"role": "user", "content": "hi"}]},
        owner_ok=(503,),  # no upstream configured here: past authentication, before the provider
    ),
    # the Claude proxy (bare ASGI): the token is the path's first segment
    Row(
        ("^anthropic/",),
        "POST",
        "/anthropic/{cred}/v1/messages",
        Kind.PROXY,
        _proxy_refusal,
        body={"model": "claude", "messages": []},
        owner_ok=(502,),  # the upstream is a closed port: past authentication
    ),
    # skills site: public reads (the owner's private skill is invisible there)
    *[
        Row((f"skills/{pattern}",), "GET", path, None, skills_site=True)
        for pattern, path in _SKILL_READS
    ],
    # skills site: the same reads under a capability URL
    *[
        Row(
            (f"skills/k/<key:key>/{pattern}",),
            "GET",
            "/k/{cred}" + path,
            Kind.SKILLS,
            _capability_refusal,
            cross_account="refused-404" if "{private}" in path else "own-data",
            skills_site=True,
        )
        for pattern, path in _SKILL_READS
    ],
    Row(
        ("skills/k/<key:key>/import",),
        "POST",
        "/k/{cred}/import",
        Kind.SKILLS,
        _capability_refusal,
        body={"files": {"SKILL.md": _skill_md("{private}", "overwritten").decode()}},
        cross_account="name-taken",
        owner_ok=(201,),
        skills_site=True,
    ),
]


# -- coverage: every URL pattern has a row ------------------------------------------------------
def _patterns(entries: list[Any], prefix: str = "") -> set[str]:
    found: set[str] = set()
    for entry in entries:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            if route == "admin/":
                found.add(route)  # the dashboard is one row: a session guards all of it
            else:
                found |= _patterns(entry.url_patterns, route)
        elif isinstance(entry, URLPattern):
            found.add(route)
    return found


def every_pattern() -> set[str]:
    asgi = {str(p.pattern) for p in [*gateway_routes, *proxy_routes]}
    return _patterns(get_resolver().url_patterns) | asgi


def test_every_url_pattern_has_a_row() -> None:
    covered = {pattern for row in ROWS for pattern in row.patterns}
    missing = every_pattern() - covered
    assert not missing, f"URL patterns with no row in the authorization matrix: {sorted(missing)}"
    stale = covered - every_pattern()
    assert not stale, f"rows for URL patterns that no longer exist: {sorted(stale)}"


# -- the matrix ----------------------------------------------------------------------------------
class Caller:
    def __init__(self, server: ServerProcess, http: httpx.Client, owner: Cast, private: str):
        self.server, self.http, self.owner, self.private = server, http, owner, private

    def call(
        self, row: Row, credential: str | None, *, site_root: str, spare: bool = False
    ) -> httpx.Response:
        owner = self.owner
        path = row.path.format(
            cred=credential or "",
            key_id=owner.spare_key_id if spare else owner.key_id,
            machine_id=owner.spare_machine_id if spare else owner.machine_id,
            private=self.private,
        )
        headers: dict[str, str] = {}
        if credential is not None and "{cred}" not in row.path:
            headers["authorization"] = f"Bearer {credential}"
        if row.skills_site and site_root == "host":
            headers["host"] = SKILLS_HOST
        elif row.skills_site:
            path = "/skills" + path
        content = None
        if row.body is not None:
            content = (
                json.dumps(row.body)
                .replace("{private}", self.private)
                .replace("{machine_id}", owner.machine_id)
                .encode()
            )
        return self.http.request(
            row.method,
            path,
            headers={**headers, "content-type": row.content_type},
            content=content,
        )


def _assert_no_leak(response: httpx.Response, owner: Cast, what: str) -> None:
    text = response.text
    for marker in owner.markers:
        assert marker not in text, f"{what}: the response shows the owner's {marker!r}"


@pytest.fixture
def world(
    hepgg_server: Callable[..., ServerProcess],
    member: Member,
    other_member: Member,
    catalog_model: CatalogModel,
) -> Iterator[tuple[Caller, Cast, Cast]]:
    owner = _cast(member, catalog_model, skill="ada-private", revoked=True)
    intruder = _cast(other_member, catalog_model, skill="grace-private", revoked=False)
    server = hepgg_server(
        env={
            "SKILLS_HOSTS": SKILLS_HOST,
            "ANTHROPIC_UPSTREAM_URL": "http://127.0.0.1:9",  # discard port: nothing listens
            "CLOUDFLARE_ACCOUNT_ID": "",
            "CLOUDFLARE_API_TOKEN": "",
        }
    )
    with httpx.Client(base_url=server.base_url, timeout=20, follow_redirects=False) as http:
        yield Caller(server, http, owner, "ada-private"), owner, intruder


def test_every_endpoint_refuses_every_wrong_credential_and_leaks_nothing(world) -> None:
    caller, owner, intruder = world
    for row in ROWS:
        for site_root in ("host", "prefix") if row.skills_site else ("gateway",):
            where = f"{row.method} {row.path} ({site_root})"
            if row.kind is None:
                _check_public(caller, row, owner, intruder, site_root, where)
                continue
            assert row.refusal is not None
            refused = row.refusal
            attempts: list[tuple[str, str | None]] = [("no credential", None)]
            if "{cred}" in row.path:
                attempts = [("an empty credential", "-")]
            attempts += [
                (f"the owner's {kind.value}", owner.credential(kind))
                for kind in Kind
                if kind is not row.kind
            ]
            attempts.append((f"a revoked {row.kind.value}", owner.revoked[row.kind]))
            for label, credential in attempts:
                response = caller.call(row, credential, site_root=site_root)
                try:
                    refused(response)
                except AssertionError as exc:
                    raise AssertionError(f"{where} with {label}: {exc}") from None
                _assert_no_leak(response, owner, f"{where} with {label}")
            _check_cross_account(caller, row, owner, intruder, site_root, where)
            if (row.method, site_root) == ("DELETE", "gateway"):
                mine = caller.call(row, owner.credential(row.kind), site_root=site_root, spare=True)
            else:
                mine = caller.call(row, owner.credential(row.kind), site_root=site_root)
            assert mine.status_code in row.owner_ok, f"{where} as owner: {mine.text}"


def _check_public(caller, row, owner, intruder, site_root, where) -> None:
    for label, credential in [("nothing", None), *((k.value, owner.credential(k)) for k in Kind)]:
        if row.refusal is not None:  # the dashboard: a bearer credential is not a session
            response = caller.call(row, credential, site_root=site_root)
            row.refusal(response)
            _assert_no_leak(response, owner, f"{where} with {label}")
            continue
        response = caller.call(row, credential, site_root=site_root)
        assert response.status_code in (200, 404), f"{where} with {label}: {response.text}"
        if "{private}" in row.path:  # the owner's private skill, by name, without its key
            assert response.status_code == 404, f"{where} with {label}"
        _assert_no_leak(response, owner, f"{where} with {label}")


def _check_cross_account(caller, row, owner, intruder, site_root, where) -> None:
    response = caller.call(row, intruder.credential(row.kind), site_root=site_root)
    label = f"{where} with the second account's {row.kind.value}"
    if row.cross_account == "refused-404":
        assert response.status_code == 404, f"{label}: {response.text}"
    elif row.cross_account == "name-taken":
        assert response.status_code == 409, f"{label}: {response.text}"
        assert Skill.objects.get(name=caller.private).account.email == owner.email, label
    else:
        assert response.status_code in row.owner_ok, f"{label}: {response.text}"
    _assert_no_leak(response, owner, label)
    # the owner's objects are untouched
    assert ApiKey.objects.get(public_id=owner.key_id).active, label
    assert Machine.objects.get(public_id=owner.machine_id).active, label
