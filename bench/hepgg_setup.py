"""hepgg for the fault and slow-reader benchmarks: its environment, a provisioned account, servers.

    env = hepgg_env(workdir, upstream="http://127.0.0.1:18080")   # DATABASE_URL/REDIS_URL from
    migrate(env)                                                   # the environment, else SQLite
    creds = provision(env)          # account, key, machine, skills key and a published skill
    server = hepgg_server("uvicorn", port, env).start()            # "make-run", "uvicorn", "daphne"
    django_json(env, "print(json.dumps(...))")                     # a query, answered as JSON

Each provision makes a fresh account (``bench-<random>@example.com``), so counts read back are that
run's alone even in a shared database. Only loopback: the servers bind 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness import Server

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable


def hepgg_env(workdir: Path, *, upstream: str, **extra: str) -> dict[str, str]:
    """hepgg's environment: upstreams at the fake, the data folder in ``workdir``; the database
    and Redis of the calling environment (``DATABASE_URL``, ``REDIS_URL``), else SQLite there."""
    env = {
        "DJANGO_SETTINGS_MODULE": "hepgg.settings",
        "HEPGG_DATA_DIR": str(workdir / "data"),
        "ANTHROPIC_UPSTREAM_URL": upstream,
        "CLOUDFLARE_API_BASE": f"{upstream}/client/v4",
        "CLOUDFLARE_ACCOUNT_ID": "bench",
        "CLOUDFLARE_API_TOKEN": "bench-token",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    return env


def _run(env: dict[str, str], *argv: str) -> str:
    full = {**os.environ, **env}
    done = subprocess.run(
        [PYTHON, "manage.py", *argv], cwd=ROOT, env=full, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {argv[0]} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def migrate(env: dict[str, str]) -> None:
    _run(env, "migrate", "--noinput", "-v0")


def django_json(env: dict[str, str], code: str) -> Any:
    """Run ``code`` in ``manage.py shell`` (``json`` imported); its last printed line, as JSON."""
    out = _run(env, "shell", "--no-imports", "-c", "import json\n" + code)
    return json.loads(out.strip().splitlines()[-1])


PROVISION = """
from accounts.services import account_create, api_key_mint, machine_register, skills_key_issue
from catalog.models import CatalogModel
from skills.services import skills_import
# The seeded model (a test database may have been flushed since the migration seeded it).
CatalogModel.objects.get_or_create(slug="cf-gpt-oss-20b", defaults={{
    "provider": "cloudflare", "upstream_model": "@cf/openai/gpt-oss-20b"}})
email = "bench-" + {tag!r} + "@example.com"
account, _ = account_create(email=email)
key, secret = api_key_mint(account=account, model="cf-gpt-oss-20b", name="bench")
key.requests_per_minute = 10_000_000
key.tokens_per_minute = 1_000_000_000
key.save()
_machine, token = machine_register(account=account, hostname="bench")
_row, skills_key = skills_key_issue(account=account, name="bench")
md = (b"---\\nname: bench-" + {tag!r}.encode()
      + b"\\ndescription: A skill read under load.\\n---\\n# Hi\\n")
skills_import(account=account, files={{"SKILL.md": md, "notes.md": b"# notes\\n" * 64}},
              visibility="public")
print(json.dumps({{"account_id": account.id, "key": secret, "proxy_token": token,
                  "skills_key": skills_key, "skill": "bench-" + {tag!r}}}))
"""


def provision(env: dict[str, str]) -> dict[str, Any]:
    """A fresh account with a key (limits far above any load), a machine, a skills access key and
    one public skill; their secrets and names."""
    return django_json(env, PROVISION.format(tag=secrets.token_hex(4)))


def hepgg_server(kind: str, port: int, env: dict[str, str], log: Path | None = None) -> Server:
    """hepgg as ``make run`` serves it (``scripts/serve.sh``), or under uvicorn or daphne."""
    if kind == "make-run":
        cmd = ["sh", str(ROOT / "scripts" / "serve.sh")]
        env = {**env, "HOST": "127.0.0.1", "PORT": str(port)}
    elif kind == "uvicorn":
        cmd = [PYTHON, "-m", "uvicorn", "hepgg.asgi:application", "--host", "127.0.0.1",
               "--port", str(port), "--lifespan", "on", "--no-access-log"]  # fmt: skip
    elif kind == "daphne":
        cmd = [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "hepgg.asgi:application"]
    else:
        raise ValueError(f"unknown server {kind!r}")
    return Server(f"hepgg-{kind}", cmd, port, env=env, cwd=ROOT, log_path=log, start_timeout_s=60)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
