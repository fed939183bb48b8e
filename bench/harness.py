"""Benchmark harness: servers, RSS sampling, concurrency-1 latency, wrk throughput, reports.

Everything here is generic: a *target* is (name, base_url, path, headers, body). A *scenario*
is a list of targets whose first one is the baseline ("direct"); targets run interleaved in
rounds (direct, A, B, direct, A, B, ...) and each target's added latency is measured against
the baseline of the same round, so machine noise hits every target alike.

Only loopback URLs are accepted: this harness never sends traffic anywhere else.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------- targets
def check_loopback(url: str) -> None:
    """Refuse any URL whose host is not a loopback address."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"refusing non-loopback benchmark URL: {url}")


@dataclass(frozen=True)
class Target:
    name: str
    base_url: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    expect: tuple[str, ...] = ()  # substrings a good response body must contain

    def __post_init__(self) -> None:
        check_loopback(self.base_url)

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + self.path

    @property
    def payload(self) -> bytes:
        return json.dumps(self.body).encode()


@dataclass(frozen=True)
class Scenario:
    name: str
    targets: list[Target]  # targets[0] is the baseline


@dataclass
class BenchConfig:
    rounds: int = 3
    c1_requests: int = 300  # per target and scenario, split evenly over the rounds
    warmup: int = 20
    wrk_duration_s: int = 8
    wrk_connections: int = 32
    wrk_threads: int = 2
    request_timeout_s: float = 30.0
    skip_c1: bool = False
    skip_wrk: bool = False


# --------------------------------------------------------------------- servers
def wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"port {port} not open after {timeout_s:.0f}s")


@dataclass
class Server:
    """A server subprocess in its own process group; stop() kills the whole group."""

    name: str
    cmd: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    env_remove: tuple[str, ...] = ()
    cwd: Path | None = None
    log_path: Path | None = None
    start_timeout_s: float = 90.0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", self.port)) == 0:
                raise RuntimeError(f"{self.name}: port {self.port} already in use")
        log_path = self.log_path or Path(tempfile.gettempdir()) / f"bench-{self.name}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - the child owns it for its lifetime
        self.log_path = log_path
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=self.cwd,
            env={k: v for k, v in {**os.environ, **self.env}.items() if k not in self.env_remove},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        try:
            wait_for_port(self.port, self.start_timeout_s, self.proc)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"{self.name} failed to start: {exc}\n{self.log_tail()}") from exc
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, n: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self, grace_s: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


# ------------------------------------------------------------------------- RSS
def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def process_tree(pid: int, kids: dict[int, list[int]] | None = None) -> list[int]:
    kids = _children_map() if kids is None else kids
    tree, todo = [], [pid]
    while todo and len(tree) < 10_000:
        p = todo.pop()
        tree.append(p)
        todo.extend(kids.get(p, []))
    return tree


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _hwm_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def tree_rss(pid: int) -> tuple[int, int]:
    """(current RSS sum, sum of per-process peak RSS) of pid and all its descendants, bytes."""
    tree = process_tree(pid)
    return sum(_rss_bytes(p) for p in tree), sum(_hwm_bytes(p) for p in tree)


