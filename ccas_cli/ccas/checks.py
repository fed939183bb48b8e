"""The checks behind ``ccas status`` and ``ccas doctor``: each says what it found and, when it
failed, the one thing to do about it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccas import claude_settings
from ccas.errors import CcasError
from ccas.gateway import Gateway, GatewayError, request


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False  # shown, but does not make doctor fail


def proxy_check(base_url: str) -> Check:
    """A request through the proxy that needs no Anthropic credential (``GET /v1/models`` with
    none): hepgg's own 401 names the proxy token; any answer from upstream (Anthropic's own 401
    included) proves the proxy took this machine's token and reached it."""
    try:
        answer = request(
            "GET",
            base_url.rstrip("/") + "/v1/models",
            headers={"anthropic-version": "2023-06-01"},
            timeout=20,
        )
    except CcasError as exc:
        return Check("proxy", False, exc.message, "check the gateway URL and your network")
    body = answer.json()
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message", "") if isinstance(error, dict) else ""
    if answer.status == 401 and "proxy token" in message:
        return Check(
            "proxy",
            False,
            "the gateway refused this machine's proxy token",
            "run `ccas init` to register this machine again",
        )
    if answer.status in (502, 504) and "request-id" not in answer.headers:
        return Check(
            "proxy",
            True,
            f"the proxy accepted this machine, but could not reach Anthropic "
            f"(HTTP {answer.status})",
            warning=True,
        )
    return Check(
        "proxy",
        True,
        f"the proxy accepted this machine and reached Anthropic "
        f"(HTTP {answer.status} without credentials, as expected)",
    )


def run_checks(cfg: dict[str, Any], *, cwd: Path) -> tuple[list[Check], dict[str, Any]]:
    """Every check, in order; later ones are skipped when an earlier one makes them moot.
    Also returns what the checks learnt (machine, usage) for ``status`` to show."""
    checks: list[Check] = []
    learnt: dict[str, Any] = {}
    host, token = cfg.get("host"), cfg.get("master_token")
    if not host or not token:
        checks.append(
            Check(
                "config",
                False,
                "ccas is not set up on this machine",
                "run `ccas init --host <gateway URL>`",
            )
        )
        return checks, learnt
    checks.append(Check("config", True, f"gateway {host}"))
    gateway = Gateway(host, token)
    try:
        answer = request("GET", gateway.host + "/healthz", timeout=10)
        reachable = answer.status == 200
        detail = "reachable" if reachable else f"answered /healthz with HTTP {answer.status}"
    except CcasError as exc:
        reachable, detail = False, exc.message
    checks.append(
        Check(
            "gateway",
            reachable,
            detail,
            ""
            if reachable
            else f"check that {host} is the right URL and that this machine can reach it",
        )
    )
    if not reachable:
        return checks, learnt
    try:
        gateway.get("/me")
        checks.append(Check("master token", True, "accepted"))
    except GatewayError as exc:
        checks.append(
            Check(
                "master token",
                False,
                exc.detail,
                "run `ccas init --token hyd_…` with the account's current master token",
            )
        )
        return checks, learnt
    machine_id = cfg.get("machine_id")
    machines = gateway.get("/sync/machines").get("data", [])
    mine = next((m for m in machines if m.get("id") == machine_id), None)
    learnt["machine"] = mine
    if mine is None or not mine.get("active", True):
        checks.append(
            Check(
                "machine",
                False,
                "this machine is not registered, or was revoked",
                "run `ccas init` to register it",
            )
        )
    else:
        checks.append(Check("machine", True, f"{mine.get('hostname')} ({machine_id})"))
    base_url = cfg.get("base_url", "")
    path = claude_settings.settings_path()
    configured = claude_settings.configured_base_url(path)
    wired = configured == base_url and bool(base_url)
    checks.append(
        Check(
            "claude settings",
            wired,
            f"{path} points Claude Code at this machine's proxy"
            if wired
            else f"{path} does not point at this machine's proxy "
            f"({claude_settings.mask(configured or 'no ANTHROPIC_BASE_URL')})",
            "" if wired else "run `ccas init`",
        )
    )
    overrides = claude_settings.overrides(base_url, cwd)
    checks.append(
        Check(
            "overrides",
            not overrides,
            "; ".join(overrides) if overrides else "nothing overrides the user settings",
            "remove those settings (or unset the variable) so Claude Code uses the proxy"
            if overrides
            else "",
        )
    )
    if base_url and mine is not None and mine.get("active", True):
        checks.append(proxy_check(base_url))
    return checks, learnt
