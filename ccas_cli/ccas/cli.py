"""The ``ccas`` command line: argument parsing, one function per command, and the guarantee that
every failure is one line on stderr with a non-zero exit (never a traceback)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import platform
import socket
import sys
from datetime import date, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any

from ccas import __version__, claude_settings, config, prices, reports, syncing, transcripts
from ccas.checks import Check, proxy_check, run_checks
from ccas.errors import CcasError
from ccas.gateway import Gateway, normalize_host

MASTER_PREFIX = "hyd_"


# -- helpers ------------------------------------------------------------------------------------
def _say(text: str = "") -> None:
    print(text, flush=True)


def _configured() -> tuple[dict[str, Any], Gateway]:
    cfg = config.load()
    if not cfg.get("host") or not cfg.get("master_token"):
        raise CcasError("ccas is not set up: run `ccas init --host <gateway URL>` first")
    return cfg, Gateway(cfg["host"], cfg["master_token"])


def _master_token(flag: str | None) -> str:
    token = flag or os.environ.get("HYD_MASTER_TOKEN")
    if not token:
        if not sys.stdin.isatty():
            raise CcasError("no master token: pass --token hyd_… or set HYD_MASTER_TOKEN")
        try:
            token = getpass.getpass("Master token (hyd_…, not shown): ")
        except (EOFError, KeyboardInterrupt) as exc:
            raise CcasError("no master token given") from exc
    token = token.strip()
    if not token.startswith(MASTER_PREFIX):
        kind = (
            "an API key (sk-hyd-…)"
            if token.startswith("sk-hyd-")
            else "a proxy token (pt_…)"
            if token.startswith("pt_")
            else "not a master token"
        )
        raise CcasError(f"ccas needs the account's master token (hyd_…); this is {kind}")
    return token


def _timezone(name: str | None) -> tzinfo | None:
    """The zone of ``--timezone``; None means this machine's own rules (DST included)."""
    if not name:
        return None
    if name.upper() == "UTC":
        return timezone.utc
    try:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    except ImportError as exc:  # pragma: no cover - 3.9+ has it
        raise CcasError("--timezone needs Python's zoneinfo") from exc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CcasError(f"unknown time zone {name!r} (e.g. UTC, Europe/Paris)") from exc


def _tz_name(tz: tzinfo | None) -> str:
    if tz is None:
        return os.environ.get("TZ") or datetime.now().astimezone().tzname() or "local"
    return getattr(tz, "key", None) or tz.tzname(datetime.now()) or "local"


def _day(value: str | None, flag: str) -> date | None:
    if not value:
        return None
    text = value.strip()
    if len(text) == 8 and text.isdigit():
        text = f"{text[:4]}-{text[4:6]}-{text[6:]}"
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise CcasError(f"{flag} must be a date (YYYY-MM-DD or YYYYMMDD), not {value!r}") from exc


# -- init / unwire ------------------------------------------------------------------------------
def cmd_init(args: argparse.Namespace) -> int:
    cfg = config.load()
    host_arg = args.host or cfg.get("host") or cfg.get("installed_from")
    if not host_arg:
        raise CcasError("which gateway? pass --host https://your-gateway (the installer's URL)")
    host = normalize_host(host_arg)
    token = _master_token(args.token)
    gateway = Gateway(host, token)
    account = gateway.get("/me")
    hostname = (args.name or socket.gethostname() or "machine")[:255]

    same_account = cfg.get("host") == host and cfg.get("account_id") == account.get("id")
    machine = None
    if same_account and cfg.get("machine_id") and cfg.get("proxy_token"):
        listed = gateway.get("/sync/machines").get("data", [])
        machine = next(
            (m for m in listed if m.get("id") == cfg["machine_id"] and m.get("active", True)), None
        )
    if machine is not None:
        registered = False
        if args.name and machine.get("hostname") != hostname:
            _say(f"note: this machine stays registered as {machine.get('hostname')!r}")
    else:
        answer = gateway.post(
            "/sync/machines",
            {
                "hostname": hostname,
                "platform": f"{sys.platform}-{platform.machine()}"[:100],
                "ccas_version": __version__,
            },
        )
        registered = True
        cfg.update(
            machine_id=answer["id"],
            proxy_token=answer["proxy_token"],
            base_url=answer["base_url"],
            hostname=hostname,
        )
        if not same_account:
            syncing.reset()  # another gateway or account: its sync offsets mean nothing here
    cfg.update(
        host=host,
        master_token=token,
        account_id=account.get("id"),
        account_email=account.get("email"),
    )
    cfg.pop("installed_from", None)
    config.save(cfg)  # before touching Claude's settings, so that unwire can always undo

    wanted = {claude_settings.BASE_URL: cfg["base_url"], claude_settings.HINT_HEADERS: "1"}
    wiring, changed = claude_settings.wire(wanted, cfg.get("wiring"))
    cfg["wiring"] = wiring
    config.save(cfg)

    check = proxy_check(cfg["base_url"])
    settings = wiring["settings_path"]
    _say(
        f"{'Registered' if registered else 'Reusing'} this machine as "
        f"{cfg['hostname']!r} ({cfg['machine_id']}) on {host} ({account.get('email')})."
    )
    if changed:
        _say(
            f"Wrote env.{claude_settings.BASE_URL} (this machine's proxy URL) and "
            f"env.{claude_settings.HINT_HEADERS}=1 into {settings}; every other setting is kept."
        )
        if wiring.get("backup"):
            _say(f"Backup of the previous file: {wiring['backup']}")
    else:
        _say(f"{settings} already points Claude Code at this machine's proxy: unchanged.")
    _say("No Anthropic credential was set: your claude.ai login (or API key) keeps working.")
    _say(("Proxy check: " if check.ok else "Proxy check FAILED: ") + check.detail)
    _say(f"Config: {config.config_dir() / 'config.json'} (mode 0600)")
    _say("Start a new Claude Code session to use it. To undo: `ccas unwire`.")
    if not check.ok:
        raise CcasError(f"the proxy check failed: {check.fix}")
    return 0