def tree_cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of the given processes and all their descendants, seconds."""
    kids = _children_map()
    total = 0
    for root in pids:
        for p in process_tree(root, kids):
            try:
                with open(f"/proc/{p}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except (OSError, IndexError, ValueError):
                continue
    return total / os.sysconf("SC_CLK_TCK")


def wait_idle(pids: Sequence[int], max_wait_s: float = 15.0, busy_fraction: float = 0.05) -> float:
    """Wait until the servers stop burning CPU (e.g. a proxy still draining requests that wrk
    abandoned), so the next measurement starts on a quiet machine. Returns seconds waited."""
    t0 = time.monotonic()
    last = tree_cpu_seconds(pids)
    quiet = 0
    while time.monotonic() - t0 < max_wait_s and quiet < 2:
        time.sleep(0.25)
        now = tree_cpu_seconds(pids)
        quiet = quiet + 1 if now - last < 0.25 * busy_fraction else 0
        last = now
    return time.monotonic() - t0


class RssSampler:
    """Samples the RSS of whole process trees in a background thread; keeps idle and peak values.

    peak = max over samples of the tree's summed RSS (what the machine had to hold at once);
    hwm_sum = sum of each process's own kernel-tracked peak (VmHWM), an upper bound that also
    catches spikes between samples.
    """

    def __init__(self, interval_s: float = 0.2, max_duration_s: float = 3 * 3600) -> None:
        self.interval_s = interval_s
        self.max_duration_s = max_duration_s
        self.roots: dict[str, int] = {}
        self.idle: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.hwm_sum: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()

    def add(self, name: str, pid: int) -> None:
        rss, hwm = tree_rss(pid)
        with self._lock:
            self.roots[name] = pid
            self.idle[name] = rss
            self.peak[name] = rss
            self.hwm_sum[name] = hwm

    def sample(self) -> None:
        kids = _children_map()
        with self._lock:
            for name, pid in self.roots.items():
                tree = process_tree(pid, kids)
                rss = sum(_rss_bytes(p) for p in tree)
                hwm = sum(_hwm_bytes(p) for p in tree)
                self.peak[name] = max(self.peak[name], rss)
                self.hwm_sum[name] = max(self.hwm_sum[name], hwm)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_duration_s
        while not self._stop.wait(self.interval_s) and time.monotonic() < deadline:
            self.sample()

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> dict[str, dict[str, float]]:
        self._stop.set()
        self._thread.join(5)
        self.sample()
        mb = 1024 * 1024
        return {
            n: {
                "idle_rss_mb": round(self.idle[n] / mb, 1),
                "peak_rss_mb": round(self.peak[n] / mb, 1),
                "hwm_sum_mb": round(self.hwm_sum[n] / mb, 1),
            }
            for n in self.roots
        }


# ------------------------------------------------------- concurrency-1 latency
def run_async(coro: Any) -> Any:
    """asyncio.run, on uvloop when installed (less client-side noise)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass
class LatencySamples:
    total_ms: list[float] = field(default_factory=list)
    first_chunk_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""

    def summary(self) -> dict[str, float]:
        return {
            "n": len(self.total_ms),
            "errors": self.errors,
            "p50_ms": percentile(self.total_ms, 50),
            "p99_ms": percentile(self.total_ms, 99),
            "ttfc_p50_ms": percentile(self.first_chunk_ms, 50),
            "ttfc_p99_ms": percentile(self.first_chunk_ms, 99),
        }


async def one_request(
    session: aiohttp.ClientSession, target: Target
) -> tuple[float, float, int, bytes]:
    """POST once; returns (total ms, time to first body chunk ms, status, body)."""
    t0 = time.perf_counter()
    first = 0.0
    buf = bytearray()
    async with session.post(target.url, data=target.payload, headers=target.headers) as resp:
        async for chunk in resp.content.iter_any():
            if not first:
                first = time.perf_counter()
            buf += chunk
        status = resp.status
    t1 = time.perf_counter()
    return (t1 - t0) * 1000, ((first or t1) - t0) * 1000, status, bytes(buf)


def response_ok(target: Target, status: int, body: bytes) -> bool:
    text = body.decode("utf-8", "replace")
    return 200 <= status < 300 and all(e in text for e in target.expect)


async def sequential(target: Target, n: int, warmup: int, timeout_s: float) -> LatencySamples:
    """n sequential requests over one keep-alive connection (after `warmup` unrecorded ones)."""
    out = LatencySamples()
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False
    ) as session:
        for i in range(warmup + n):
            try:
                total, first, status, body = await one_request(session, target)
            except (aiohttp.ClientError, TimeoutError) as exc:
                out.errors += 1
                out.first_error = out.first_error or repr(exc)
                continue
            if not response_ok(target, status, body):
                out.errors += 1
                out.first_error = out.first_error or f"HTTP {status}: {body[:300]!r}"
                continue
            if i >= warmup:
                out.total_ms.append(total)
                out.first_chunk_ms.append(first)
    return out


