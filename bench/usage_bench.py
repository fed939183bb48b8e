"""Benchmark of usage analytics on PostgreSQL: millions of events, the rollup, ``/usage`` and the
analytics page.

    .venv/bin/python bench/usage_bench.py [--events 5000000] [--days 90] [--accounts 50]
        [--models 20] [--day-events 1000000] [--requests 100] [--skip-load]

1. Creates the database ``--database-url`` afresh (default ``hepgg_bench_usage`` on the local
   PostgreSQL), migrates it, and seeds accounts (each with machines and API keys) and models.
2. Inserts ``--events`` events spread over the last ``--days`` days, in time order as the writer
   does, by ``INSERT … SELECT generate_series`` one day at a time with the secondary indexes
   dropped and rebuilt afterwards, then rolls everything up (``usage_rollup``).
3. Serves hepgg (uvicorn, one process, DEBUG off, no on-demand rollup) and measures, over
   ``--requests`` sequential requests each: ``GET /usage`` for 30 days grouped by day and by
   model (one account's master token), and the analytics page (``Server-Timing`` = server time)
   for all accounts and for one, over 30 and 90 days.
4. Inserts ``--day-events`` more events into one day and times the rollup that picks them up.

Goals (issue 9): ``/usage`` p95 < 50 ms, page server time < 300 ms, one day of 1M events
rolled up < 10 s. Prints a table and writes ``bench/results/usage-<stamp>.json``. Only loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLAUDE = [
    "claude-opus-4-8", "claude-opus-5", "claude-opus-5-5", "claude-sonnet-4-5-20250929",
    "claude-sonnet-4-6", "claude-sonnet-5", "claude-sonnet-5-5", "claude-haiku-4-5-20251001",
    "claude-haiku-5-5", "claude-fable-5-1", "claude-opus-4-1-20250805", "claude-3-5-haiku-20241022",
]  # fmt: skip


def _psql(admin_url: str, sql: str) -> None:
    subprocess.run(["psql", admin_url, "-qc", sql], check=True)


def _setup(args: argparse.Namespace) -> None:
    url = urlparse(args.database_url)
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("refusing a database that is not on loopback")
    if not args.skip_load:
        admin = args.database_url.rsplit("/", 1)[0] + "/postgres"
        name = url.path.lstrip("/")
        _psql(admin, f"DROP DATABASE IF EXISTS {name}")
        _psql(admin, f"CREATE DATABASE {name}")
    os.environ["DATABASE_URL"] = args.database_url
    os.environ.setdefault("HEPGG_DATA_DIR", str(ROOT / "bench" / "results" / "usage-data"))
    Path(os.environ["HEPGG_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hepgg.settings")
    os.environ["SECRET_KEY"] = "bench-only-" + "x" * 40  # the server's too: one session store
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _seed(args: argparse.Namespace) -> dict:
    """Accounts, machines, keys and models; returns the "combos" events are drawn from."""
    from decimal import Decimal

    from accounts.services import account_create, api_key_mint, machine_register
    from catalog.models import CatalogModel, Price
    from catalog.pricing import price_table

    rng = random.Random(1)
    gateway_models = ["cf-gpt-oss-20b"]
    for n in range(1, max(1, args.models - len(CLAUDE))):
        slug = f"bench-model-{n}"
        CatalogModel.objects.get_or_create(
            slug=slug,
            defaults={
                "provider": "openai_compatible",
                "upstream_model": slug,
                "base_url": "http://127.0.0.1:9/v1",
            },
        )
        if n < args.models - len(CLAUDE) - 1:  # the last one stays unpriced
            Price.objects.get_or_create(
                pattern=slug,
                effective_from="2000-01-01",
                defaults={"input": Decimal("0.5"), "output": Decimal("1.5")},
            )
        gateway_models.append(slug)
    models = CLAUDE[: args.models - len(gateway_models)] + gateway_models
    combos, tokens = [], {}
    for a in range(args.accounts):
        account, token = account_create(email=f"bench{a:03d}@example.com")
        tokens[account.id] = token
        for m in range(rng.randint(1, 3)):
            machine, _ = machine_register(account=account, hostname=f"host-{a:03d}-{m}")
            for model in rng.sample(CLAUDE[: len(models) - len(gateway_models)], 4):
                combos.append((account.id, "proxy", model, None, machine.id, 16))
                combos.append((account.id, "sync", model, None, machine.id, 1))
        for slug in rng.sample(gateway_models, rng.randint(1, 2)):
            key, _ = api_key_mint(account=account, model=slug, name=f"key-{slug}")
            combos.append((account.id, "gateway", slug, key.id, None, 6))
    table = price_table()
    today = datetime.now(UTC)
    rates = {}
    for model in models:
        row = table.row_for(model, today.date())
        rates[model] = None if row is None else row.rates
    return {"combos": combos, "tokens": tokens, "rates": rates}


def _prepare_combos(seeded: dict) -> None:
    """The weighted (account, source, model, key, machine, rates) rows events are drawn from."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS bench_combo (n int, account_id bigint, source text, "
            "model text, api_key_id bigint, machine_id bigint, rin numeric, rout numeric, "
            "rw numeric, rr numeric)"
        )
        cursor.execute("TRUNCATE bench_combo")
        rows, n = [], 0
        for account, source, model, key, machine, weight in seeded["combos"]:
            rate = seeded["rates"].get(model)
            prices = (
                (None, None, None, None)
                if rate is None
                else (rate.input, rate.output, rate.cache_write_5m, rate.cache_read)
            )
            for _ in range(weight):
                rows.append((n, account, source, model, key, machine, *prices))
                n += 1
        cursor.executemany("INSERT INTO bench_combo VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", rows)