def cmd_unwire(args: argparse.Namespace) -> int:
    cfg = config.load()
    wiring = cfg.get("wiring")
    if not wiring:
        _say("ccas has not changed Claude Code's settings on this machine: nothing to undo.")
        return 0
    _say(claude_settings.unwire(wiring).capitalize() + ".")
    cfg.pop("wiring", None)
    config.save(cfg)
    _say(
        "Claude Code now talks to Anthropic directly (from its next session). This machine stays "
        "registered on the gateway; `ccas init` wires it again."
    )
    return 0


# -- status / doctor ----------------------------------------------------------------------------
def _mark(check: Check) -> str:
    return "ok  " if check.ok and not check.warning else ("warn" if check.ok else "FAIL")


def _usage_line(gateway: Gateway, since: datetime) -> str:
    totals = gateway.get("/usage", since=since.isoformat()).get("totals", {})
    tokens = sum(
        int(totals.get(k) or 0)
        for k in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        )
    )
    cost = totals.get("cost_usd")
    money = "n/a" if cost is None else f"${cost:,.2f}"
    return f"{totals.get('requests', 0):,} requests, {tokens:,} tokens, {money}"


def cmd_status(args: argparse.Namespace) -> int:
    cfg = config.load()
    checks, _ = run_checks(cfg, cwd=Path.cwd())
    _say(f"ccas {__version__}")
    _say(f"host:    {cfg.get('host') or '(not set up)'}")
    if cfg.get("machine_id"):
        _say(f"machine: {cfg.get('hostname')} ({cfg['machine_id']})")
    for check in checks:
        _say(f"[{_mark(check)}] {check.name}: {check.detail}")
    healthy = all(c.ok for c in checks) and len(checks) > 2
    if any(c.name == "master token" and c.ok for c in checks):
        gateway = Gateway(cfg["host"], cfg["master_token"])
        midnight = datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
        _say(f"today:   {_usage_line(gateway, midnight)}")
        _say(f"7 days:  {_usage_line(gateway, midnight - timedelta(days=6))}")
    if not healthy:
        _say("Run `ccas doctor` for how to fix what failed.")
    return 0 if healthy else 1


def cmd_doctor(args: argparse.Namespace) -> int:
    cfg = config.load()
    checks, _ = run_checks(cfg, cwd=Path.cwd())
    for check in checks:
        _say(f"[{_mark(check)}] {check.name}: {check.detail}")
        if not check.ok and check.fix:
            _say(f"       fix: {check.fix}")
    failed = [c for c in checks if not c.ok]
    _say("All checks passed." if not failed else f"{len(failed)} check(s) failed.")
    return 1 if failed else 0