def preflight(targets: Sequence[Target], timeout_s: float = 30.0) -> None:
    """One request per target; raise with the response if any target misbehaves."""

    async def run() -> None:
        for t in targets:
            s = await sequential(t, 1, 0, timeout_s)
            if s.errors:
                raise RuntimeError(f"preflight failed for {t.name} ({t.url}): {s.first_error}")

    run_async(run())


# ----------------------------------------------------------------------- wrk
WRK_LUA = """\
wrk.method = "POST"
local f = assert(io.open({body_path}, "rb"))
wrk.body = f:read("*a")
f:close()
{headers}
"""
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _lua_str(s: str) -> str:
    level = "=" * 4
    if f"]{level}]" in s:
        raise ValueError(f"cannot quote {s!r} for Lua")
    return f"[{level}[{s}]{level}]"


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def run_wrk(target: Target, cfg: BenchConfig, workdir: Path) -> dict[str, float]:
    body_path = workdir / f"{target.name}.body.json"
    body_path.write_bytes(target.payload)
    headers = "\n".join(  # the spaces matter: `t[[=[` would parse as a call with a long string
        f"wrk.headers[ {_lua_str(k)} ] = {_lua_str(v)}" for k, v in target.headers.items()
    )
    script = workdir / f"{target.name}.lua"
    script.write_text(WRK_LUA.format(body_path=_lua_str(str(body_path)), headers=headers))
    cmd = [
        shutil.which("wrk") or "wrk",
        f"-t{cfg.wrk_threads}",
        f"-c{cfg.wrk_connections}",
        f"-d{cfg.wrk_duration_s}s",
        "--timeout",
        f"{max(10, int(cfg.request_timeout_s))}s",
        "--latency",
        "-s",
        str(script),
        target.url,
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=cfg.wrk_duration_s + 60, check=False
    )
    if proc.returncode != 0 or ".lua:" in proc.stderr:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[:1000]}")
    return parse_wrk(proc.stdout)


def parse_wrk(out: str) -> dict[str, float]:
    res: dict[str, float] = {"rps": float("nan"), "requests": 0, "non2xx": 0, "socket_errors": 0}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        res["rps"] = float(m.group(1))
    if m := re.search(r"(\d+) requests in", out):
        res["requests"] = int(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        res["non2xx"] = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        res["socket_errors"] = sum(int(g) for g in m.groups())
    for pct in ("50", "99"):
        if m := re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M):
            res[f"p{pct}_ms"] = _ms(*m.groups())
    if res["rps"] != res["rps"]:
        res["raw"] = out[-2000:]  # type: ignore[assignment]
    return res


