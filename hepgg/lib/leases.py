"""Quota leases: each process spends a slice of a key's shared allowance locally, so a warm
request checks its limits without a Redis round trip.

Semantics (what a limit means)
------------------------------
*Requests per minute* is a token bucket that refills ``rpm / 60`` per second and holds at most
``burst(rpm) = min(rpm, max(6, ceil(rpm / 100)))`` requests: 1% of the minute (at least 6, or the
whole limit when it is smaller). A bucket as deep as the whole minute (our first version) lets a
key through ``2 * rpm`` in its first minute; a shallow one is what OpenAI documents as "quantized"
limits, and what GCRA and Envoy's token buckets do. So, in any window of ``T`` seconds:

    admitted ≤ burst(rpm) + rpm · T / 60 + (request tokens leased but unspent at its start)

and a fresh key (no lease anywhere yet) admits at most ``burst + rpm · T / 60``: 606 in a minute
at 600 rpm, 1% above. Leases cannot loosen that: a slice leaves the shared bucket before it is
spent, and a process only spends what it holds. Over a minute of steady load the count is at
least ``rpm · T / 60`` minus what sits idle in leases when the window ends (at most
``workers * slice_cap(rpm)``, given back after ``IDLE_RETURN_SECONDS``) — covered by the burst at
600 rpm with 4 workers, as the 60-second test shows.

*Tokens per minute* keeps a bucket as deep as the whole minute (a single request may use many
tokens), charged after the response; *the monthly budget* is a counter. Both are checked against
the process's *view*: the shared levels read with its last slice, minus the charges this process
made since (which travel to Redis in batches, ``ratelimit.CHARGE_FLUSH_SECONDS``). The view is
refreshed in the background once it is ``VIEW_SECONDS`` old, and a request waits for a fresh
one only when it is ``VIEW_MAX_SECONDS`` old (an idle key).

The budget bound. Call a request *in flight* from its admission until its cost is in the shared
counter (across all processes: still being answered upstream, or charged but waiting in a
process's batch, at most ``CHARGE_FLUSH_SECONDS``). The month's spend never exceeds the budget by
more than the cost of the requests in flight when it crossed. Far from the budget a process
decides on its view, which is enough; *near* it (less left than ``NEAR_BUDGET_REQUESTS`` requests
at the key's average cost, or than ``NEAR_BUDGET_SECONDS`` of the whole fleet's spend rate seen
between two reads) every admission reads the shared counter, carrying this process's waiting
charges, so a stale view cannot admit past the crossing.

Why this and not another design. Envoy's global rate limiting asks its rate-limit service on
every request (exact, but the round trip we are removing; and its fixed windows let up to twice
the limit through across a window boundary); its local rate limit is a token bucket per instance
(no round trip, but the error grows with the number of instances); its quota service (RLQS)
assigns each instance a share from periodic usage reports, so the error is bounded by the
assignments outstanding. A sliding window (Cloudflare's) estimates the previous window's share
and is approximate. Leasing from one shared bucket keeps the no-round-trip speed of local
limits with an error bounded by what is leased, which the give-back and the slice cap keep small.

How the slices move (the design of quota services such as Doorman's: a client holds capacity
leased from a server, asks ahead of need, and gives back what it does not use):

- a cold key, or a process whose slice ran out, pays one round trip (``_SCRIPT`` charges what is
  waiting, reads the levels and grants up to ``want`` requests, all atomically); the slice is
  sized for every request waiting on it, so a burst on a cold key is not turned away;
- once a slice is down to half, the next one is fetched in the background (prefetch), and a
  slice doubles while it is used up within ``LEASE_HORIZON`` (up to ``slice_cap``), halves when
  it is not;
- a slice unused for ``IDLE_RETURN_SECONDS`` goes back to the shared bucket;
- when the bucket is empty the answer is a 429 whose ``Retry-After`` is when the next request
  refills; this process answers 429 locally until then.

While Redis is unreachable, a process keeps spending what its lease holds, then ``acquire``
raises ``SharedStoreDown`` and the caller falls back to per-process counters (``ratelimit``'s
``_LocalLimiter``: each process then allows the whole limit). A probe in the background every
``REDIS_RETRY_SECONDS`` notices Redis is back, and shared leasing resumes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from hepgg.lib.redis import OUTAGE, async_redis, redis_failed

logger = logging.getLogger(__name__)

BURST_FRACTION = 0.01
BURST_FLOOR = 6
LEASE_HORIZON = 0.5  # a slice holds at most this many seconds of the key's rate
IDLE_RETURN_SECONDS = 1.0
VIEW_SECONDS = 0.1
VIEW_MAX_SECONDS = 1.0
NEAR_BUDGET_REQUESTS = 100
NEAR_BUDGET_SECONDS = 1.0
REDIS_RETRY_SECONDS = 1.0
_BUCKET_TTL_MS = 120_000
_MAX_LEASES = 10_000
_ATTEMPTS = 4


def burst(rpm: int) -> int:
    """How many requests a full request bucket holds."""
    return min(rpm, max(BURST_FLOOR, math.ceil(rpm * BURST_FRACTION)))


def slice_cap(rpm: int) -> int:
    """The largest slice a process leases at once."""
    return max(1, min(burst(rpm), math.ceil(rpm / 60 * LEASE_HORIZON)))


class SharedStoreDown(Exception):
    """Redis is unreachable and the lease cannot decide: use per-process counters."""


# KEYS: requests bucket, tokens bucket, month's spend.
# ARGV: rpm, burst, tpm, budget (0 = none), want, give back, tokens, cost (charges), ttl ms.
# Applies the charges and the give-back, then grants up to ``want`` requests when the budget and
# the tokens bucket allow. Returns reason, retry, granted, requests level, tokens level, spend.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rpm, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tpm, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
local want, give = tonumber(ARGV[5]), tonumber(ARGV[6])
local tokens, cost = tonumber(ARGV[7]), tonumber(ARGV[8])
local function level(key, cap, per_minute)
  local v = redis.call('HMGET', key, 'v', 't')
  local val, ts = tonumber(v[1]), tonumber(v[2])
  if val == nil then return cap end
  local r = val + math.max(0, now - ts) * per_minute / 60
  if r > cap then r = cap end
  return r
end
local function store(key, val)
  redis.call('HSET', key, 'v', tostring(val), 't', tostring(now))
  redis.call('PEXPIRE', key, ARGV[9])
end
if tpm > 0 and tokens ~= 0 then store(KEYS[2], level(KEYS[2], tpm, tpm) - tokens) end
if budget > 0 and cost ~= 0 and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('INCRBYFLOAT', KEYS[3], ARGV[8])
end
local req = 0
if rpm > 0 then
  req = level(KEYS[1], burst, rpm)
  if give > 0 then
    req = math.min(burst, req + give)
    store(KEYS[1], req)
  end
end
local tok = tpm > 0 and level(KEYS[2], tpm, tpm) or 0
local reason, retry, grant, spent = '', 0, 0, ''
if budget > 0 then
  spent = redis.call('GET', KEYS[3])
  if not spent then
    reason, spent = 'budget_unknown', ''
  elseif tonumber(spent) >= budget then
    reason = 'budget'
  end
end
if reason == '' and tpm > 0 and tok < 1 then
  reason, retry = 'tokens', (1 - tok) * 60 / tpm
end
if reason == '' and rpm > 0 and want > 0 then
  grant = math.min(want, math.floor(req))
  if grant < 1 then
    grant = 0
    reason, retry = 'requests', (1 - req) * 60 / rpm
  else
    req = req - grant
    store(KEYS[1], req)
  end
end
return {reason, tostring(retry), grant, tostring(req), tostring(tok), spent}
"""