# -- report -------------------------------------------------------------------------------------
def _gateway_usages(
    gateway: Gateway, table: prices.PriceTable, since: date | None, until: date | None
) -> list[reports.Usage]:
    params: dict[str, Any] = {"source": "proxy,sync", "limit": 5000}
    if since:
        params["since"] = (since - timedelta(days=1)).isoformat()  # widened: the tz may be ahead
    if until:
        params["until"] = (until + timedelta(days=2)).isoformat()
    usages: list[reports.Usage] = []
    while True:
        page = gateway.get("/sync/usage", **params)
        for event in page.get("data", []):
            when = transcripts.parse_timestamp(event.get("timestamp"))
            if when is None:
                continue
            split = event.get("cache_creation") or {}
            cost = event.get("cost_usd")
            usage = reports.Usage(
                timestamp=when,
                model=event.get("model") or None,
                session_id=event.get("session_id") or "",
                machine=event.get("machine_id") or "",
                input_tokens=int(event.get("input_tokens") or 0),
                output_tokens=int(event.get("output_tokens") or 0),
                cache_write=int(event.get("cache_creation_input_tokens") or 0),
                cache_read=int(event.get("cache_read_input_tokens") or 0),
                cost=None,
            )
            if cost is not None:
                from decimal import Decimal

                usage.cost = Decimal(str(cost))
            else:
                usage.cost = table.cost(
                    usage.model,
                    when,
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    cache_write=usage.cache_write,
                    cache_read=usage.cache_read,
                    write_5m=split.get("ephemeral_5m_input_tokens"),
                    write_1h=split.get("ephemeral_1h_input_tokens"),
                )
            usages.append(usage)
        cursor = page.get("next_cursor")
        if not cursor:
            return usages
        params["cursor"] = cursor


def _local_usages(table: prices.PriceTable) -> list[reports.Usage]:
    def cost(entry: transcripts.Entry) -> Any:
        return table.cost(
            entry.model,
            entry.timestamp,
            input_tokens=entry.input_tokens,
            output_tokens=entry.output_tokens,
            cache_write=entry.cache_write,
            cache_read=entry.cache_read,
            write_5m=entry.write_5m,
            write_1h=entry.write_1h,
        )

    usages = []
    for entry in transcripts.dedupe(transcripts.load_local(), lambda e: float(cost(e) or 0)):
        if entry.model == transcripts.SYNTHETIC:
            continue  # Claude Code's own placeholder messages: no request, no tokens
        usages.append(
            reports.Usage(
                timestamp=entry.timestamp,
                model=entry.model,
                session_id=entry.session_id or "",
                machine="local",
                input_tokens=entry.input_tokens,
                output_tokens=entry.output_tokens,
                cache_write=entry.cache_write,
                cache_read=entry.cache_read,
                cost=cost(entry),
            )
        )
    return usages


def cmd_report(args: argparse.Namespace) -> int:
    tz = _timezone(args.timezone)
    since, until = _day(args.since, "--since"), _day(args.until, "--until")
    if since and until and since > until:
        raise CcasError("--since is after --until")
    limits: list[dict[str, Any]] | None = None
    if args.local:
        cfg = config.load() if config.config_dir().exists() else {}
        table = prices.load(cfg.get("host"), offline=True)
        usages = _local_usages(table)
    else:
        cfg, gateway = _configured()
        table = prices.load(cfg["host"], offline=False)
        usages = _gateway_usages(gateway, table, since, until)
        if args.kind == "blocks":
            limits = gateway.get("/sync/rate-limits").get("data", [])
    usages = [u for u in usages if reports.in_range(u, tz, since, until)]
    rows, totals = reports.build(args.kind, usages, tz=tz, breakdown=args.breakdown)
    if args.json:
        document: dict[str, Any] = {
            "report": args.kind,
            "source": "local" if args.local else "gateway",
            "timezone": _tz_name(tz),
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "prices": table.origin,
            "rows": rows,
            "totals": totals,
        }
        if limits is not None:
            document["rate_limits"] = limits
        _say(json.dumps(document, indent=2))
        return 0
    where = "local transcripts" if args.local else f"{cfg['host']}, all machines"
    _say(f"Claude Code usage, {args.kind} ({where}; {_tz_name(tz)}; prices: {table.origin})")
    if not rows:
        _say("No usage in this period.")
        return 0
    _say(reports.render(args.kind, rows, totals))
    if limits:
        _say("")
        _say("Plan limits reported by Anthropic (latest response through the proxy):")
        for limit in limits:
            _say("  " + _limit_line(limit, tz))
    elif args.kind == "blocks" and not args.local:
        _say(
            "(no plan limits recorded yet: they come with subscription traffic through the proxy;"
            " blocks are estimated from usage)"
        )
    return 0


def _percent(value: Any) -> str:
    return "?" if value is None else f"{float(value) * 100:.0f}%"