def _load(day: datetime, count: int, *, late: bool = False) -> None:
    """``count`` events on ``day``, in time order, costs at the day's model rates; ``late``
    events are recorded now (a ``ccas sync`` of an old day), the others when they happened."""
    from django.db import connection

    step = 86400.0 / count
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO usage_usageevent (source, model, occurred_at, input_tokens, output_tokens,
              cache_creation_input_tokens, cache_read_input_tokens, estimated, cost_usd,
              status_code, stop_reason, latency_ms, ttfb_ms, request_id, message_id, session_id,
              details, account_id, api_key_id, machine_id, dedupe_key, recorded_at)
            SELECT c.source, c.model, s.t, s.i, s.o, s.w, s.r, false,
              CASE WHEN c.rin IS NULL OR (c.rw IS NULL AND s.w > 0) OR (c.rr IS NULL AND s.r > 0)
                THEN NULL ELSE round((s.i * c.rin + s.o * c.rout + s.w * coalesce(c.rw, 0)
                + s.r * coalesce(c.rr, 0)) / 1e6, 8) END,
              s.st, 'end_turn', s.lat, s.lat * (0.1 + random() * 0.3), 'req_' || s.id,
              'msg_' || s.id,
              CASE WHEN c.source = 'gateway' THEN '' ELSE
                md5(c.machine_id::text || %(day)s::text || (s.g %% 6)::text) END,
              '{}'::jsonb, c.account_id, c.api_key_id, c.machine_id,
              CASE WHEN c.source = 'gateway' THEN '' ELSE 'req_' || s.id END,
              CASE WHEN %(late)s THEN clock_timestamp() ELSE s.t END
            FROM (
              SELECT g, %(prefix)s || g AS id,
                %(day)s::timestamptz + ((g - 1 + random()) * %(step)s) * interval '1 second' AS t,
                (random() * (SELECT max(n) FROM bench_combo))::int AS n,
                (random() * 4000)::int AS i, (random() * 1500)::int AS o,
                CASE WHEN random() < 0.3 THEN (random() * 20000)::int ELSE 0 END AS w,
                CASE WHEN random() < 0.9 THEN (random() * 150000)::int ELSE 0 END AS r,
                CASE WHEN random() < 0.02 THEN 529 ELSE 200 END AS st,
                exp(random() * 4.5) * 150 AS lat
              FROM generate_series(1, %(count)s) g
            ) s JOIN bench_combo c ON c.n = s.n
            ORDER BY s.t
            """,
            {
                "day": day,
                "count": count,
                "step": step,
                "prefix": f"{day:%Y%m%d}{random.randrange(10**6):06d}-",
                "late": late,
            },
        )


def _drop_indexes() -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'usage_usageevent' "
            "AND indexname <> 'usage_usageevent_pkey'"
        )
        indexes = cursor.fetchall()
        for name, _definition in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
    return [definition for _name, definition in indexes]


def _create_indexes(definitions: list[str]) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '256MB'")
        for definition in definitions:
            cursor.execute(definition)
        cursor.execute("ANALYZE usage_usageevent")


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 1),
        "max_ms": round(ordered[-1], 1),
    }


def _serve(port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1",
        "USAGE_ROLLUP_IN_WEB": "false",  # measure the page, not an on-demand rollup
        "LOG_LEVEL": "WARNING",
    }
    argv = [sys.executable, "-m", "uvicorn", "hepgg.asgi:application", "--host", "127.0.0.1",
            "--port", str(port), "--no-access-log"]  # fmt: skip
    process = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True)
    import httpx

    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("hepgg did not start")


def _staff_cookie() -> str:
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore

    user, _ = get_user_model().objects.get_or_create(
        username="bench-staff", defaults={"is_staff": True, "is_superuser": True}
    )
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return session.session_key


def _measure(args: argparse.Namespace, seeded: dict, results: dict) -> None:
    import httpx

    from accounts.models import Account

    port = args.port
    server = _serve(port)
    try:
        base = f"http://127.0.0.1:{port}"
        today = datetime.now(UTC).date()
        since = (today - timedelta(days=29)).isoformat()
        busiest = max(seeded["tokens"], key=lambda a: sum(1 for c in seeded["combos"] if c[0] == a))
        token = seeded["tokens"][busiest]
        with httpx.Client(base_url=base, timeout=60) as client:
            for group_by in ("day", "model"):
                url = f"/usage?group_by={group_by}&since={since}"
                client.get(url, headers={"Authorization": f"Bearer {token}"}).raise_for_status()
                samples = []
                for _ in range(args.requests):
                    started = time.perf_counter()
                    r = client.get(url, headers={"Authorization": f"Bearer {token}"})
                    samples.append((time.perf_counter() - started) * 1000)
                    r.raise_for_status()
                results[f"/usage 30 days by {group_by}"] = _percentiles(samples)
            cookie = {"sessionid": _staff_cookie()}
            account = Account.objects.get(id=busiest).public_id
            for label, days, who in (
                ("all accounts, 30 days", 30, ""),
                ("all accounts, 90 days", 90, ""),
                ("one account, 90 days", 90, f"&account={account}"),
            ):
                url = (
                    f"/admin/analytics/?since={today - timedelta(days=days - 1)}&until={today}{who}"
                )
                client.get(url, cookies=cookie).raise_for_status()
                server_ms, total = [], []
                for _ in range(max(10, args.requests // 4)):
                    started = time.perf_counter()
                    r = client.get(url, cookies=cookie)
                    total.append((time.perf_counter() - started) * 1000)
                    r.raise_for_status()
                    assert "chart-tokens-model" in r.text
                    server_ms.append(float(r.headers["Server-Timing"].split("dur=")[1]))
                results[f"analytics page, {label} (server)"] = _percentiles(server_ms)
                results[f"analytics page, {label} (client)"] = _percentiles(total)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/hepgg_bench_usage"
    )
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--day-events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--port", type=int, default=18300)
    parser.add_argument("--skip-load", action="store_true", help="reuse the loaded database")
    args = parser.parse_args()

    results: dict = {"load_average_start": os.getloadavg()[0], "args": vars(args)}
    _setup(args)
    from django.db import connection

    from usage.models import UsageEvent
    from usage.rollups import usage_rollup

    seeded_path = ROOT / "bench" / "results" / "usage-seed.json"
    if args.skip_load:
        seeded = json.loads(seeded_path.read_text())
        seeded["tokens"] = {int(k): v for k, v in seeded["tokens"].items()}
        seeded["rates"] = {}
    else:
        seeded = _seed(args)
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        started = time.monotonic()
        definitions = _drop_indexes()
        _prepare_combos(seeded)
        per_day = args.events // args.days
        for n in range(args.days):
            _load(today - timedelta(days=args.days - n), per_day)  # up to yesterday
            print(f"\rloaded day {n + 1}/{args.days}", end="", flush=True)
        print()
        _create_indexes(definitions)
        results["insert_seconds"] = round(time.monotonic() - started, 1)
        seeded_path.parent.mkdir(parents=True, exist_ok=True)
        seeded_path.write_text(json.dumps({"combos": seeded["combos"], "tokens": seeded["tokens"]}))
        started = time.monotonic()
        rollup = usage_rollup()
        results["initial_rollup"] = {**rollup.as_dict(), "wall_seconds": time.monotonic() - started}
    results["events"] = UsageEvent.objects.count()
    connection.close()

    _measure(args, seeded, results)

    # One more day of --day-events events (the day before the history), then the rollup of it.
    first = UsageEvent.objects.order_by("occurred_at").values_list("occurred_at", flat=True)[0]
    day = first.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(1)
    seeded.setdefault("rates", {})
    if not seeded["rates"]:
        from catalog.pricing import price_table

        table = price_table()
        models = {c[2] for c in seeded["combos"]}
        seeded["rates"] = {
            m: (row.rates if (row := table.row_for(m, day.date())) else None) for m in models
        }
    _prepare_combos(seeded)
    started = time.monotonic()
    _load(day, args.day_events, late=True)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE usage_usageevent")
    results["day_insert_seconds"] = round(time.monotonic() - started, 1)
    time.sleep(0.5)
    from django.conf import settings

    settings.USAGE_ROLLUP_SETTLE_SECONDS = 0
    started = time.monotonic()
    rollup = usage_rollup()
    results["rollup_one_day"] = {**rollup.as_dict(), "wall_seconds": time.monotonic() - started}
    results["load_average_end"] = os.getloadavg()[0]

    print(json.dumps(results, indent=2, default=str))
    out = ROOT / "bench" / "results" / f"usage-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