# ----------------------------------------------------------------- the bench
def _median(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def run_scenario(
    scn: Scenario,
    cfg: BenchConfig,
    workdir: Path,
    server_pids: Sequence[int] = (),
    log: Any = print,
) -> dict[str, Any]:
    """Run c1 rounds then wrk rounds over the scenario's targets; summarise against targets[0].
    Before every measurement block, wait (bounded) until the servers are idle."""
    names = [t.name for t in scn.targets]
    base = names[0]
    per_round = max(1, cfg.c1_requests // cfg.rounds)
    c1: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    wrk: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    preflight(scn.targets, cfg.request_timeout_s)

    if not cfg.skip_c1:
        for r in range(cfg.rounds):
            for t in scn.targets:
                wait_idle(server_pids)
                warm = cfg.warmup if r == 0 else 3
                s = run_async(sequential(t, per_round, warm, cfg.request_timeout_s))
                c1[t.name].append(s.summary())
                err = f", {s.errors} errors ({s.first_error})" if s.errors else ""
                p50 = s.summary()["p50_ms"]
                log(f"  [{scn.name}] c1 round {r + 1}/{cfg.rounds} {t.name}: p50 {p50:.2f} ms{err}")
    if not cfg.skip_wrk:
        for r in range(cfg.rounds):
            for t in scn.targets:
                waited = wait_idle(server_pids)
                if waited > 2:
                    log(f"  (waited {waited:.1f}s for the servers to go idle)")
                w = run_wrk(t, cfg, workdir)
                wrk[t.name].append(w)
                bad = w["non2xx"] + w["socket_errors"]
                err = f", {bad:.0f} non-2xx/socket errors" if bad else ""
                c = cfg.wrk_connections
                log(
                    f"  [{scn.name}] c{c} round {r + 1}/{cfg.rounds} {t.name}: "
                    f"{w['rps']:.0f} req/s{err}"
                )

    rows: dict[str, dict[str, float]] = {}
    for n in names:
        row: dict[str, float] = {}
        if c1[n]:
            row["c1_p50_ms"] = _median([s["p50_ms"] for s in c1[n]])
            row["c1_p99_ms"] = _median([s["p99_ms"] for s in c1[n]])
            row["ttfc_p50_ms"] = _median([s["ttfc_p50_ms"] for s in c1[n]])
            row["added_p50_ms"] = _median(
                [s["p50_ms"] - b["p50_ms"] for s, b in zip(c1[n], c1[base], strict=True)]
            )
            row["added_p99_ms"] = _median(
                [s["p99_ms"] - b["p99_ms"] for s, b in zip(c1[n], c1[base], strict=True)]
            )
            row["added_ttfc_p50_ms"] = _median(
                [s["ttfc_p50_ms"] - b["ttfc_p50_ms"] for s, b in zip(c1[n], c1[base], strict=True)]
            )
            row["c1_errors"] = sum(s["errors"] for s in c1[n])
        if wrk[n]:
            row["c32_rps"] = _median([w["rps"] for w in wrk[n]])
            row["c32_vs_direct"] = _median(
                [w["rps"] / b["rps"] for w, b in zip(wrk[n], wrk[base], strict=True) if b["rps"]]
            )
            row["c32_p99_ms"] = _median([w.get("p99_ms", float("nan")) for w in wrk[n]])
            row["c32_errors"] = sum(w["non2xx"] + w["socket_errors"] for w in wrk[n])
        rows[n] = row
    return {
        "scenario": scn.name,
        "baseline": base,
        "summary": rows,
        "c1_rounds": c1,
        "wrk_rounds": wrk,
    }


def run_bench(
    title: str, scenarios: Sequence[Scenario], cfg: BenchConfig, sampler: RssSampler
) -> dict[str, Any]:
    started = time.time()
    load_start = os.getloadavg()
    if load_start[0] > 1.0:
        print(f"warning: load average {load_start[0]:.1f} before start: results will be noisy")
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        pids = list(sampler.roots.values())
        results = [run_scenario(s, cfg, Path(tmp), pids) for s in scenarios]
    return {
        "title": title,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "config": asdict(cfg),
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_start": load_start,
            "load_avg_end": os.getloadavg(),
        },
        "scenarios": results,
        "rss": sampler.stop(),
    }


# --------------------------------------------------------------------- report
def _fmt(v: float | None, digits: int = 2) -> str:
    if v is None or v != v:
        return "-"
    return f"{v:.{digits}f}"


def _ratio(v: float | None) -> str:
    return "-" if v is None or v != v else f"{v:.3g}x"


def render_markdown(res: dict[str, Any]) -> str:
    cfg = res["config"]
    lines = [
        f"# {res['title']}",
        "",
        f"{res['started']}, {res['duration_s']} s, load average "
        f"{res['machine']['load_avg_start'][0]:.1f} -> {res['machine']['load_avg_end'][0]:.1f} "
        f"on {res['machine']['cpus']} CPUs; {cfg['rounds']} interleaved rounds; "
        f"c1: {cfg['c1_requests']} sequential requests per target; "
        f"c{cfg['wrk_connections']}: wrk -t{cfg['wrk_threads']} -c{cfg['wrk_connections']} "
        f"-d{cfg['wrk_duration_s']}s per round. Values are medians over rounds; "
        "*added* is the target minus the baseline of the same round.",
    ]
    c = cfg["wrk_connections"]
    for scn in res["scenarios"]:
        lines += [
            "",
            f"## {scn['scenario']} (baseline: {scn['baseline']})",
            "",
            "| target | c1 p50 ms | c1 p99 ms | added p50 ms | added p99 ms | first chunk p50 ms "
            f"| c{c} req/s | vs baseline | c{c} p99 ms | errors |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for name, r in scn["summary"].items():
            errors = int(r.get("c1_errors", 0) + r.get("c32_errors", 0))
            cells = [_fmt(r.get(k)) for k in ("c1_p50_ms", "c1_p99_ms", "added_p50_ms")]
            cells += [_fmt(r.get(k)) for k in ("added_p99_ms", "ttfc_p50_ms")]
            cells += [
                _fmt(r.get("c32_rps"), 0),
                _ratio(r.get("c32_vs_direct")),
            ]
            cells += [_fmt(r.get("c32_p99_ms"), 1), str(errors)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += _peer_ratios(res)
    lines += _metering_cost(res)
    lines += [
        "",
        "## Memory (whole process tree)",
        "",
        "| server | idle RSS MB | peak RSS MB | sum of VmHWM MB |",
        "|---|--:|--:|--:|",
    ]
    for name, m in res["rss"].items():
        lines.append(f"| {name} | {m['idle_rss_mb']} | {m['peak_rss_mb']} | {m['hwm_sum_mb']} |")
    return "\n".join(lines) + "\n"


def _peer_ratios(res: dict[str, Any]) -> list[str]:
    """Each hepgg target's c32 req/s divided by each peer's (not the baseline's), per scenario."""
    rows = []
    for scn in res["scenarios"]:
        summary = scn["summary"]
        ours = [n for n in summary if n.startswith("hepgg") and n != "hepgg-unmetered"]
        peers = [n for n in summary if n != scn["baseline"] and not n.startswith("hepgg")]
        for name in ours:
            for peer in peers:
                a, b = summary[name].get("c32_rps"), summary[peer].get("c32_rps")
                if a and b:
                    rows.append(f"| {scn['scenario']} | {name} | {peer} | {a / b:.1f}x |")
    if not rows:
        return []
    header = ["", "## hepgg vs peers (c32 req/s ratio)", ""]
    return [*header, "| scenario | target | peer | ratio |", "|---|---|---|--:|", *rows]


def _metering_cost(res: dict[str, Any]) -> list[str]:
    """hepgg's c32 req/s against hepgg-unmetered's (metering off) of the same round, per
    scenario: the median of the rounds' ratios, and the ratios themselves."""
    rows = []
    for scn in res["scenarios"]:
        rounds = scn["wrk_rounds"]
        if not (rounds.get("hepgg") and rounds.get("hepgg-unmetered")):
            continue
        ratios = [
            on["rps"] / off["rps"]
            for on, off in zip(rounds["hepgg"], rounds["hepgg-unmetered"], strict=True)
            if off["rps"]
        ]
        each = ", ".join(f"{r:.3f}" for r in ratios)
        rows.append(f"| {scn['scenario']} | {(_median(ratios) - 1) * 100:+.1f} % | {each} |")
    if not rows:
        return []
    header = ["", "## The cost of metering (hepgg against hepgg-unmetered, same rounds)", ""]
    return [
        *header,
        "| scenario | c32 req/s, median | each round's ratio |",
        "|---|--:|---|",
        *rows,
    ]


def write_results(res: dict[str, Any], stem: str, out_dir: Path = RESULTS_DIR) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = out_dir / f"{stem}-{stamp}.json"
    md_path = out_dir / f"{stem}-{stamp}.md"
    json_path.write_text(json.dumps(res, indent=2, default=str))
    md_path.write_text(render_markdown(res))
    return json_path, md_path