def _when(value: Any, tz: tzinfo | None) -> str:
    moment = transcripts.parse_timestamp(value) if value else None
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M") if moment else "?"


def _limit_line(limit: dict[str, Any], tz: tzinfo | None) -> str:
    return (
        f"{str(limit.get('hostname'))[:20]}: 5h {_percent(limit.get('five_hour_utilization'))}"
        f" (resets {_when(limit.get('five_hour_reset'), tz)}), week "
        f"{_percent(limit.get('weekly_utilization'))} (resets "
        f"{_when(limit.get('weekly_reset'), tz)}), {limit.get('status') or 'unknown'}"
    )


# -- sync ---------------------------------------------------------------------------------------
def cmd_sync(args: argparse.Namespace) -> int:
    cfg, gateway = _configured()
    if not cfg.get("machine_id"):
        raise CcasError("this machine is not registered: run `ccas init` first")
    counts = syncing.run(gateway, cfg["machine_id"], batch_size=args.batch_size)
    _say(
        f"Read {counts['files']} transcript file(s): sent {counts['records']} record(s); "
        f"{counts['accepted']} new, {counts['duplicates']} already known"
        + (f", {counts['rejected']} rejected" if counts["rejected"] else "")
        + "."
    )
    return 0


def cmd_installed_from(args: argparse.Namespace) -> int:
    """Run by the installer: remember which gateway it came from, as ``init``'s default host."""
    cfg = config.load()
    if not cfg.get("host"):
        cfg["installed_from"] = normalize_host(args.url)
        config.save(cfg)
    return 0


# -- parsing ------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="ccas",
        description="Claude Code analytics from a hepgg gateway: wire Claude Code to the "
        "gateway's metered proxy, sync and report usage across all your machines.",
    )
    top.add_argument("--version", action="version", version=__version__)
    sub = top.add_subparsers(dest="command", metavar="COMMAND")

    init = sub.add_parser("init", help="register this machine and point Claude Code at the proxy")
    init.add_argument("--host", help="the gateway URL (default: the one ccas was installed from)")
    init.add_argument("--token", help="the master token hyd_… (else $HYD_MASTER_TOKEN, else asked)")
    init.add_argument("--name", help="this machine's name on the gateway (default: hostname)")
    init.set_defaults(func=cmd_init)

    sub.add_parser("status", help="what is set up, and usage today and this week").set_defaults(
        func=cmd_status
    )
    sub.add_parser(
        "doctor", help="run the status checks and say how to fix each failure"
    ).set_defaults(func=cmd_doctor)

    report = sub.add_parser("report", help="tokens and estimated cost, grouped")
    report.add_argument("kind", choices=reports.KINDS)
    report.add_argument("--since", help="first day, YYYY-MM-DD (inclusive)")
    report.add_argument("--until", help="last day, YYYY-MM-DD (inclusive)")
    report.add_argument("--json", action="store_true", help="machine-readable output")
    report.add_argument(
        "--local",
        action="store_true",
        help="read this machine's Claude Code transcripts only (offline)",
    )
    report.add_argument("--breakdown", action="store_true", help="per-model rows in each period")
    report.add_argument("--timezone", help="time zone for days (default: this machine's)")
    report.set_defaults(func=cmd_report)

    sync = sub.add_parser(
        "sync", help="upload usage from the transcripts (what bypassed the proxy)"
    )
    sync.add_argument("--batch-size", type=int, default=syncing.BATCH, help=argparse.SUPPRESS)
    sync.set_defaults(func=cmd_sync)

    sub.add_parser(
        "unwire", help="restore Claude Code's settings as they were before init"
    ).set_defaults(func=cmd_unwire)
    hidden = sub.add_parser("_installed-from")
    hidden.add_argument("url")
    hidden.set_defaults(func=cmd_installed_from)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not getattr(args, "func", None):
        parser().print_help()
        return 2
    try:
        return args.func(args)
    except CcasError as exc:
        sys.stderr.write(f"ccas: {exc.message}\n")
        return exc.status
    except KeyboardInterrupt:
        sys.stderr.write("ccas: interrupted\n")
        return 130
    except BrokenPipeError:
        return 1
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        sys.stderr.write(f"ccas: {exc.strerror or exc}{where}\n")
        return 1
    except Exception as exc:  # a bug: still one line, and how to report it
        sys.stderr.write(
            f"ccas: unexpected error ({type(exc).__name__}: {exc}); "
            "please report it with `ccas --version`\n"
        )
        return 70
