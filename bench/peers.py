"""The servers a benchmark run starts: fake upstream, LiteLLM proxy and Portkey's gateway (peers),
nginx (reference).

Also a tiny CLI to run any of them by hand, in the foreground:

    python bench/peers.py fake --port 18080
    python bench/peers.py litellm --port 18100 --upstream http://127.0.0.1:18080
    python bench/peers.py nginx --port 18090 --upstream-port 18080
    python bench/peers.py portkey --port 18110
    python bench/peers.py litellm-config --upstream http://127.0.0.1:18080   # print the YAML
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from harness import BENCH_DIR, BenchConfig, RssSampler, Server, check_loopback

FAKE_SCRIPT = BENCH_DIR / "fake_upstream.py"
NGINX_TEMPLATE = BENCH_DIR / "nginx.conf.template"
LITELLM_VENV = BENCH_DIR / ".venv-litellm"
PORTKEY_SERVER = BENCH_DIR / ".portkey/node_modules/@portkey-ai/gateway/build/start-server.js"
LITELLM_MASTER_KEY = "sk-bench-master"
LITELLM_MODEL = "bench-model"
UPSTREAM_OPENAI_KEY = "sk-bench-upstream"
UPSTREAM_ANTHROPIC_KEY = "sk-ant-bench-upstream"
NOWHERE = "http://127.0.0.1:9/disabled"  # discard port: any fetch fails fast, locally

# Keep LiteLLM from phoning home (cost map, beta headers, blog, presets) or finding a database.
LITELLM_OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_MODEL_COST_MAP_URL": NOWHERE,
    "LITELLM_ANTHROPIC_BETA_HEADERS_URL": NOWHERE,
    "LITELLM_BLOG_POSTS_URL": NOWHERE,
    "LITELLM_AUTOROUTER_PRESETS_URL": NOWHERE,
    "HF_HUB_OFFLINE": "1",
    "LITELLM_LOG": "ERROR",
    "LITELLM_MODE": "PRODUCTION",  # production best practice: no .env loading
}
LITELLM_ENV_REMOVE = ("DATABASE_URL", "DIRECT_URL", "REDIS_URL", "REDIS_HOST", "LITELLM_MASTER_KEY")


def fake_upstream(port: int, chunk_delay_ms: float = 0.0, workdir: Path | None = None) -> Server:
    cmd = [
        sys.executable,
        str(FAKE_SCRIPT),
        "--port",
        str(port),
        "--chunk-delay-ms",
        str(chunk_delay_ms),
    ]
    return Server("fake-upstream", cmd, port, log_path=_log(workdir, "fake-upstream"))


def litellm_config(
    upstream: str, model: str = LITELLM_MODEL, master_key: str = LITELLM_MASTER_KEY
) -> str:
    """LiteLLM proxy config routing `model` to the fake as a generic OpenAI-compatible provider."""
    check_loopback(upstream)
    return f"""\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {upstream.rstrip("/")}/v1
      api_key: {UPSTREAM_OPENAI_KEY}
litellm_settings:
  # The fastest setup LiteLLM documents (docs.litellm.ai/docs/proxy/prod, "Best Practices for
  # Production"): no callbacks, no debug logging, no retries.
  telemetry: false
  drop_params: true
  set_verbose: false
  json_logs: true
  request_timeout: 600
  num_retries: 0
  callbacks: []
  success_callback: []
  failure_callback: []
  turn_off_message_logging: true
router_settings:
  num_retries: 0
general_settings:
  master_key: {master_key}
  disable_spend_logs: true
  disable_error_logs: true
  allow_requests_on_db_unavailable: true
"""


def litellm(port: int, upstream: str, workdir: Path, log_dir: Path | None = None) -> Server:
    """LiteLLM proxy: one worker, no database. `/anthropic/*` passthrough goes to `upstream`
    because the route reads ANTHROPIC_API_BASE (then ANTHROPIC_BASE_URL) and sends
    ANTHROPIC_API_KEY upstream in place of the caller's key (litellm/proxy/pass_through_endpoints/
    llm_passthrough_endpoints.py, anthropic_proxy_route)."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        raise SystemExit(f"{exe} missing: run bench/litellm_setup.sh first")
    cfg = workdir / "litellm.yaml"
    cfg.write_text(litellm_config(upstream))
    cmd = [
        str(exe),
        "--config",
        str(cfg),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
        "--telemetry",
        "False",
    ]
    env = {
        **LITELLM_OFFLINE_ENV,
        "ANTHROPIC_API_BASE": upstream,
        "ANTHROPIC_API_KEY": UPSTREAM_ANTHROPIC_KEY,
    }
    return Server(
        "litellm",
        cmd,
        port,
        env=env,
        env_remove=LITELLM_ENV_REMOVE,
        cwd=workdir,
        log_path=_log(log_dir or workdir, "litellm"),
        start_timeout_s=120,
    )


