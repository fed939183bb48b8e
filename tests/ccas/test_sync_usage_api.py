"""POST /sync/usage: each record validated on its own, duplicates counted once whoever sent them
first (the proxy, an earlier sync, another machine), caps on batch and body size; GET /sync/usage
lists the account's events page by page; GET /sync/rate-limits the machines' plan limits."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from django.test import Client

from accounts.services import api_key_mint, machine_register
from proxy.models import MachineRateLimit
from usage.models import UsageEvent
from usage.sync import MAX_RECORDS
from usage.writer import UsageRecord, UsageWriter

pytestmark = pytest.mark.django_db


def rec(n: int, **fields) -> dict:
    return {
        "request_id": f"req_{n:04d}",
        "message_id": f"msg_{n:04d}",
        "session_id": "sess-1",
        "model": "claude-sonnet-4-5-20250929",
        "timestamp": "2026-11-20T10:00:00.000Z",
        "input_tokens": 10 + n,
        "output_tokens": 5,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 1000,
        "cache_creation": {"ephemeral_5m_input_tokens": 40, "ephemeral_1h_input_tokens": 60},
        **fields,
    }


@pytest.fixture
def laptop(member):
    machine, _ = machine_register(account=member.account, hostname="laptop")
    return machine


def upload(client: Client, member, machine, records, **extra):
    body = json.dumps({"machine_id": str(machine.public_id), "records": records})
    return client.post("/sync/usage", body, content_type="application/json", **member.auth, **extra)


def test_records_are_stored_as_sync_events_of_the_machine(client, member, laptop) -> None:
    response = upload(client, member, laptop, [rec(1), rec(2)])
    assert response.status_code == 200
    assert response.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    event = UsageEvent.objects.get(request_id="req_0001")
    assert (event.source, event.machine_id, event.session_id) == ("sync", laptop.id, "sess-1")
    assert (event.input_tokens, event.output_tokens) == (11, 5)
    assert (event.cache_creation_input_tokens, event.cache_read_input_tokens) == (100, 1000)
    assert event.details["cache_creation"] == {
        "ephemeral_5m_input_tokens": 40,
        "ephemeral_1h_input_tokens": 60,
    }
    assert event.occurred_at == datetime(2026, 11, 20, 10, tzinfo=UTC)
    assert event.dedupe_key == "req_0001"


def test_uploading_the_same_records_again_counts_them_as_duplicates(client, member, laptop):
    upload(client, member, laptop, [rec(1), rec(2)])
    again = upload(client, member, laptop, [rec(1), rec(2), rec(3)]).json()
    assert again == {"accepted": 1, "duplicates": 2, "rejected": []}
    assert UsageEvent.objects.count() == 3


def test_a_request_the_proxy_metered_is_a_duplicate_and_the_proxy_record_stays(
    client, member, laptop
) -> None:
    writer = UsageWriter()
    writer.record(
        UsageRecord(
            account_id=member.account.id,
            source="proxy",
            machine_id=laptop.id,
            model="claude-sonnet-4-5-20250929",
            request_id="req_0001",
            message_id="msg_0001",
            input_tokens=11,
            output_tokens=321,  # the proxy saw the final count; the transcript says 5
        )
    )
    writer.flush()
    body = upload(client, member, laptop, [rec(1)]).json()
    assert body == {"accepted": 0, "duplicates": 1, "rejected": []}
    event = UsageEvent.objects.get()
    assert (event.source, event.output_tokens) == ("proxy", 321)


def test_copies_of_one_request_in_a_batch_count_once_keeping_the_largest(client, member, laptop):
    body = upload(client, member, laptop, [rec(1), rec(1, output_tokens=9), rec(1)]).json()
    assert body == {"accepted": 1, "duplicates": 2, "rejected": []}
    assert UsageEvent.objects.get().output_tokens == 9


def test_a_record_with_only_a_message_id_is_keyed_by_it(client, member, laptop) -> None:
    first = upload(client, member, laptop, [rec(1, request_id=None)]).json()
    second = upload(client, member, laptop, [rec(1, request_id="")]).json()
    assert (first["accepted"], second["duplicates"]) == (1, 1)
    assert UsageEvent.objects.get().dedupe_key == "msg:msg_0001"


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ("not an object", "a record must be a JSON object"),
        ({**rec(9), "request_id": None, "message_id": None}, "request_id or message_id"),
        (rec(9, input_tokens=-1), "input_tokens must be between"),
        (rec(9, output_tokens="12"), "output_tokens must be a whole number"),
        (rec(9, output_tokens=1.5), "output_tokens must be a whole number"),
        (rec(9, cache_read_input_tokens=True), "must be a whole number"),
        (rec(9, input_tokens=10**12), "input_tokens must be between"),
        (rec(9, timestamp="yesterday"), "timestamp is not an ISO 8601 time"),
        (rec(9, timestamp=None), "timestamp is required"),
        (rec(9, timestamp="2099-01-01T00:00:00Z"), "timestamp is out of range"),
        (rec(9, model=["x"]), "model must be a string"),
        (rec(9, cache_creation=[1]), "cache_creation must be an object"),
        (
            rec(9, cache_creation={"ephemeral_1h_input_tokens": -3}),
            "cache_creation.ephemeral_1h_input_tokens",
        ),
    ],
)
def test_a_bad_record_is_rejected_alone_with_its_index(client, member, laptop, bad, error):
    body = upload(client, member, laptop, [rec(1), bad, rec(2)]).json()
    assert body["accepted"] == 2
    assert [r["index"] for r in body["rejected"]] == [1]
    assert error in body["rejected"][0]["error"]
    assert UsageEvent.objects.count() == 2


def test_text_is_cleaned_to_the_columns(client, member, laptop) -> None:
    body = upload(
        client, member, laptop, [rec(1, model="claude\x00-x" + "y" * 500, session_id="a\x00b")]
    ).json()
    assert body["accepted"] == 1
    event = UsageEvent.objects.get()
    assert "\x00" not in event.model and len(event.model) == 200
    assert event.session_id == "ab"


def test_too_many_records_is_a_413(client, member, laptop) -> None:
    response = upload(client, member, laptop, [rec(n) for n in range(MAX_RECORDS + 1)])
    assert response.status_code == 413
    assert str(MAX_RECORDS) in response.json()["error"]
    assert UsageEvent.objects.count() == 0


def test_a_body_over_the_limit_is_a_413(client, member, laptop) -> None:
    records = [rec(1, model="m" * 150, session_id="s" * 150)] * 4000  # ~2 MiB
    response = upload(client, member, laptop, records)
    assert response.status_code == 413
    assert set(response.json()) == {"error"}


def test_another_accounts_machine_is_a_404(client, member, other_member) -> None:
    theirs, _ = machine_register(account=other_member.account, hostname="theirs")
    response = upload(client, member, theirs, [rec(1)])
    assert response.status_code == 404
    assert "machine" in response.json()["error"].lower()
    assert UsageEvent.objects.count() == 0


def test_a_revoked_machine_cannot_upload(client, member, laptop) -> None:
    laptop.revoke()
    response = upload(client, member, laptop, [rec(1)])
    assert response.status_code == 403
    assert "ccas init" in response.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        "[]",
        '{"records": []}',
        '{"machine_id": "not-a-uuid", "records": []}',
        '{"machine_id": "00000000-0000-0000-0000-000000000000", "records": {}}',
        "{nope",
    ],
)
def test_a_malformed_envelope_is_a_400(client, member, body) -> None:
    response = client.post("/sync/usage", body, content_type="application/json", **member.auth)
    assert response.status_code == 400
    assert set(response.json()) == {"error"}


def test_a_wrong_credential_type_is_a_401_naming_the_master_token(
    client, member, laptop, catalog_model
) -> None:
    _key, api_key = api_key_mint(account=member.account, model="cf-gpt-oss-20b")
    _machine, proxy_token = machine_register(account=member.account, hostname="box")
    for secret in (api_key, proxy_token):
        response = client.post(
            "/sync/usage",
            json.dumps({"machine_id": str(laptop.public_id), "records": [rec(1)]}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {secret}",
        )
        assert response.status_code == 401
        assert "expects a master token (hyd_…)" in response.json()["error"]
        assert secret not in response.content.decode()


def test_events_are_listed_page_by_page_only_the_callers(
    client, member, other_member, laptop
) -> None:
    upload(client, member, laptop, [rec(n, timestamp=f"2026-11-2{n}T10:00:00Z") for n in range(5)])
    theirs, _ = machine_register(account=other_member.account, hostname="theirs")
    upload(client, other_member, theirs, [rec(1)])
    seen, cursor = [], None
    while True:
        query = "/sync/usage?limit=2&source=proxy,sync" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(query, **member.auth).json()
        seen += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [e["input_tokens"] for e in seen] == [10, 11, 12, 13, 14]
    first = seen[0]
    assert first["machine_id"] == str(laptop.public_id)
    assert first["cache_creation"] == {
        "ephemeral_5m_input_tokens": 40,
        "ephemeral_1h_input_tokens": 60,
    }
    assert first["timestamp"].startswith("2026-11-20T10:00:00")
    since = client.get("/sync/usage?since=2026-11-23", **member.auth).json()["data"]
    assert [e["input_tokens"] for e in since] == [13, 14]
    bad = client.get("/sync/usage?cursor=%%%", **member.auth)
    assert bad.status_code == 400


def test_rate_limits_show_each_machines_latest_plan_utilisation(client, member, laptop) -> None:
    MachineRateLimit.objects.create(
        machine=laptop,
        observed_at=datetime(2026, 11, 28, 9, tzinfo=UTC),
        values={
            "status": "allowed",
            "5h-utilization": "0.42",
            "5h-reset": "1795860000",
            "7d-utilization": "0.1",
            "7d-reset": "1796300000",
        },
    )
    data = client.get("/sync/rate-limits", **member.auth).json()["data"]
    assert data == [
        {
            "machine_id": str(laptop.public_id),
            "hostname": "laptop",
            "observed_at": "2026-11-28T09:00:00+00:00",
            "status": "allowed",
            "five_hour_utilization": 0.42,
            "five_hour_reset": datetime.fromtimestamp(1795860000, tz=UTC).isoformat(),
            "weekly_utilization": 0.1,
            "weekly_reset": datetime.fromtimestamp(1796300000, tz=UTC).isoformat(),
        }
    ]
