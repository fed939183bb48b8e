"""Per-subject limits: requests per minute, tokens per minute and a monthly spend, enforced
atomically across processes in Redis (one Lua script per check), or in process memory when there
is no Redis (then there is one process).

Both per-minute limits are token buckets that refill continuously (capacity = the limit, refill =
the limit per 60 s), the model OpenAI describes for its own limits:

- ``acquire`` takes one request from the request bucket, provided the token bucket is not empty
  and the month's spend is under budget. Tokens are unknown before the response, so
- ``charge`` takes the tokens actually used (the bucket may go negative: the debt blocks the next
  requests until it has refilled) and adds the cost to the month's spend.

With Redis, ``charge`` costs no round trip of its own: the charge waits in this process and
travels with the subject's next ``acquire`` (the script applies it before it decides, so this
process's next request already sees it), or with the batch a flusher (``hepgg.lib.batching``)
sends every ``CHARGE_FLUSH_SECONDS`` in one pipeline, so other processes see it within that time.

The spend counter lives only in the shared store; when it is missing (a new month, a flushed
Redis) ``acquire`` answers ``budget_unknown`` and the caller seeds it from the database.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from hepgg.lib.batching import Flusher
from hepgg.lib.redis import async_redis, redis_configured

logger = logging.getLogger(__name__)

_NAMESPACE = "hepgg:rl:"
CHARGE_FLUSH_SECONDS = 0.1
_BUCKET_TTL_MS = 120_000  # a bucket is full again after 60 s; keep it a little longer
_SPEND_TTL_MS = 40 * 24 * 3600 * 1000  # a month and then some


@dataclass(frozen=True, slots=True)
class Limits:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    monthly_budget_usd: float | None = None

    @property
    def any(self) -> bool:
        return bool(self.requests_per_minute or self.tokens_per_minute or self.monthly_budget_usd)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""  # "", "requests", "tokens", "budget" or "budget_unknown"
    retry_after: float = 0.0  # seconds, when refused
    requests_remaining: int = 0
    requests_reset: float = 0.0  # seconds until the request bucket is full again
    tokens_remaining: int = 0
    tokens_reset: float = 0.0


def _keys(subject: str, period: str) -> list[str]:
    base = f"{_NAMESPACE}{{{subject}}}"  # one hash slot per subject, should Redis be a cluster
    return [f"{base}:req", f"{base}:tok", f"{base}:spend:{period}"]


# ARGV: mode ("acquire" | "charge"), rpm, tpm, budget (0 = none), tokens, cost, ttls.
# Both modes first apply the charge (tokens, cost) they carry; "acquire" then decides.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local mode = ARGV[1]
local rpm, tpm, budget = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local function level(key, cap)
  local v = redis.call('HMGET', key, 'v', 't')
  local val, ts = tonumber(v[1]), tonumber(v[2])
  if val == nil then return cap end
  local r = val + math.max(0, now - ts) * cap / 60
  if r > cap then r = cap end
  return r
end
local function store(key, val)
  redis.call('HSET', key, 'v', tostring(val), 't', tostring(now))
  redis.call('PEXPIRE', key, ARGV[7])
end
local tokens, cost = tonumber(ARGV[5]), tonumber(ARGV[6])
if tpm > 0 and tokens ~= 0 then store(KEYS[2], level(KEYS[2], tpm) - tokens) end
if budget > 0 and cost ~= 0 and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('INCRBYFLOAT', KEYS[3], ARGV[6])
end
if mode == 'charge' then return {} end
local req = rpm > 0 and level(KEYS[1], rpm) or 0
local tok = tpm > 0 and level(KEYS[2], tpm) or 0
local reason, retry = '', 0
if budget > 0 then
  local spent = redis.call('GET', KEYS[3])
  if not spent then
    reason = 'budget_unknown'
  elseif tonumber(spent) >= budget then
    reason = 'budget'
  end
end
if reason == '' and rpm > 0 and req < 1 then
  reason, retry = 'requests', (1 - req) * 60 / rpm
end
if reason == '' and tpm > 0 and tok < 1 then
  reason, retry = 'tokens', (1 - tok) * 60 / tpm
end
if reason == '' and rpm > 0 then
  req = req - 1
  store(KEYS[1], req)
end
return {reason, tostring(retry), tostring(req), tostring(tok)}
"""