def portkey(port: int, log_dir: Path | None = None) -> Server:
    """Portkey's open-source gateway (Node), headless (no console UI). A request names its
    provider and upstream in headers (``portkey_headers``): no config file."""
    if not PORTKEY_SERVER.exists():
        raise SystemExit(f"{PORTKEY_SERVER} missing: run bench/portkey_setup.sh first")
    cmd = ["node", str(PORTKEY_SERVER), "--headless", f"--port={port}"]
    return Server("portkey", cmd, port, log_path=_log(log_dir, "portkey"), start_timeout_s=60)


def portkey_headers(upstream: str) -> dict[str, str]:
    check_loopback(upstream)
    return {
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": f"{upstream.rstrip('/')}/v1",
        "Authorization": f"Bearer {UPSTREAM_OPENAI_KEY}",
    }


def nginx_conf(port: int, upstream_port: int, prefix: Path, workers: int = 1) -> str:
    text = NGINX_TEMPLATE.read_text()
    for key, value in {
        "PREFIX": str(prefix),
        "PORT": str(port),
        "UPSTREAM_PORT": str(upstream_port),
        "WORKERS": str(workers),
    }.items():
        text = text.replace(f"@{key}@", value)
    return text


def nginx(
    port: int, upstream_port: int, workdir: Path, workers: int = 1, log_dir: Path | None = None
) -> Server:
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    prefix = workdir / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    prefix.chmod(0o755)  # as root, workers run as nobody
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(port, upstream_port, prefix, workers))
    cmd = [exe, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    return Server("nginx", cmd, port, log_path=_log(log_dir or workdir, "nginx"))


def _log(workdir: Path | None, name: str) -> Path | None:
    return workdir / f"{name}.log" if workdir else None


# ------------------------------------------------------------ run-script glue
def add_common_args(ap: argparse.ArgumentParser) -> None:
    cfg = BenchConfig()
    g = ap.add_argument_group("benchmark")
    g.add_argument("--rounds", type=int, default=cfg.rounds)
    g.add_argument(
        "--c1-requests", type=int, default=cfg.c1_requests, help="sequential requests per target"
    )
    g.add_argument("--warmup", type=int, default=cfg.warmup)
    g.add_argument(
        "--wrk-duration", type=int, default=cfg.wrk_duration_s, help="seconds per wrk run"
    )
    g.add_argument("--connections", type=int, default=cfg.wrk_connections)
    g.add_argument("--skip-c1", action="store_true")
    g.add_argument("--skip-wrk", action="store_true")
    g.add_argument("--only", choices=["non-streaming", "streaming"], help="run one scenario only")
    g.add_argument("--out-dir", type=Path, default=BENCH_DIR / "results")
    s = ap.add_argument_group("servers")
    s.add_argument("--fake-port", type=int, default=18080)
    s.add_argument("--chunk-delay-ms", type=float, default=0.0)
    s.add_argument("--litellm-port", type=int, default=18100)
    s.add_argument("--no-litellm", action="store_true")
    s.add_argument("--nginx-port", type=int, default=18090, help="Anthropic run only")
    s.add_argument("--no-nginx", action="store_true")
    s.add_argument("--portkey-port", type=int, default=18110)
    s.add_argument(
        "--no-portkey", action="store_true", help="leave out Portkey's gateway (OpenAI run only)"
    )
    h = ap.add_argument_group("hepgg (included as a target when --hepgg-url is given)")
    h.add_argument(
        "--hepgg-header",
        action="append",
        default=[],
        metavar="'Name: value'",
        help="extra request header for hepgg (repeatable)",
    )
    h.add_argument(
        "--hepgg-pid", type=int, help="pid of an already running hepgg, for RSS sampling"
    )
    h.add_argument(
        "--hepgg-cmd",
        help="shell command that starts hepgg (run in its own process group; "
        "gets ANTHROPIC_UPSTREAM_URL / CLOUDFLARE_API_BASE / BENCH_UPSTREAM_URL of the fake)",
    )
    h.add_argument(
        "--hepgg-unmetered-url",
        help="a second hepgg with usage metering off (bench/metering_off.py), measured in the "
        "same rounds as hepgg-unmetered: the cost of metering",
    )
    h.add_argument("--hepgg-unmetered-cmd", help="shell command that starts that second hepgg")


def bench_config(args: argparse.Namespace) -> BenchConfig:
    return BenchConfig(
        rounds=args.rounds,
        c1_requests=args.c1_requests,
        warmup=args.warmup,
        wrk_duration_s=args.wrk_duration,
        wrk_connections=args.connections,
        skip_c1=args.skip_c1,
        skip_wrk=args.skip_wrk,
    )


def parse_headers(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise SystemExit(f"bad header {item!r}: expected 'Name: value'")
        out[name.strip()] = value.strip()
    return out


@dataclass
class Stack:
    workdir: Path
    upstream: str
    servers: list[Server] = field(default_factory=list)
    sampler: RssSampler = field(default_factory=RssSampler)

    def add(self, server: Server, log: bool = True) -> Server:
        if log:
            print(f"starting {server.name}: {shlex.join(server.cmd)}", flush=True)
        t0 = time.monotonic()
        self.servers.append(server.start())
        self.sampler.add(server.name, server.pid)
        print(
            f"  {server.name} up on :{server.port} in {time.monotonic() - t0:.1f}s, "
            f"pid {server.pid}",
            flush=True,
        )
        return server


def _hepgg(name: str, cmd: str, port: int, upstream: str, logs: Path) -> Server:
    env = {
        "ANTHROPIC_UPSTREAM_URL": upstream,
        "CLOUDFLARE_API_BASE": f"{upstream}/client/v4",
        "BENCH_UPSTREAM_URL": upstream,
    }
    return Server(
        name, ["/bin/sh", "-c", cmd], port, env=env, log_path=logs / f"{name}.log",
        start_timeout_s=120,
    )  # fmt: skip


@contextlib.contextmanager
def stack(args: argparse.Namespace, hepgg_port: int | None) -> Iterator[Stack]:
    """Start the fake upstream (+ LiteLLM, + hepgg via --hepgg-cmd); stop them all at the end."""
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        upstream = f"http://127.0.0.1:{args.fake_port}"
        st = Stack(Path(tmp), upstream)
        logs = args.out_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        try:
            st.add(fake_upstream(args.fake_port, args.chunk_delay_ms, logs))
            if not args.no_litellm:
                st.add(litellm(args.litellm_port, upstream, st.workdir, logs))
            if getattr(args, "with_portkey", False) and not args.no_portkey:
                st.add(portkey(args.portkey_port, logs))
            if args.hepgg_cmd:
                if hepgg_port is None:
                    raise SystemExit("--hepgg-cmd needs --hepgg-url with an explicit port")
                st.add(_hepgg("hepgg", args.hepgg_cmd, hepgg_port, upstream, logs))
            unmetered = getattr(args, "hepgg_unmetered_cmd", None)
            if unmetered:
                port = urlsplit(args.hepgg_unmetered_url or "").port
                if port is None:
                    raise SystemExit(
                        "--hepgg-unmetered-cmd needs --hepgg-unmetered-url with a port"
                    )
                st.add(_hepgg("hepgg-unmetered", unmetered, port, upstream, logs))
            elif args.hepgg_pid:
                st.sampler.add("hepgg", args.hepgg_pid)
            st.sampler.start()
            yield st
        finally:
            for server in reversed(st.servers):
                server.stop()


def _main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("which", choices=["fake", "litellm", "nginx", "portkey", "litellm-config"])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--upstream", default="http://127.0.0.1:18080")
    ap.add_argument("--upstream-port", type=int, default=18080)
    ap.add_argument(
        "--max-seconds", type=float, default=3600, help="stop by itself after this long"
    )
    args = ap.parse_args()
    if args.which == "litellm-config":
        print(litellm_config(args.upstream), end="")
        return
    with tempfile.TemporaryDirectory(prefix=f"bench-{args.which}-") as tmp:
        work = Path(tmp)
        defaults = {"fake": 18080, "litellm": 18100, "nginx": 18090, "portkey": 18110}
        port = args.port or defaults[args.which]
        if args.which == "fake":
            server = fake_upstream(port, workdir=work)
        elif args.which == "litellm":
            server = litellm(port, args.upstream, work)
        elif args.which == "portkey":
            server = portkey(port, work)
        else:
            server = nginx(port, args.upstream_port, work)
        server.start()
        print(
            f"{server.name} on http://127.0.0.1:{port}, pid {server.pid}, log {server.log_path}; "
            "Ctrl-C stops"
        )
        try:
            deadline = time.monotonic() + args.max_seconds
            while (
                time.monotonic() < deadline
                and server.proc is not None
                and server.proc.poll() is None
            ):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()


if __name__ == "__main__":
    _main()
