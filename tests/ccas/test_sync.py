"""ccas sync uploads what the transcripts hold: once (a second run sends nothing new), resuming
after a failed batch without duplicates, and never over a request the proxy already metered;
two machines uploading the same records at once count them once."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import httpx
import pytest

from accounts.services import machine_register
from tests.ccas.fixtures import (
    REQUESTS,
    SESSION_1,
    SONNET,
    assistant_lines,
    dump,
    write_transcripts,
)
from tests.proxy.conftest import MODEL, OUTPUT
from tests.waits import wait_for_events
from usage.models import UsageEvent

pytestmark = pytest.mark.django_db(transaction=True)


def test_sync_uploads_every_request_once_and_a_second_run_nothing(initialised) -> None:
    write_transcripts(initialised.path)
    first = initialised.run("sync")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "6 new" in first.stdout, first.stdout
    events = {e.request_id: e for e in UsageEvent.objects.filter(source="sync")}
    assert set(events) == {r.request_id for r in REQUESTS}
    for req in REQUESTS:
        event = events[req.request_id]
        assert (event.input_tokens, event.output_tokens) == (req.input, req.output)
        assert (event.cache_creation_input_tokens, event.cache_read_input_tokens) == (
            req.cache_write,
            req.read,
        )
        assert event.machine.hostname == "laptop"
    assert events["req_011A1"].details["cache_creation"] == {
        "ephemeral_5m_input_tokens": 400,
        "ephemeral_1h_input_tokens": 600,
    }
    assert events["req_011A1"].session_id == SESSION_1

    second = initialised.run("sync")
    assert second.returncode == 0, second.stderr
    assert "sent 0 record(s)" in second.stdout
    assert UsageEvent.objects.count() == 6

    # Claude Code appends to a transcript: only the new lines go up
    path = next((initialised.path / ".claude" / "projects").rglob(f"{SESSION_1}.jsonl"))
    new = REQUESTS[0].__class__("msg_new", "req_new", SONNET, "2026-11-22T10:00:00Z", 1, 1, 0, 0, 0)
    with path.open("a") as handle:
        handle.write(dump(assistant_lines(new, SESSION_1, "/x", blocks=2)))
        handle.write('{"type":"assistant","message":{"id":"msg_half')  # being written
    third = initialised.run("sync")
    assert "sent 1 record(s); 1 new" in third.stdout, third.stdout + third.stderr
    assert UsageEvent.objects.count() == 7


class FailingRelay:
    """A relay to the gateway that lets ``allowed`` uploads through, then answers 503."""

    def __init__(self, target: str, allowed: int) -> None:
        self.target, self.allowed, self.uploads = target, allowed, 0
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if self.command == "POST" and self.path.startswith("/sync/usage"):
                    relay.uploads += 1
                    if relay.uploads > relay.allowed:
                        self.send_response(503)
                        self.send_header("Content-Type", "application/json")
                        self.end_headers()
                        self.wfile.write(b'{"error": "Service unavailable."}')
                        return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                request = urllib.request.Request(
                    relay.target + self.path, data=body, method=self.command, headers=headers
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        status, payload = response.status, response.read()
                except urllib.error.HTTPError as exc:
                    with exc:
                        status, payload = exc.code, exc.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_an_interrupted_sync_resumes_where_it_stopped_without_duplicates(
    initialised, gateway
) -> None:
    write_transcripts(initialised.path)
    config_path = initialised.config_dir / "config.json"
    config = json.loads(config_path.read_text())
    relay = FailingRelay(gateway.url, allowed=1)
    try:
        config_path.write_text(json.dumps({**config, "host": relay.url}))
        broken = initialised.run("sync", "--batch-size", "2")
    finally:
        relay.close()
        config_path.write_text(json.dumps(config))
    assert broken.returncode != 0
    assert broken.stderr.count("\n") == 1 and "Traceback" not in broken.stderr
    assert "503" in broken.stderr
    assert UsageEvent.objects.count() == 2  # the one batch that went through

    resumed = initialised.run("sync", "--batch-size", "2")
    assert resumed.returncode == 0, resumed.stderr
    # it resumes at the last delivered batch (copies of a response that straddled it go again,
    # and the server knows them): the four requests not delivered are new, none counts twice
    assert "; 4 new," in resumed.stdout, resumed.stdout
    assert UsageEvent.objects.count() == 6


def test_a_request_the_proxy_metered_is_not_counted_again_and_keeps_the_proxys_counts(
    initialised, gateway
) -> None:
    config = json.loads((initialised.config_dir / "config.json").read_text())
    with anthropic.Anthropic(
        base_url=config["base_url"], api_key="sk-ant-x", max_retries=0
    ) as client:
        reply = client.messages.with_raw_response.create(
            model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "hi"}]
        )
        request_id = reply.headers["request-id"]
        message = reply.parse()
    [proxy_event] = wait_for_events(1)
    assert proxy_event.source == "proxy" and proxy_event.output_tokens == OUTPUT

    # Claude Code's transcript of the same response: its usage is the early snapshot (output 1)
    seen = REQUESTS[0].__class__(
        message.id, request_id, MODEL, "2026-11-28T09:00:00Z", 25, 1, 4, 6, 5
    )
    project = initialised.path / ".claude" / "projects" / "-work"
    project.mkdir(parents=True)
    (project / f"{SESSION_1}.jsonl").write_text(
        dump(assistant_lines(seen, SESSION_1, "/work", blocks=2))
    )
    result = initialised.run("sync")
    assert "sent 1 record(s); 0 new, 1 already known" in result.stdout, result.stdout
    event = UsageEvent.objects.get()
    assert (event.source, event.output_tokens) == ("proxy", OUTPUT)


def test_concurrent_uploads_of_the_same_records_from_two_machines_count_once(
    gateway, member
) -> None:
    machines = [machine_register(account=member.account, hostname=h)[0] for h in ("a", "b")]
    records = [
        {
            "request_id": f"req_c{n}",
            "message_id": f"msg_c{n}",
            "model": SONNET,
            "timestamp": "2026-11-20T10:00:00Z",
            "input_tokens": n,
            "output_tokens": 1,
        }
        for n in range(300)
    ]

    def upload(machine) -> dict:
        response = httpx.post(
            f"{gateway.url}/sync/usage",
            json={"machine_id": str(machine.public_id), "records": records},
            headers={"Authorization": f"Bearer {member.master_token}"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        return response.json()

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(upload, machines * 2))
    assert sum(a["accepted"] for a in answers) == 300
    assert sum(a["duplicates"] for a in answers) == 900
    assert UsageEvent.objects.count() == 300
