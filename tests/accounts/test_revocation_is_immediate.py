"""Ending a credential takes effect on the very next request, in every server process, in both
deployments: daphne without Redis (the embedded default) and three uvicorn workers on PostgreSQL
and Redis (production).

Every test first warms every cache: at least 20 requests, and more until each worker has answered
some (told apart by the pid on its access log lines). Then it ends the credential one of the ways
an operator or a user can, and sends 20 more requests, again until each worker has answered some:
every one of them gets the contract's refusal, and nothing reaches an upstream.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.test import Client

from accounts.models import Account, ApiKey, Machine, SkillsAccessKey
from accounts.services import api_key_mint, machine_register, skills_key_issue
from catalog.models import CatalogModel
from skills.models import Skill
from skills.services import skills_import
from tests import surfaces
from tests.conftest import IN_CI, Member
from tests.llm_gateway.conftest import gateway_env
from tests.llm_gateway.fake_upstream import FakeUpstream
from tests.proxy.conftest import FakeAnthropic, serve_fake_anthropic
from tests.servers import ROOT, ServerProcess, on_every_worker, start_hepgg
from tests.surfaces import (
    INVALID_API_KEY,
    NOT_FOUND,
    Answer,
    Send,
    assert_account_api_refusals,
    assert_all,
    assert_proxy_refusals,
)
from usage.models import UsageEvent

pytestmark = pytest.mark.django_db(transaction=True)

WORKERS = 3


@dataclass
class Site:
    deployment: str
    server: ServerProcess
    openai_upstream: FakeUpstream
    anthropic_upstream: FakeAnthropic

    @property
    def url(self) -> str:
        return self.server.base_url

    def v1_chat(self, key: str, closing: list[Any]) -> Send:
        return surfaces.v1_chat(self.url, key, closing)

    def proxy_messages(self, token: str, closing: list[Any]) -> Send:
        return surfaces.proxy_messages(self.url, token, closing)

    def account_api(self, token: str) -> Send:
        return surfaces.account_api(self.url, token)

    def skills_read(self, path: str) -> Send:
        return surfaces.skills_read(self.url, path)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeUpstream, FakeAnthropic]]:
    openai_upstream = FakeUpstream()
    openai_upstream.start()
    with serve_fake_anthropic() as anthropic_upstream:
        yield openai_upstream, anthropic_upstream
    openai_upstream.stop()


def _production_services_or_skip() -> None:
    missing = []
    if not settings.REDIS_URL:
        missing.append("REDIS_URL")
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        missing.append("PostgreSQL")
    if missing:
        message = f"the production deployment needs {' and '.join(missing)}"
        pytest.fail(message) if IN_CI else pytest.skip(message)


@pytest.fixture(scope="module", params=["embedded", "production"])
def site(
    request: pytest.FixtureRequest,
    django_db_setup: None,
    django_db_blocker: Any,
    upstreams: tuple[FakeUpstream, FakeAnthropic],
) -> Iterator[Site]:
    """One server per deployment for the module: each test ends credentials of its own."""
    openai_upstream, anthropic_upstream = upstreams
    env = {**gateway_env(openai_upstream), "ANTHROPIC_UPSTREAM_URL": anthropic_upstream.url}
    if request.param == "embedded":
        kwargs: dict[str, Any] = {"server": "daphne", "env": {**env, "REDIS_URL": ""}}
    else:
        _production_services_or_skip()
        kwargs = {"server": "uvicorn", "workers": WORKERS, "env": env}
    with django_db_blocker.unblock():
        server = start_hepgg(**kwargs)
    yield Site(request.param, server, openai_upstream, anthropic_upstream)
    server.stop()


def warm(site: Site, send: Send, path: str) -> int:
    """At least 20 requests, until every worker has answered (and so cached) the credential;
    returns how many."""
    answers = on_every_worker(site.server, send, path=path)
    assert {answer.status for answer in answers} == {200}, answers[:3]
    return len(answers)


def usage_written(account: Account, count: int, *, timeout: float = 30) -> None:
    """Until the servers have written ``count`` usage events of ``account``: deleting rows that
    buffered events still point at is another matter (metering's), not this module's."""
    deadline = time.monotonic() + timeout
    while UsageEvent.objects.filter(account=account).count() < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} usage events after {timeout} s")
        time.sleep(0.05)


def after(site: Site, send: Send, path: str) -> list[Answer]:
    """At least 20 requests, until every worker has answered one."""
    return on_every_worker(site.server, send, path=path)


# -- setting up, through the server where a user would --------------------------------------
def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def mint_through_the_api(site: Site, member: Member) -> tuple[str, str]:
    minted = httpx.post(
        f"{site.url}/keys",
        json={"model": "cf-gpt-oss-20b", "name": "revocation"},
        headers=bearer(member.master_token),
    )
    assert minted.status_code == 201
    return minted.json()["id"], minted.json()["key"]


def register_through_the_api(site: Site, member: Member) -> tuple[str, str]:
    registered = httpx.post(
        f"{site.url}/sync/machines",
        json={"hostname": "box", "platform": "linux", "ccas_version": "0.1.0"},
        headers=bearer(member.master_token),
    )
    assert registered.status_code == 201
    return registered.json()["id"], registered.json()["proxy_token"]


def publish(account: Account, *, visibility: str = "public") -> str:
    """A skill of ``account`` under a name of this test's own; its name."""
    name = f"revocation-{secrets.token_hex(4)}"
    skill_md = f"---\nname: {name}\ndescription: A skill to revoke.\n---\n\nBody.\n".encode()
    skills_import(account=account, files={"SKILL.md": skill_md}, visibility=visibility)
    return name


# -- API delete ----------------------------------------------------------------------------------
def test_an_api_key_deleted_through_the_api_is_refused_on_v1_at_once(
    site: Site, member: Member, catalog_model: CatalogModel, closing: list[Any]
) -> None:
    key_id, key = mint_through_the_api(site, member)
    send = site.v1_chat(key, closing)
    warm(site, send, "/v1/")
    upstream_calls = len(site.openai_upstream.requests)

    deleted = httpx.delete(f"{site.url}/keys/{key_id}", headers=bearer(member.master_token))
    assert deleted.status_code == 204

    assert_all(after(site, send, "/v1/"), INVALID_API_KEY)
    assert len(site.openai_upstream.requests) == upstream_calls


def test_a_machine_deleted_through_the_api_is_refused_on_the_proxy_at_once(
    site: Site, member: Member, closing: list[Any]
) -> None:
    machine_id, token = register_through_the_api(site, member)
    send = site.proxy_messages(token, closing)
    warm(site, send, "/anthropic/")
    upstream_calls = len(site.anthropic_upstream.requests)

    deleted = httpx.delete(
        f"{site.url}/sync/machines/{machine_id}", headers=bearer(member.master_token)
    )
    assert deleted.status_code == 204

    assert_proxy_refusals(after(site, send, "/anthropic/"))
    assert len(site.anthropic_upstream.requests) == upstream_calls


# -- operator command ----------------------------------------------------------------------------
def test_a_master_token_rotated_by_the_operator_command_is_refused_at_once(
    site: Site, member: Member
) -> None:
    send = site.account_api(member.master_token)
    warm(site, send, "/me")

    rotated = subprocess.run(
        [sys.executable, "manage.py", "rotate_master_token", member.account.email, "--json"],
        cwd=ROOT,
        env=site.server.env,  # the server's database, and its Redis if it has one
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    new_token = json.loads(rotated.stdout)["master_token"]

    assert_account_api_refusals(after(site, send, "/me"))
    assert site.account_api(new_token)().status == 200


# -- admin actions -------------------------------------------------------------------------------
def test_a_master_token_rotated_in_the_admin_is_refused_at_once(
    site: Site, member: Member, admin_client: Client
) -> None:
    send = site.account_api(member.master_token)
    warm(site, send, "/me")

    page = admin_client.post(f"/admin/accounts/account/{member.account.pk}/rotate-master-token/")
    assert page.status_code == 200

    assert_account_api_refusals(after(site, send, "/me"))


def test_an_api_key_disabled_by_the_admin_action_is_refused_at_once(
    site: Site, member: Member, catalog_model: CatalogModel, admin_client: Client, closing
) -> None:
    key, secret = api_key_mint(account=member.account, model=catalog_model.slug)
    send = site.v1_chat(secret, closing)
    warm(site, send, "/v1/")

    admin_client.post(
        "/admin/accounts/apikey/", {"action": "disable_keys", "_selected_action": [key.pk]}
    )

    assert_all(after(site, send, "/v1/"), INVALID_API_KEY)


def test_machines_revoked_by_the_admin_action_are_refused_at_once(
    site: Site, member: Member, admin_client: Client, closing: list[Any]
) -> None:
    machine, token = machine_register(account=member.account, hostname="box")
    send = site.proxy_messages(token, closing)
    warm(site, send, "/anthropic/")

    admin_client.post(
        "/admin/accounts/machine/", {"action": "revoke_machines", "_selected_action": [machine.pk]}
    )

    assert_proxy_refusals(after(site, send, "/anthropic/"))


def test_a_skills_key_revoked_in_the_admin_gets_404_at_once(
    site: Site, member: Member, admin_client: Client
) -> None:
    name = publish(member.account, visibility="private")
    row, key = skills_key_issue(account=member.account)
    send = site.skills_read(f"k/{key}/{name}/SKILL.md")
    warm(site, send, "/skills/k/")

    admin_client.post(
        "/admin/accounts/skillsaccesskey/", {"action": "revoke_keys", "_selected_action": [row.pk]}
    )

    assert_all(after(site, send, "/skills/k/"), NOT_FOUND)


# -- admin delete, single and bulk --------------------------------------------------------------
def test_an_api_key_deleted_on_its_admin_page_is_refused_at_once(
    site: Site, member: Member, catalog_model: CatalogModel, admin_client: Client, closing
) -> None:
    key, secret = api_key_mint(account=member.account, model=catalog_model.slug)
    send = site.v1_chat(secret, closing)
    usage_written(member.account, warm(site, send, "/v1/"))

    deleted = admin_client.post(f"/admin/accounts/apikey/{key.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302
    assert not ApiKey.objects.filter(pk=key.pk).exists()

    assert_all(after(site, send, "/v1/"), INVALID_API_KEY)


def test_machines_deleted_in_bulk_in_the_admin_are_refused_at_once(
    site: Site, member: Member, admin_client: Client, closing: list[Any]
) -> None:
    machines = [machine_register(account=member.account, hostname=h) for h in ("a", "b")]
    sends = [site.proxy_messages(token, closing) for _machine, token in machines]
    usage_written(member.account, sum(warm(site, send, "/anthropic/") for send in sends))

    deleted = admin_client.post(
        "/admin/accounts/machine/",
        {
            "action": "delete_selected",
            "_selected_action": [machine.pk for machine, _token in machines],
            "post": "yes",
        },
    )
    assert deleted.status_code == 302
    assert not Machine.objects.exists()

    for send in sends:
        assert_proxy_refusals(after(site, send, "/anthropic/"))


# -- the account --------------------------------------------------------------------------------
def test_deleting_the_account_ends_every_credential_and_skill_at_once(
    site: Site, member: Member, catalog_model: CatalogModel, admin_client: Client, closing
) -> None:
    account = member.account
    _key, api_key = api_key_mint(account=account, model=catalog_model.slug)
    _machine, proxy_token = machine_register(account=account, hostname="box")
    _row, skills_key = skills_key_issue(account=account)
    private, public = publish(account, visibility="private"), publish(account)
    checks = [
        (site.account_api(member.master_token), "/me"),
        (site.v1_chat(api_key, closing), "/v1/"),
        (site.proxy_messages(proxy_token, closing), "/anthropic/"),
        (site.skills_read(f"k/{skills_key}/{private}/SKILL.md"), "/skills/k/"),
        (site.skills_read(f"{public}/SKILL.md"), f"/skills/{public}/"),
    ]
    served = {path: warm(site, send, path) for send, path in checks}
    usage_written(account, served["/v1/"] + served["/anthropic/"])
    assert public in httpx.get(f"{site.url}/skills/index.json").text

    deleted = admin_client.post(f"/admin/accounts/account/{account.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302
    assert not SkillsAccessKey.objects.exists() and not Skill.objects.exists()

    (master, _), (v1, _), (proxy, _), (private_read, _), (public_read, _) = checks
    assert_account_api_refusals(after(site, master, "/me"))
    assert_all(after(site, v1, "/v1/"), INVALID_API_KEY)
    assert_proxy_refusals(after(site, proxy, "/anthropic/"))
    assert_all(after(site, private_read, "/skills/k/"), NOT_FOUND)
    assert_all(after(site, public_read, f"/skills/{public}/"), NOT_FOUND)
    assert public not in httpx.get(f"{site.url}/skills/index.json").text


# -- moderation ---------------------------------------------------------------------------------
def test_a_hidden_skill_and_a_skill_made_private_stop_being_served_at_once(
    site: Site, member: Member, admin_client: Client
) -> None:
    hidden, private = publish(member.account), publish(member.account)
    _row, key = skills_key_issue(account=member.account)
    reads = {name: site.skills_read(f"{name}/SKILL.md") for name in (hidden, private)}
    for name, send in reads.items():
        warm(site, send, f"/skills/{name}/")
    index = site.skills_read("index.json")
    warm(site, index, "/skills/index.json")
    own = site.skills_read(f"k/{key}/{private}/SKILL.md")
    warm(site, own, "/skills/k/")

    for action, name in (("hide", hidden), ("make_private", private)):
        admin_client.post(
            "/admin/skills/skill/",
            {"action": action, "_selected_action": [Skill.objects.get(name=name).pk]},
        )

    for name, send in reads.items():
        assert_all(after(site, send, f"/skills/{name}/"), NOT_FOUND)
    for answer in after(site, index, "/skills/index.json"):
        assert hidden.encode() not in answer.body and private.encode() not in answer.body
    assert {answer.status for answer in after(site, own, "/skills/k/")} == {200}