class _LocalLimiter:
    """The same arithmetic as the script, for a single process without Redis."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._spend: dict[str, float] = {}
        self._lock = threading.Lock()

    def _level(self, key: str, cap: int, now: float) -> float:
        value, ts = self._buckets.get(key, (cap, now))
        return min(cap, value + max(0.0, now - ts) * cap / 60)

    def acquire(self, keys: list[str], limits: Limits) -> tuple[str, float, float, float]:
        rpm, tpm = limits.requests_per_minute or 0, limits.tokens_per_minute or 0
        budget = limits.monthly_budget_usd or 0
        with self._lock:
            now = time.monotonic()
            req = self._level(keys[0], rpm, now) if rpm else 0.0
            tok = self._level(keys[1], tpm, now) if tpm else 0.0
            reason, retry = "", 0.0
            if budget:
                spent = self._spend.get(keys[2])
                if spent is None:
                    reason = "budget_unknown"
                elif spent >= budget:
                    reason = "budget"
            if not reason and rpm and req < 1:
                reason, retry = "requests", (1 - req) * 60 / rpm
            if not reason and tpm and tok < 1:
                reason, retry = "tokens", (1 - tok) * 60 / tpm
            if not reason and rpm:
                req -= 1
                self._buckets[keys[0]] = (req, now)
            return reason, retry, req, tok

    def charge(self, keys: list[str], limits: Limits, tokens: int, cost: float) -> None:
        with self._lock:
            now = time.monotonic()
            if limits.tokens_per_minute:
                level = self._level(keys[1], limits.tokens_per_minute, now)
                self._buckets[keys[1]] = (level - tokens, now)
            if limits.monthly_budget_usd and keys[2] in self._spend:
                self._spend[keys[2]] += cost

    def seed(self, key: str, spent: float) -> None:
        with self._lock:
            self._spend.setdefault(key, spent)

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()
            self._spend.clear()


_local = _LocalLimiter()


def _argv(mode: str, limits: Limits, tokens: int = 0, cost: float = 0.0) -> list[str | int]:
    return [
        mode,
        limits.requests_per_minute or 0,
        limits.tokens_per_minute or 0,
        repr(float(limits.monthly_budget_usd or 0)),
        tokens,
        repr(float(cost)),
        _BUCKET_TTL_MS,
    ]


class _PendingCharges:
    """Charges not yet in Redis, summed per (subject, period), and the flusher that sends them.

    A failed send is logged and dropped: Redis unreachable, the limits go easy rather than the
    requests. No exit hook: what a stop loses is one interval's charges of a rate limit."""

    def __init__(self) -> None:
        self._charges: dict[tuple[str, str], tuple[Limits, int, float]] = {}
        self._flusher = Flusher(
            "rate-limit charges",
            flush=self.flush,
            interval=lambda: CHARGE_FLUSH_SECONDS,
            pending=lambda: bool(self._charges),
        )

    def add(self, subject: str, period: str, limits: Limits, tokens: int, cost: float) -> None:
        _limits, old_tokens, old_cost = self._charges.get((subject, period), (limits, 0, 0.0))
        self._charges[(subject, period)] = (limits, old_tokens + tokens, old_cost + cost)
        self._flusher.poke()

    def take(self, subject: str, period: str) -> tuple[int, float]:
        _limits, tokens, cost = self._charges.pop((subject, period), (None, 0, 0.0))
        return tokens, cost

    async def flush(self) -> None:
        charges, self._charges = self._charges, {}
        if not charges:
            return
        client = async_redis()
        script = _script(client)
        async with client.pipeline(transaction=False) as pipe:
            for (subject, period), (limits, tokens, cost) in charges.items():
                await script(
                    keys=_keys(subject, period),
                    args=_argv("charge", limits, tokens, cost),
                    client=pipe,
                )
            await pipe.execute()


_pending = _PendingCharges()
_scripts: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _script(client: Any) -> Any:
    script = _scripts.get(client)
    if script is None:
        script = _scripts[client] = client.register_script(_SCRIPT)
    return script


async def _run_script(keys: list[str], argv: list[str | int]) -> Any:
    """Run ``_SCRIPT`` by its SHA (EVALSHA: the source is sent once per client, not per call)."""
    return await _script(async_redis())(keys=keys, args=argv)


async def acquire(subject: str, limits: Limits, *, period: str) -> Decision:
    """Check every limit of ``subject`` and take one request, all at once or not at all."""
    keys = _keys(subject, period)
    if redis_configured():
        tokens, cost = _pending.take(subject, period)
        raw = await _run_script(keys, _argv("acquire", limits, tokens, cost))
        reason = raw[0].decode() if isinstance(raw[0], bytes) else str(raw[0])
        retry, req, tok = (float(x) for x in raw[1:4])
    else:
        reason, retry, req, tok = _local.acquire(keys, limits)
    rpm, tpm = limits.requests_per_minute or 0, limits.tokens_per_minute or 0
    return Decision(
        allowed=not reason,
        reason=reason,
        retry_after=retry,
        requests_remaining=max(0, math.floor(req)),
        requests_reset=(rpm - req) * 60 / rpm if rpm else 0.0,
        tokens_remaining=max(0, math.floor(tok)),
        tokens_reset=(tpm - tok) * 60 / tpm if tpm else 0.0,
    )


async def charge(subject: str, limits: Limits, *, period: str, tokens: int, cost: float) -> None:
    """Take the tokens a finished request used, and add its cost to the month's spend."""
    if not (limits.tokens_per_minute or limits.monthly_budget_usd):
        return
    if redis_configured():
        _pending.add(subject, period, limits, tokens, cost)
    else:
        _local.charge(_keys(subject, period), limits, tokens, cost)


async def seed_spend(subject: str, *, period: str, spent: float) -> None:
    """Start the month's spend counter at ``spent`` unless another process already did."""
    key = _keys(subject, period)[2]
    if redis_configured():
        await async_redis().set(key, repr(float(spent)), nx=True, px=_SPEND_TTL_MS)
    else:
        _local.seed(key, spent)


def clear_local() -> None:
    """Forget the in-process buckets (tests)."""
    _local.clear()
