"""Claude Code transcripts in Claude Code's own format, and the sums they must add up to.

Lines are written as Claude Code writes them: compact JSON, one object a line; an assistant
response with several content blocks is one line per block, each repeating the usage; user turns,
tool results and summaries carry no usage; a sub-agent's sidechain file replays a parent message
under a new request id; a resumed session copies an earlier response into its own file; and a
malformed, truncated line sits in the middle.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

SONNET = "claude-sonnet-4-5-20250929"
UNPRICED = "claude-nonesuch-1"  # matches no row of the price table
VERSION = "2.0.14"
# USD per million tokens of claude-sonnet-4-5* (catalog/data/prices.json)
SONNET_PRICES = {"input": 3, "output": 15, "w5m": Decimal("3.75"), "w1h": 6, "read": Decimal("0.3")}


@dataclass(frozen=True)
class Req:
    """One API request as the transcript records it."""

    message_id: str
    request_id: str
    model: str
    timestamp: str
    input: int
    output: int
    write_5m: int
    write_1h: int
    read: int
    split: bool = True  # whether usage.cache_creation (the 5m/1h split) is written

    @property
    def cache_write(self) -> int:
        return self.write_5m + self.write_1h

    @property
    def cost(self) -> Decimal | None:
        if self.model != SONNET:
            return None
        p = SONNET_PRICES
        total = (
            self.input * p["input"]
            + self.output * p["output"]
            + self.write_5m * p["w5m"]
            + self.write_1h * p["w1h"]
            + self.read * p["read"]
        )
        return Decimal(total) / Decimal(1_000_000)


R1 = Req("msg_01A1", "req_011A1", SONNET, "2026-11-20T10:00:00.120Z", 3, 2, 400, 600, 5000)
R2 = Req("msg_01A2", "req_011A2", SONNET, "2026-11-20T10:05:10.500Z", 10, 150, 0, 0, 6000)
R3 = Req("msg_01A3", "req_011A3", UNPRICED, "2026-11-20T11:00:00.000Z", 1, 1, 0, 0, 0)
R5 = Req("msg_01A5", "req_011A5", SONNET, "2026-11-20T10:02:00.000Z", 7, 30, 0, 0, 900)
R4 = Req("msg_01A4", "req_011A4", SONNET, "2026-11-21T23:30:00.000Z", 5, 20, 200, 0, 0, split=False)
R6 = Req("msg_01B1", "req_011B1", SONNET, "2026-11-21T08:00:00.000Z", 100, 400, 3000, 0, 20000)
REQUESTS = [R1, R2, R3, R4, R5, R6]
SESSION_1 = "5f0c2a1e-1111-4c1d-9a6e-0a1b2c3d4e5f"
SESSION_2 = "7a9d3b2f-2222-4e8f-8b7a-1b2c3d4e5f60"
SESSION_3 = "9c8b7a6d-3333-4a5b-9c8d-2c3d4e5f6071"
CWD_A, CWD_B = "/home/dev/alpha", "/home/dev/beta"


def _base(session: str, cwd: str, timestamp: str, sidechain: bool = False) -> dict[str, Any]:
    return {
        "parentUuid": str(uuid.uuid4()),
        "isSidechain": sidechain,
        "userType": "external",
        "cwd": cwd,
        "sessionId": session,
        "version": VERSION,
        "gitBranch": "main",
        "uuid": str(uuid.uuid4()),
        "timestamp": timestamp,
    }


def assistant_lines(
    req: Req,
    session: str,
    cwd: str,
    blocks: int = 1,
    *,
    sidechain: bool = False,
    request_id: str | None = None,
) -> list[dict[str, Any]]:
    """The ``blocks`` lines Claude Code writes for one response (thinking, text, tool use…)."""
    usage: dict[str, Any] = {
        "input_tokens": req.input,
        "cache_creation_input_tokens": req.cache_write,
        "cache_read_input_tokens": req.read,
        "output_tokens": req.output,
        "service_tier": "standard",
    }
    if req.split:
        usage["cache_creation"] = {
            "ephemeral_5m_input_tokens": req.write_5m,
            "ephemeral_1h_input_tokens": req.write_1h,
        }
    kinds = [
        {"type": "thinking", "thinking": "Let me look.", "signature": "sig"},
        {"type": "text", "text": "Here is the change."},
        {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "ls"}},
    ]
    lines = []
    for index in range(blocks):
        lines.append(
            {
                **_base(session, cwd, req.timestamp, sidechain),
                "message": {
                    "id": req.message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": req.model,
                    "content": [kinds[index % len(kinds)]],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": usage,
                },
                "requestId": request_id or req.request_id,
                "type": "assistant",
            }
        )
    return lines


def user_line(session: str, cwd: str, timestamp: str, text: str = "Fix the tests") -> dict:
    return {
        **_base(session, cwd, timestamp),
        "type": "user",
        "message": {"role": "user", "content": text},
    }


def tool_result_line(session: str, cwd: str, timestamp: str) -> dict:
    return {
        **_base(session, cwd, timestamp),
        "type": "user",
        "message": {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "ok"}],
        },
    }


def dump(lines: list[dict[str, Any] | str]) -> str:
    out = []
    for line in lines:
        out.append(line if isinstance(line, str) else json.dumps(line, separators=(",", ":")))
    return "\n".join(out) + "\n"


def write_transcripts(home: Path) -> dict[str, Path]:
    """The fixture set under ``home``: two config roots, three sessions, a sub-agent file."""
    alpha = home / ".claude" / "projects" / "-home-dev-alpha"
    beta = home / ".config" / "claude" / "projects" / "-home-dev-beta"
    files = {
        "s1": alpha / f"{SESSION_1}.jsonl",
        "agent": alpha / SESSION_1 / "subagents" / "agent-5f0c2a1e.jsonl",
        "s2": alpha / f"{SESSION_2}.jsonl",
        "s3": beta / f"{SESSION_3}.jsonl",
    }
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    files["s1"].write_text(
        dump(
            [
                {"type": "summary", "summary": "Fixing the tests", "leafUuid": str(uuid.uuid4())},
                user_line(SESSION_1, CWD_A, "2026-11-20T09:59:58.000Z"),
                *assistant_lines(R1, SESSION_1, CWD_A, blocks=2),
                tool_result_line(SESSION_1, CWD_A, "2026-11-20T10:00:05.000Z"),
                *assistant_lines(R2, SESSION_1, CWD_A, blocks=3),
                '{"type":"assistant","message":{"id":"msg_trunc","usage":{"input_tok',
                "not json at all",
                *assistant_lines(R3, SESSION_1, CWD_A),
            ]
        )
    )
    files["agent"].write_text(
        dump(
            [
                *assistant_lines(R5, SESSION_1, CWD_A, blocks=2, sidechain=True),
                # the sub-agent's log replays the parent's response under a new request id
                *assistant_lines(R1, SESSION_1, CWD_A, sidechain=True, request_id="req_011A1b"),
            ]
        )
    )
    files["s2"].write_text(
        dump([user_line(SESSION_2, CWD_A, R4.timestamp), *assistant_lines(R4, SESSION_2, CWD_A)])
    )
    files["s3"].write_text(
        dump(
            [
                # a resumed session starts with a copy of an earlier response
                *assistant_lines(R4, SESSION_2, CWD_A),
                user_line(SESSION_3, CWD_B, R6.timestamp),
                *assistant_lines(R6, SESSION_3, CWD_B, blocks=2),
            ]
        )
    )
    return files


def day_totals(requests: list[Req]) -> dict[str, dict[str, Any]]:
    """What a daily report must show, by UTC day."""
    days: dict[str, dict[str, Any]] = {}
    for req in requests:
        day = days.setdefault(
            req.timestamp[:10],
            {"input": 0, "output": 0, "write": 0, "read": 0, "cost": Decimal(0), "requests": 0},
        )
        day["input"] += req.input
        day["output"] += req.output
        day["write"] += req.cache_write
        day["read"] += req.read
        day["requests"] += 1
        day["cost"] += req.cost or 0
    return days