_scripts: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _script() -> Any:
    client = async_redis()
    script = _scripts.get(client)
    if script is None:
        script = _scripts[client] = client.register_script(_SCRIPT)
    return script


@dataclass(frozen=True, slots=True)
class Quota:
    rpm: int
    tpm: int
    budget: float


# Charges not yet in Redis, kept by the caller: ``take`` hands them to a fetch, ``put_back``
# returns them when the fetch failed.
TakeCharges = Callable[[], tuple[int, float]]
PutBackCharges = Callable[[int, float], None]


@dataclass(slots=True)
class Lease:
    """One key's state in this process: the requests it holds and its view of the shared levels."""

    requests: int = 0
    slice: int = 1
    shared_requests: float = 0.0  # the shared bucket's level when last read
    tokens: float = 0.0  # the tokens bucket's level when last read
    spent: float | None = None  # the month's spend when last read (None: not seeded)
    viewed_at: float | None = None  # monotonic time of the last read; None: cold
    unseen_tokens: int = 0  # charges made here since the last read started
    unseen_cost: float = 0.0
    refused_until: float = 0.0  # the shared bucket is empty until then (no round trips)
    waiting: int = 0  # requests here waiting for a slice
    average_cost: float = 0.0  # of this process's requests (moving average)
    spend_rate: float = 0.0  # of the whole fleet, dollars a second, from two reads
    granted_at: float = 0.0
    last_used: float = 0.0
    fetch: asyncio.Task[None] | None = None
    idle_timer: asyncio.TimerHandle | None = None


