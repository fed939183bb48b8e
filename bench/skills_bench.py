"""Benchmark of the skills site: public SKILL.md reads, and one big import.

    .venv/bin/python bench/skills_bench.py [--server uvicorn|daphne] [--workers N]
        [--skills 1000] [--duration 15] [--warmup 15] [--connections 32]

It builds a throwaway data folder (SQLite, no Redis unless REDIS_URL is set), seeds ``--skills``
skills, serves ``hepgg.asgi:application`` on 127.0.0.1 and drives it with ``wrk -c32`` over all
the skills' ``/skills/<name>/SKILL.md`` URLs, once plainly and once revalidating with
``If-None-Match`` (every answer a 304). Then it imports a 5 MiB, 200-file zip and reports the
time and the peak memory (tracemalloc) of reading, validating and storing it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _setup_django(data_dir: Path) -> None:
    os.environ["HEPGG_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hepgg.settings")
    os.environ.setdefault("DEBUG", "false")
    os.environ.setdefault("SECRET_KEY", "bench-" + "x" * 40)
    os.environ.setdefault("ALLOWED_HOSTS", "*")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _skill_md(name: str, index: int) -> bytes:
    body = "\n".join(f"{n}. Step {n} of the {name} procedure." for n in range(1, 40))
    return (
        f"---\nname: {name}\ndescription: Benchmark skill number {index}, which does one "
        f"thing well.\nlicense: MIT\n---\n\n# {name}\n\n{body}\n"
    ).encode()


def seed(count: int) -> dict[str, str]:
    """``count`` public skills; returns ``{url path: etag}`` of their SKILL.md."""
    from accounts.models import Account
    from accounts.services import account_create
    from skills.services import skills_import

    account = Account.objects.filter(email="bench@example.com").first()
    if account is None:
        account, _ = account_create(email="bench@example.com")
    etags: dict[str, str] = {}
    for index in range(count):
        name = f"bench-skill-{index:04d}"
        content = _skill_md(name, index)
        skills_import(account=account, files={"SKILL.md": content, "notes.txt": b"notes\n"})
        etags[f"/skills/{name}/SKILL.md"] = hashlib.sha256(content).hexdigest()
    return etags


def _wrk_script(path: Path, etags: dict[str, str], *, revalidate: bool) -> None:
    entries = ",\n".join(f'  {{"{url}", "\\"{etag}\\""}}' for url, etag in sorted(etags.items()))
    header = 'wrk.headers["If-None-Match"] = p[2]' if revalidate else ""
    path.write_text(
        f"local paths = {{\n{entries}\n}}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i + 1\n"
        "  local p = paths[(i % #paths) + 1]\n"
        f"  {header}\n"
        '  return wrk.format("GET", p[1])\n'
        "end\n"
    )


def _parse_wrk(output: str) -> dict[str, float]:
    def ms(value: str, unit: str) -> float:
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", output)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    return {
        "requests_per_second": rps,
        "p50_ms": ms(*p50.groups()),
        "p99_ms": ms(*p99.groups()),
        "non_2xx_3xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


APP = "hepgg.asgi:application"  # the skills site's reads are answered by skills.asgi within it


def _serve(server: str, workers: int, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    app = APP
    if server == "uvicorn":
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--no-access-log",
            "--log-level",
            "warning",
            "--lifespan",
            "on",
            app,
        ]
    else:
        argv = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app]
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start")


def bench_reads(args: argparse.Namespace, etags: dict[str, str], data_dir: Path) -> dict:
    port = _free_port()
    env = {**os.environ, "HEPGG_DATA_DIR": str(data_dir)}
    process = _serve(args.server, args.workers, port, env)
    results: dict[str, dict] = {}
    try:
        import httpx

        sample = next(iter(sorted(etags)))
        first = httpx.get(f"http://127.0.0.1:{port}{sample}")
        assert first.status_code == 200, first.status_code
        for label, revalidate in (("plain", False), ("if_none_match", True)):
            script = data_dir / f"{label}.lua"
            _wrk_script(script, etags, revalidate=revalidate)
            # Warm every worker's caches (each skill read a few times), then measure.
            subprocess.run(
                [
                    "wrk",
                    "-t2",
                    f"-c{args.connections}",
                    f"-d{args.warmup}s",
                    "-s",
                    str(script),
                    f"http://127.0.0.1:{port}",
                ],
                check=True,
                capture_output=True,
            )
            run = subprocess.run(
                [
                    "wrk",
                    "-t2",
                    f"-c{args.connections}",
                    f"-d{args.duration}s",
                    "--latency",
                    "-s",
                    str(script),
                    f"http://127.0.0.1:{port}",
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            results[label] = _parse_wrk(run.stdout)
    finally:
        process.terminate()
        process.wait(timeout=10)
    return results


def _big_archive(files: int = 200, total: int = 5 * 1024 * 1024) -> tuple[bytes, int]:
    """A zip of ``files`` files, ``total`` bytes unpacked, mostly incompressible (worst case)."""
    rng = random.Random(42)
    per_file = total // files
    buffer = io.BytesIO()
    unpacked = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        skill_md = b"---\nname: big-import\ndescription: A 5 MiB, 200-file skill.\n---\n# Big\n"
        zf.writestr("big-import/SKILL.md", skill_md)
        unpacked += len(skill_md)
        for index in range(files - 1):
            content = rng.randbytes(per_file // 2) + b"text line\n" * (per_file // 20)
            zf.writestr(f"big-import/data/file-{index:03d}.bin", content)
            unpacked += len(content)
    return buffer.getvalue(), unpacked


def bench_import() -> dict:
    from accounts.models import Account
    from skills.services import skills_import, upload_parse

    account = Account.objects.get(email="bench@example.com")
    archive, unpacked = _big_archive()
    stream = io.BytesIO(archive)
    tracemalloc.start()
    started = time.perf_counter()
    upload = upload_parse(stream=stream)
    imported = skills_import(account=account, files=upload.files)
    elapsed = time.perf_counter() - started
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert imported[0].name == "big-import"
    return {
        "archive_bytes": len(archive),
        "unpacked_bytes": unpacked,
        "files": len(upload.files),
        "seconds": round(elapsed, 3),
        "peak_traced_bytes": peak,
        "peak_over_unpacked": round(peak / unpacked, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["uvicorn", "daphne"], default="uvicorn")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skills", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=15, help="seconds of warm-up per run")
    parser.add_argument("--keep", action="store_true", help="keep the data folder")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    data_dir = Path(tempfile.mkdtemp(prefix="hepgg-skills-bench-"))
    try:
        _setup_django(data_dir)
        started = time.perf_counter()
        etags = seed(args.skills)
        seeded = time.perf_counter() - started
        reads = bench_reads(args, etags, data_dir)
        result = {
            "server": f"{args.server} x{args.workers}" if args.server == "uvicorn" else "daphne",
            "cpus": os.cpu_count(),
            # The machine is shared: a busy one halves the numbers, so say how busy it was.
            "load_average_at_end": os.getloadavg(),
            "skills": args.skills,
            "seed_seconds": round(seeded, 1),
            "connections": args.connections,
            "reads": reads,
            "import": bench_import(),
        }
        print(json.dumps(result, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
