"""What one usage event costs the writer: CPU per event in this process (encoding a record into
its line on the request path, then the writer's flush) and in the PostgreSQL backend that
inserts it (read from ``/proc/<pid>/stat`` of the writer's connection).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/hepgg_bench .venv/bin/python \\
        bench/usage_insert_cost.py [--batches 40] [--batch-size 500]

It writes to the database it is given (an account, a key and the events it inserts): point it at
a bench database, never at one that matters. The first five batches warm up and are not counted.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hepgg.settings")
django.setup()

from django.db import connection  # noqa: E402

from accounts.services import account_create, api_key_mint  # noqa: E402
from catalog.pricing import price_table  # noqa: E402
from usage.records import UsageRecord  # noqa: E402
from usage.writer import _line, usage_writer  # noqa: E402

WARM_UP = 5


def backend_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        raise SystemExit("needs DATABASE_URL pointing at PostgreSQL (the backend's CPU is read)")

    account, _ = account_create(email=f"insert-cost-{uuid.uuid4().hex[:8]}@example.com")
    key, _ = api_key_mint(account=account, model="cf-gpt-oss-20b", name="insert cost")
    prices = price_table()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]

    encode = flush = database = 0.0
    counted = 0
    for batch in range(args.batches):
        records = [
            UsageRecord(
                account_id=account.id, source="gateway", model="cf-gpt-oss-20b",
                api_key_id=key.id, input_tokens=52, output_tokens=20, status_code=200,
                stop_reason="stop", latency_ms=1.234, ttfb_ms=0.9,
                message_id=f"chatcmpl-{uuid.uuid4().hex[:20]}", event_id=f"req_{uuid.uuid4().hex}",
                details={"stream": False},
            )
            for _ in range(args.batch_size)
        ]  # fmt: skip
        started = time.thread_time()
        lines = [_line(record, prices)[0] for record in records]
        encoded = time.thread_time()
        before = backend_cpu_seconds(backend)
        usage_writer.write_lines(lines)
        if batch >= WARM_UP:
            encode += encoded - started
            flush += time.thread_time() - encoded
            database += backend_cpu_seconds(backend) - before
            counted += len(records)

    per = 1e6 / counted
    print(
        f"{counted} events in batches of {args.batch_size}, CPU per event: "
        f"encoding {encode * per:.1f} µs, writer {flush * per:.1f} µs, "
        f"PostgreSQL {database * per:.1f} µs"
    )


if __name__ == "__main__":
    main()