class LeaseTable:
    """The leases of this process, one per (key, month)."""

    def __init__(self) -> None:
        self._leases: dict[str, Lease] = {}
        self._down_until = 0.0  # Redis failed: do not try again on the request path before
        self._tasks: set[asyncio.Task[None]] = set()  # asyncio keeps only weak references

    # -- the request path -------------------------------------------------------------------
    async def acquire(
        self, keys: list[str], quota: Quota, take: TakeCharges, put_back: PutBackCharges
    ) -> tuple[str, float, float, float]:
        """Decide one request: (reason or "", retry after, requests left, tokens left)."""
        lease = self._lease(keys)
        now = time.monotonic()
        if self._must_wait(lease, quota, now):
            await self._refresh(keys, lease, quota, take, put_back)
            now = time.monotonic()
        reason, retry = self._check_view(lease, quota, now)
        if not reason and quota.rpm:
            # The slice ran out: fetch one sized for every request waiting here. Concurrent
            # requests may take what one fetch brought, so try a few times before a 429.
            attempts = 0
            while lease.requests < 1 and now >= lease.refused_until and attempts < _ATTEMPTS:
                attempts += 1
                lease.waiting += 1
                try:
                    await self._refresh(keys, lease, quota, take, put_back)
                finally:
                    lease.waiting -= 1
                now = time.monotonic()
                reason, retry = self._check_view(lease, quota, now)
                if reason:
                    break
            if not reason:
                if lease.requests >= 1:
                    lease.requests -= 1
                    lease.last_used = now
                elif self._down(now):
                    raise SharedStoreDown
                else:
                    reason, retry = "requests", max(0.001, lease.refused_until - now)
        self._maybe_prefetch(keys, lease, quota, take, put_back, now)
        left = self._requests_left(lease, quota, now)
        return reason, retry, left, self._tokens(lease, quota, now)

    def note_charge(self, keys: list[str], tokens: int, cost: float) -> None:
        """Count a charge this process made against its own view at once."""
        lease = self._leases.get(keys[2])
        if lease is not None:
            lease.unseen_tokens += tokens
            lease.unseen_cost += cost
            lease.average_cost += (cost - lease.average_cost) / 8

    def down(self) -> bool:
        return self._down(time.monotonic())

    def clear(self) -> None:
        for lease in self._leases.values():
            if lease.idle_timer is not None:
                lease.idle_timer.cancel()
        self._leases.clear()
        self._down_until = 0.0

    # -- decisions --------------------------------------------------------------------------
    def _lease(self, keys: list[str]) -> Lease:
        lease = self._leases.get(keys[2])
        if lease is None:
            if len(self._leases) >= _MAX_LEASES:
                self._forget_idle()
            lease = self._leases[keys[2]] = Lease()
        return lease

    def _forget_idle(self) -> None:
        cutoff = time.monotonic() - 60
        for name, lease in list(self._leases.items()):
            if lease.requests == 0 and lease.last_used < cutoff and lease.fetch is None:
                del self._leases[name]

    def _down(self, now: float) -> bool:
        return now < self._down_until

    def _must_wait(self, lease: Lease, quota: Quota, now: float) -> bool:
        """Whether this request must read the shared levels before it can be decided."""
        if lease.viewed_at is None or (quota.budget and lease.spent is None):
            return not (self._down(now) and lease.requests >= 1)
        if self._down(now):
            return False
        if quota.budget and self._near_budget(lease, quota):
            return True
        if quota.tpm or quota.budget:
            return now - lease.viewed_at > VIEW_MAX_SECONDS
        return False

    @staticmethod
    def _near_budget(lease: Lease, quota: Quota) -> bool:
        """Whether the budget is close enough that a stale view could admit past it."""
        left = quota.budget - (lease.spent or 0.0) - lease.unseen_cost
        margin = max(
            NEAR_BUDGET_REQUESTS * lease.average_cost, NEAR_BUDGET_SECONDS * lease.spend_rate
        )
        return 0 < left <= margin

    def _check_view(self, lease: Lease, quota: Quota, now: float) -> tuple[str, float]:
        if quota.budget:
            if lease.spent is None:
                return "budget_unknown", 0.0
            if lease.spent + lease.unseen_cost >= quota.budget:
                return "budget", 0.0
        if quota.tpm:
            tokens = self._tokens(lease, quota, now)
            if tokens < 1:
                return "tokens", (1 - tokens) * 60 / quota.tpm
        return "", 0.0

    def _tokens(self, lease: Lease, quota: Quota, now: float) -> float:
        if not quota.tpm or lease.viewed_at is None:
            return 0.0
        refilled = lease.tokens + max(0.0, now - lease.viewed_at) * quota.tpm / 60
        return min(float(quota.tpm), refilled) - lease.unseen_tokens

    def _requests_left(self, lease: Lease, quota: Quota, now: float) -> float:
        if not quota.rpm or lease.viewed_at is None:
            return float(lease.requests)
        refilled = lease.shared_requests + max(0.0, now - lease.viewed_at) * quota.rpm / 60
        return lease.requests + min(float(burst(quota.rpm)), refilled)

    # -- fetching slices --------------------------------------------------------------------
    def _maybe_prefetch(
        self,
        keys: list[str],
        lease: Lease,
        quota: Quota,
        take: TakeCharges,
        put_back: PutBackCharges,
        now: float,
    ) -> None:
        if lease.fetch is not None and not lease.fetch.done():
            return
        if self._down(now):
            return
        low = quota.rpm and lease.requests <= lease.slice // 2 and now >= lease.refused_until
        stale = (quota.tpm or quota.budget) and (
            lease.viewed_at is None or now - lease.viewed_at > VIEW_SECONDS
        )
        if low or stale:
            lease.fetch = self._spawn(self._fetch(keys, lease, quota, take, put_back))

    async def _refresh(
        self,
        keys: list[str],
        lease: Lease,
        quota: Quota,
        take: TakeCharges,
        put_back: PutBackCharges,
    ) -> None:
        """Wait for a fetch (the one in flight, or a new one)."""
        if self._down(time.monotonic()):
            if lease.requests >= 1:
                return  # spend what the lease holds first
            raise SharedStoreDown
        task = lease.fetch
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            task = lease.fetch = self._spawn(self._fetch(keys, lease, quota, take, put_back))
        await asyncio.shield(task)
        if lease.viewed_at is None or (self._down(time.monotonic()) and lease.requests < 1):
            raise SharedStoreDown

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _want(self, lease: Lease, quota: Quota, now: float) -> int:
        if not quota.rpm or (lease.requests > lease.slice // 2 and not lease.waiting):
            return 0
        if lease.granted_at:
            used_in = now - lease.granted_at
            if used_in < LEASE_HORIZON / 2:
                lease.slice = min(slice_cap(quota.rpm), lease.slice * 2)
            elif used_in > 2 * LEASE_HORIZON:
                lease.slice = max(1, lease.slice // 2)
        return max(lease.slice, min(lease.waiting, burst(quota.rpm)))

    async def _fetch(
        self,
        keys: list[str],
        lease: Lease,
        quota: Quota,
        take: TakeCharges,
        put_back: PutBackCharges,
        give_back: int = 0,
    ) -> None:
        """One round trip: send the charges waiting here, read the levels, lease a slice."""
        started = time.monotonic()
        want = 0 if give_back else self._want(lease, quota, started)
        tokens, cost = take()
        unseen = lease.unseen_tokens, lease.unseen_cost
        lease.unseen_tokens, lease.unseen_cost = 0, 0.0  # from here on, the read includes them
        argv = [quota.rpm, burst(quota.rpm) if quota.rpm else 0, quota.tpm, repr(quota.budget)]
        argv += [want, give_back, tokens, repr(float(cost)), _BUCKET_TTL_MS]
        try:
            raw = await _script()(keys=keys, args=argv)
        except (RedisError, OSError) as exc:
            if isinstance(exc, OUTAGE):
                redis_failed(exc)  # the whole process skips Redis until the breaker's probe
            lease.unseen_tokens += unseen[0]
            lease.unseen_cost += unseen[1]
            if tokens or cost:
                put_back(tokens, cost)
            self._down_until = time.monotonic() + REDIS_RETRY_SECONDS
            logger.warning("Redis unreachable: limits fall back to this process's counters")
            self._spawn_probe(keys, lease, quota, take, put_back)
            return
        now = time.monotonic()
        self._down_until = 0.0
        reason = raw[0].decode() if isinstance(raw[0], bytes) else str(raw[0])
        granted = int(raw[2])
        lease.shared_requests, lease.tokens = float(raw[3]), float(raw[4])
        spent = raw[5].decode() if isinstance(raw[5], bytes) else str(raw[5])
        previous, previous_at = lease.spent, lease.viewed_at
        lease.spent = float(spent) if spent else None
        if previous is not None and lease.spent is not None and previous_at is not None:
            rate = max(0.0, lease.spent - previous) / max(1e-3, now - previous_at)
            lease.spend_rate = max(rate, lease.spend_rate * 0.5)  # quick up, slow down
        lease.viewed_at = now
        if reason == "requests" and want:
            lease.refused_until = now + float(raw[1])
        if granted:
            lease.refused_until = 0.0
            lease.requests += granted
            lease.granted_at = lease.last_used = now
            self._arm_idle_timer(keys, lease, quota, take, put_back)

    def _spawn_probe(
        self,
        keys: list[str],
        lease: Lease,
        quota: Quota,
        take: TakeCharges,
        put_back: PutBackCharges,
    ) -> None:
        """Try Redis again in ``REDIS_RETRY_SECONDS``, off the request path."""

        def probe() -> None:
            if lease.fetch is None or lease.fetch.done():
                lease.fetch = self._spawn(self._fetch(keys, lease, quota, take, put_back))

        asyncio.get_running_loop().call_later(REDIS_RETRY_SECONDS, probe)

    def _arm_idle_timer(
        self,
        keys: list[str],
        lease: Lease,
        quota: Quota,
        take: TakeCharges,
        put_back: PutBackCharges,
    ) -> None:
        if lease.idle_timer is not None:
            return
        loop = asyncio.get_running_loop()

        def check() -> None:
            lease.idle_timer = None
            if lease.requests < 1:
                return
            if time.monotonic() - lease.last_used < IDLE_RETURN_SECONDS or (
                lease.fetch is not None and not lease.fetch.done()
            ):
                self._arm_idle_timer(keys, lease, quota, take, put_back)
                return
            give, lease.requests = lease.requests, 0
            lease.slice = max(1, lease.slice // 2)
            lease.fetch = self._spawn(
                self._fetch(keys, lease, quota, take, put_back, give_back=give)
            )

        lease.idle_timer = loop.call_later(IDLE_RETURN_SECONDS, check)
