"""Per-subject limits: requests per minute, tokens per minute and a monthly spend, shared by
every process through Redis, or in process memory when there is no Redis (then there is one
process) and while Redis is down (``hepgg.lib.redis``'s breaker: then each process counts on its
own, so a limit is enforced per process until Redis is back).

The request bucket refills ``rpm / 60`` per second and holds ``leases.burst(rpm)`` requests (1% of
the minute, at least 6, or the whole limit when smaller); the token bucket holds the whole
minute (``tpm``) and refills ``tpm / 60`` per second, the model OpenAI describes for its limits:

- ``acquire`` takes one request from the request bucket, provided the token bucket is not empty
  and the month's spend is under budget. Tokens are unknown before the response, so
- ``charge`` takes the tokens actually used (the bucket may go negative: the debt blocks the next
  requests until it has refilled) and adds the cost to the month's spend.

With Redis, ``acquire`` spends a *lease*: a slice of the shared request bucket this process took
ahead of need, checked against its view of the tokens and spend (``hepgg.lib.leases`` explains
the bounds). A warm request makes no round trip. ``charge`` costs no round trip either: the
charge counts against this process's view at once, and waits here until the next lease fetch
carries it, or the batch a flusher (``hepgg.lib.batching``) sends every ``CHARGE_FLUSH_SECONDS``
in one pipeline.

While Redis is unreachable, a process spends what its lease holds, then counts in its own memory
(each process then allows the whole limit); shared counting resumes when Redis answers again.

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

from hepgg.lib import leases
from hepgg.lib.batching import Flusher
from hepgg.lib.redis import OUTAGE, async_redis, redis_configured, redis_failed, redis_up

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

    def _level(self, key: str, cap: int, per_minute: int, now: float) -> float:
        value, ts = self._buckets.get(key, (cap, now))
        return min(cap, value + max(0.0, now - ts) * per_minute / 60)

    def acquire(self, keys: list[str], limits: Limits) -> tuple[str, float, float, float]:
        rpm, tpm = limits.requests_per_minute or 0, limits.tokens_per_minute or 0
        budget = limits.monthly_budget_usd or 0
        with self._lock:
            now = time.monotonic()
            req = self._level(keys[0], leases.burst(rpm), rpm, now) if rpm else 0.0
            tok = self._level(keys[1], tpm, tpm, now) if tpm else 0.0
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
                tpm = limits.tokens_per_minute
                level = self._level(keys[1], tpm, tpm, now)
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

    def put_back(self, subject: str, period: str, limits: Limits, tokens: int, cost: float) -> None:
        """Charges ``take`` handed to a script that never ran: they wait for the next flush."""
        if tokens or cost:
            self.add(subject, period, limits, tokens, cost)

    def take(self, subject: str, period: str) -> tuple[int, float]:
        _limits, tokens, cost = self._charges.pop((subject, period), (None, 0, 0.0))
        return tokens, cost

    async def flush(self) -> None:
        if not self._charges or not redis_up():  # while Redis is down they wait for it here
            return
        charges, self._charges = self._charges, {}
        client = async_redis()
        script = _script(client)
        try:
            async with client.pipeline(transaction=False) as pipe:
                for (subject, period), (limits, tokens, cost) in charges.items():
                    await script(
                        keys=_keys(subject, period),
                        args=_argv("charge", limits, tokens, cost),
                        client=pipe,
                    )
                await pipe.execute()
        except OUTAGE as exc:
            redis_failed(exc)
            for (subject, period), (limits, tokens, cost) in charges.items():
                self.put_back(subject, period, limits, tokens, cost)


_pending = _PendingCharges()
_leases = leases.LeaseTable()


def _quota(limits: Limits) -> leases.Quota:
    return leases.Quota(
        limits.requests_per_minute or 0,
        limits.tokens_per_minute or 0,
        float(limits.monthly_budget_usd or 0),
    )


_scripts: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _script(client: Any) -> Any:
    script = _scripts.get(client)
    if script is None:
        script = _scripts[client] = client.register_script(_SCRIPT)
    return script


async def acquire(subject: str, limits: Limits, *, period: str) -> Decision:
    """Check every limit of ``subject`` and take one request, all at once or not at all."""
    keys = _keys(subject, period)
    if redis_up():
        try:
            reason, retry, req, tok = await _leases.acquire(
                keys,
                _quota(limits),
                take=lambda: _pending.take(subject, period),
                put_back=lambda tokens, cost: _pending.add(subject, period, limits, tokens, cost),
            )
        except leases.SharedStoreDown:
            reason, retry, req, tok = _local.acquire(keys, limits)
    else:
        reason, retry, req, tok = _local.acquire(keys, limits)
    rpm, tpm = limits.requests_per_minute or 0, limits.tokens_per_minute or 0
    return Decision(
        allowed=not reason,
        reason=reason,
        retry_after=retry,
        requests_remaining=max(0, math.floor(req)),
        requests_reset=max(0.0, leases.burst(rpm) - req) * 60 / rpm if rpm else 0.0,
        tokens_remaining=max(0, math.floor(tok)),
        tokens_reset=(tpm - tok) * 60 / tpm if tpm else 0.0,
    )


async def charge(subject: str, limits: Limits, *, period: str, tokens: int, cost: float) -> None:
    """Take the tokens a finished request used, and add its cost to the month's spend."""
    if not (limits.tokens_per_minute or limits.monthly_budget_usd):
        return
    keys = _keys(subject, period)
    if redis_configured():
        _pending.add(subject, period, limits, tokens, cost)
        _leases.note_charge(keys, tokens, cost)
        if _leases.down() or not redis_up():  # the local counters decide meanwhile: show them
            _local.charge(keys, limits, tokens, cost)
    else:
        _local.charge(keys, limits, tokens, cost)


async def seed_spend(subject: str, *, period: str, spent: float) -> None:
    """Start the month's spend counter at ``spent`` unless another process already did."""
    key = _keys(subject, period)[2]
    if redis_up():
        try:
            await async_redis().set(key, repr(float(spent)), nx=True, px=_SPEND_TTL_MS)
            return
        except OUTAGE as exc:  # Redis away: the local counters need the spend instead
            redis_failed(exc)
    _local.seed(key, spent)


async def flush_charges() -> None:
    """Send the charges waiting in this process now (benchmarks, tests)."""
    await _pending.flush()


def clear_local() -> None:
    """Forget the in-process buckets and leases (tests)."""
    _local.clear()
    _leases.clear()
