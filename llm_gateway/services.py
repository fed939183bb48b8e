"""The OpenAI-compatible gateway's work, one step per function, in the order a request meets them:
authenticate the key, parse the request, route its model, take its rate limits, relay it to the
provider (JSON or SSE), then meter it. All async and free of ORM calls on the event loop: the key
comes from ``aresolve``'s cache, the route from ``providers.aroute``'s, usage goes to the batched
``usage_writer``.

Everything before the first byte of the response may raise ``GatewayError``; after it, failures
travel in-band as an SSE error event (``chat_completion_relay``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import replace
from decimal import Decimal
from typing import Any, Protocol

import orjson
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.db.models import Sum

from accounts.credentials import ApiKeyIdentity, aresolve
from accounts.tokens import Kind, claimed_kind
from catalog.pricing import aprice_table
from hepgg.lib import authfailures, http1, ratelimit
from hepgg.lib.disconnect import DisconnectWatch
from hepgg.lib.sse import SSEDecoder
from llm_gateway.errors import GatewayError, InvalidApiKey, sse_error_event, upstream_error
from llm_gateway.metering import Tally
from llm_gateway.providers import Route, aroute, error_from_body
from usage.writer import NOT_PRICED_YET, record_cost, usage_writer

logger = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]


class Exchange(Protocol):
    """The client side of one request, as the ASGI layer provides it."""

    request_id: bytes
    upstream_wait: float
    watch: DisconnectWatch

    async def start(self, status: int, headers: Headers) -> None: ...
    async def body(self, data: bytes, *, more: bool) -> None: ...
    async def respond(self, status: int, headers: Headers, body: bytes) -> None: ...


# -- authentication ----------------------------------------------------------------------------
async def api_key_authenticate(*, authorization: bytes | None, client: str = "-") -> ApiKeyIdentity:
    """The identity of the ``Authorization: Bearer sk-hyd-…`` header; raises ``InvalidApiKey``,
    or a 429 once ``client`` has failed too often (``hepgg.lib.authfailures``)."""
    scheme, _, value = (authorization or b"").decode("latin-1").strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        raise InvalidApiKey(presented=bool(authorization))
    if (wait := authfailures.blocked("api_key", client)) is not None:
        raise _too_many_failures(wait)
    kind = claimed_kind(value)
    if kind is not Kind.API_KEY:
        hint = None
        if kind is not None:
            hint = (
                f"This is {kind.with_article} ({kind.example}); /v1 takes an API key "
                f"({Kind.API_KEY.example}) minted for a model."
            )
        raise await _refused(client, InvalidApiKey(hint))
    identity = await aresolve(value, Kind.API_KEY)
    if not isinstance(identity, ApiKeyIdentity):
        raise await _refused(client, InvalidApiKey())
    return identity


def _too_many_failures(retry_after: int) -> GatewayError:
    return GatewayError(
        429,
        f"Too many failed authentications from this address; retry after {retry_after} seconds.",
        type="rate_limit_error",
        code="too_many_failed_authentications",
        headers=[(b"retry-after", str(retry_after).encode())],
    )


async def _refused(client: str, error: InvalidApiKey) -> GatewayError:
    verdict = await authfailures.afailed("api_key", client)
    return error if verdict.retry_after is None else _too_many_failures(verdict.retry_after)


# -- the request -------------------------------------------------------------------------------
def _invalid_type(param: str, expected: str, value: Any) -> GatewayError:
    return GatewayError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {type(value).__name__}.",
        param=param,
        code="invalid_type",
    )


def chat_request_parse(*, body: bytes) -> dict[str, Any]:
    """The request object, checked as far as the gateway needs; raises a 400 ``GatewayError``."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(
            400,
            f"We could not parse the JSON body of your request ({exc}). "
            "The API expects a JSON object.",
            code="invalid_json",
        ) from None
    if not isinstance(payload, dict):
        raise GatewayError(400, "The request body must be a JSON object.", code="invalid_json")
    for param in ("model", "messages"):
        if param not in payload:
            raise GatewayError(
                400,
                f"Missing required parameter: '{param}'.",
                param=param,
                code="missing_required_parameter",
            )
    if not isinstance(payload["model"], str):
        raise _invalid_type("model", "a string", payload["model"])
    messages = payload["messages"]
    if not isinstance(messages, list):
        raise _invalid_type("messages", "an array of objects", messages)
    if not messages:
        raise GatewayError(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            param="messages",
            code="empty_array",
        )
    if payload.get("stream") is not None and not isinstance(payload["stream"], bool):
        raise _invalid_type("stream", "a boolean", payload["stream"])
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _invalid_type("stream_options", "an object", options)
    return payload


def _model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


async def model_route_resolve(*, identity: ApiKeyIdentity, requested: str) -> Route:
    """The route of the key's one model; 404 for any other model, 503 when unconfigured."""
    if requested != identity.model_slug:
        raise _model_not_found(requested)
    route = await aroute(identity.model_id)
    if route is None or not route.enabled:
        raise _model_not_found(requested)
    if route.missing:
        raise GatewayError(
            503,
            f"The provider of model `{route.slug}` ({route.provider}) is not configured: "
            f"set {' and '.join(route.missing)}.",
            type="server_error",
            code="provider_not_configured",
        )
    return route


# -- limits ------------------------------------------------------------------------------------
def _limits(identity: ApiKeyIdentity) -> ratelimit.Limits:
    budget = identity.monthly_budget_usd
    return ratelimit.Limits(
        identity.requests_per_minute, identity.tokens_per_minute, float(budget) if budget else None
    )


_period_cache: tuple[int, str] = (-1, "")


def _period() -> str:
    """The budget's month, "YYYY-MM" in UTC (recomputed once a minute at most)."""
    global _period_cache
    minute = int(time.time()) // 60
    if _period_cache[0] != minute:
        now = time.gmtime()
        _period_cache = (minute, f"{now.tm_year:04d}-{now.tm_mon:02d}")
    return _period_cache[1]


def _seconds_to_next_month() -> float:
    now = time.gmtime()
    year, month = (now.tm_year + 1, 1) if now.tm_mon == 12 else (now.tm_year, now.tm_mon + 1)
    return max(1.0, time.mktime((year, month, 1, 0, 0, 0, 0, 0, 0)) - time.mktime(now))


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.2f}".rstrip("0").rstrip(".") + "s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{int(rest)}s"


def _spent_this_month(key_id: int) -> float:
    from usage.models import UsageEvent

    now = time.gmtime()
    since = f"{now.tm_year:04d}-{now.tm_mon:02d}-01T00:00:00+00:00"
    total = UsageEvent.objects.filter(api_key_id=key_id, occurred_at__gte=since).aggregate(
        total=Sum("cost_usd")
    )["total"]
    return float(total or Decimal(0))


async def api_key_limits_acquire(*, identity: ApiKeyIdentity) -> Headers:
    """Take one request from the key's limits: the ``x-ratelimit-*`` headers, or a 429."""
    limits = _limits(identity)
    if not limits.any:
        return []
    subject, period = identity.key_public_id, _period()
    decision = await ratelimit.acquire(subject, limits, period=period)
    if decision.reason == "budget_unknown":  # a new month or a flushed Redis: seed, then retry
        try:
            spent = await database_sync_to_async(_spent_this_month)(identity.key_id)
        except (OperationalError, InterfaceError):
            # The database is down: serve the request and leave the counter unseeded, so that
            # a later request seeds it once the spend can be read again.
            logger.warning("database unavailable: budget of key %s not checked", subject)
            unbudgeted = replace(limits, monthly_budget_usd=None)
            decision = await ratelimit.acquire(subject, unbudgeted, period=period)
        else:
            await ratelimit.seed_spend(subject, period=period, spent=spent)
            decision = await ratelimit.acquire(subject, limits, period=period)
    headers: Headers = []
    if limits.requests_per_minute:
        headers += [
            (b"x-ratelimit-limit-requests", str(limits.requests_per_minute).encode()),
            (b"x-ratelimit-remaining-requests", str(decision.requests_remaining).encode()),
            (b"x-ratelimit-reset-requests", _duration(decision.requests_reset).encode()),
        ]
    if limits.tokens_per_minute:
        headers += [
            (b"x-ratelimit-limit-tokens", str(limits.tokens_per_minute).encode()),
            (b"x-ratelimit-remaining-tokens", str(decision.tokens_remaining).encode()),
            (b"x-ratelimit-reset-tokens", _duration(decision.tokens_reset).encode()),
        ]
    if decision.allowed:
        return headers
    if decision.reason == "budget":
        retry = _seconds_to_next_month()
        raise GatewayError(
            429,
            f"This API key has used its monthly budget of ${limits.monthly_budget_usd:.2f}.",
            type="insufficient_quota",
            code="insufficient_quota",
            headers=[*headers, (b"retry-after", str(math.ceil(retry)).encode())],
        )
    per_minute = (
        limits.requests_per_minute if decision.reason == "requests" else limits.tokens_per_minute
    )
    retry = decision.retry_after
    raise GatewayError(
        429,
        f"Rate limit reached for this API key on {decision.reason} per minute "
        f"(limit: {per_minute}). Please try again in {_duration(retry)}.",
        type=decision.reason,
        code="rate_limit_exceeded",
        retryable=True,  # a minute's limit refills: the SDK's retry after Retry-After is right
        headers=[
            *headers,
            (b"retry-after", str(max(1, math.ceil(retry))).encode()),
            (b"retry-after-ms", str(max(1, math.ceil(retry * 1000))).encode()),
        ],
    )


# -- relaying ----------------------------------------------------------------------------------
def _upstream_request_id(response: http1.Response) -> str:
    for key, value in response.headers:
        if key.lower() in (b"x-request-id", b"request-id", b"cf-ray") and value:
            return value.decode("latin-1")
    return ""


def _upstream_status_error(status: int, body: bytes, response: http1.Response) -> GatewayError:
    """An upstream's refusal as the gateway's: the client's mistakes keep their status, the
    provider's failures become 502/504."""
    message, code = error_from_body(body)
    if status in (400, 413, 422):
        return GatewayError(status, message, code=code)
    if status == 429:
        retry = response.header(b"retry-after")
        return GatewayError(
            429,
            f"The provider is rate limiting requests: {message}",
            type="rate_limit_error",
            code=code or "upstream_rate_limited",
            retryable=True,
            headers=[(b"retry-after", retry.encode())] if retry else [],
        )
    if status in (408, 504):
        return upstream_error(504, f"The provider timed out (HTTP {status}): {message}", code=code)
    return upstream_error(502, f"The provider failed (HTTP {status}): {message}", code=code)


def _timed_out() -> GatewayError:
    return upstream_error(
        504,
        f"The provider did not answer within {settings.GATEWAY_UPSTREAM_READ_TIMEOUT:g} s.",
        code="upstream_timeout",
    )


def _rewrite_chunk(data: str, tally: Tally, slug: str, client_usage: bool) -> bytes | None:
    """One streamed chunk as the client gets it: our model name, the usage only if asked."""
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data.encode()
    if not isinstance(chunk, dict):
        return data.encode()
    tally.take_chunk(chunk)
    if "model" in chunk:
        chunk["model"] = slug
    if not client_usage and "usage" in chunk:
        if not chunk.get("choices") and chunk["usage"] is not None:
            return None  # the usage-only chunk the gateway asked for on its own account
        del chunk["usage"]
    return orjson.dumps(chunk)


async def _relay_stream(
    exchange: Exchange,
    response: http1.Response,
    tally: Tally,
    route: Route,
    headers: Headers,
    client_usage: bool,
) -> int:
    await exchange.start(
        200,
        [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            *headers,
        ],
    )
    decoder = SSEDecoder()
    failure: GatewayError | None = None
    try:
        while chunk := await response.readany():
            tally.saw_first_byte()
            out: list[bytes] = []
            done = False
            for event in decoder.feed(chunk):
                if event.data == "[DONE]":
                    done = True
                    break
                data = _rewrite_chunk(event.data, tally, route.slug, client_usage)
                if data is not None:
                    name = b"event: " + event.event.encode() + b"\n" if event.event else b""
                    out.append(name + b"data: " + data + b"\n\n")
            if done:
                out.append(b"data: [DONE]\n\n")
                await exchange.body(b"".join(out), more=False)
                return 200
            if out:
                await exchange.body(b"".join(out), more=True)
    except TimeoutError:
        failure = _timed_out()
    except http1.UpstreamError:
        failure = upstream_error(
            502, "The provider's stream broke off: the connection closed.", code="upstream_error"
        )
    if failure is None:
        failure = upstream_error(
            502, "The provider ended the stream before it was complete.", code="upstream_error"
        )
    tally.error = failure.message
    await exchange.body(sse_error_event(failure), more=False)
    return failure.status


async def _relay_json(
    exchange: Exchange,
    response: http1.Response,
    tally: Tally,
    route: Route,
    headers: Headers,
    since: float,
) -> int:
    try:
        raw = await response.read()
    except TimeoutError:
        raise _timed_out() from None
    except http1.UpstreamError:
        raise upstream_error(
            502, "The provider's answer broke off: the connection closed."
        ) from None
    exchange.upstream_wait = time.perf_counter() - since
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise upstream_error(502, "The provider answered with something other than JSON.") from None
    if isinstance(body, dict):
        tally.take_completion(body)
        if "model" in body:
            body["model"] = route.slug
        raw = orjson.dumps(body)
    await exchange.respond(200, [(b"content-type", b"application/json"), *headers], raw)
    return 200


async def chat_completion_relay(
    *,
    exchange: Exchange,
    identity: ApiKeyIdentity,
    route: Route,
    payload: dict[str, Any],
    headers: Headers,
    started: float,
) -> None:
    """Forward the request to ``route`` and the answer to the client, then meter it.

    Raises ``GatewayError`` only before the response has started.
    """
    stream = bool(payload.get("stream"))
    client_usage = False
    if stream:
        options = payload.get("stream_options") or {}
        client_usage = bool(options.get("include_usage"))
        # Always ask for usage: the client only sees the usage chunk if it asked for it.
        payload["stream_options"] = {**options, "include_usage": True}
    tally = Tally(
        identity=identity,
        request=payload,
        stream=stream,
        started=started,
        event_id=exchange.request_id.decode(),
    )
    payload = {**payload, "model": route.upstream_model}
    body = orjson.dumps(payload)

    status, reached, estimate = 502, False, False
    response: http1.Response | None = None
    exchange.watch.start()
    since = time.perf_counter()
    try:
        try:
            response = await http1.client().request(
                "POST",
                route.url,
                headers=route.header_list,
                body=body,
                connect_timeout=settings.GATEWAY_UPSTREAM_CONNECT_TIMEOUT,
                read_timeout=settings.GATEWAY_UPSTREAM_READ_TIMEOUT,
            )
        except http1.NotReached:
            raise upstream_error(502, "The provider could not be reached.") from None
        except TimeoutError:
            reached = True
            raise _timed_out() from None
        except http1.UpstreamError:
            reached = True
            raise upstream_error(
                502, "The provider's connection failed: it closed before answering."
            ) from None
        reached = True
        exchange.upstream_wait = time.perf_counter() - since
        tally.upstream_request_id = _upstream_request_id(response)
        if response.status >= 400:
            try:
                error_body = await response.read()
            except http1.UpstreamError:
                error_body = b""
            exchange.upstream_wait = time.perf_counter() - since
            raise _upstream_status_error(response.status, error_body, response)
        estimate = True
        if stream and "text/event-stream" in (response.header(b"content-type") or ""):
            status = await _relay_stream(exchange, response, tally, route, headers, client_usage)
        else:
            tally.saw_first_byte()
            status = await _relay_json(exchange, response, tally, route, headers, since)
    except GatewayError as error:
        status = error.status
        raise
    except asyncio.CancelledError:
        if not exchange.watch.consume_cancel():
            raise  # the server is shutting down: let it
        # The client went away: our own watch cancelled us. Close the upstream, meter, return.
        # Gone before the provider's headers, the request was sent all the same (the prompt is
        # counted, 499 as nginx logs it); gone later, the provider's status stands.
        tally.client_disconnected = True
        reached = estimate = True
        status = 499 if response is None else response.status
    finally:
        if response is not None:
            if tally.client_disconnected:
                response.close()  # abort: the upstream sees its client go and stops generating
            else:
                response.release()
        if reached:
            await _meter(identity=identity, tally=tally, status=status, estimate=estimate)


async def _meter(*, identity: ApiKeyIdentity, tally: Tally, status: int, estimate: bool) -> None:
    """Record the usage event and charge the key's token and budget limits."""
    counts = await tally.counts(reached_output=estimate)
    record = tally.record(counts, status=status)
    usage_writer.touch_api_key(identity.key_id)
    limits = _limits(identity)
    cost: Decimal | object | None = None
    if limits.monthly_budget_usd:
        # The budget is charged the price stored with the event (an unpriced model: nothing).
        cost = usage_writer.record_priced(record)
        if cost is NOT_PRICED_YET:  # the process's first requests: load the table, price here
            cost = record_cost(record, await aprice_table())
    else:
        usage_writer.record(record)  # priced with its batch, at the next flush
    await ratelimit.charge(
        identity.key_public_id,
        limits,
        period=_period(),
        tokens=counts.total,
        cost=float(cost or 0),  # type: ignore[arg-type]
    )


# -- models ------------------------------------------------------------------------------------
def model_object(route: Route) -> dict[str, Any]:
    return {"id": route.slug, "object": "model", "created": route.created, "owned_by": "hepgg"}


async def models_list(*, identity: ApiKeyIdentity) -> dict[str, Any]:
    """``GET /v1/models``: the key's one model (none when it was disabled)."""
    route = await aroute(identity.model_id)
    data = [model_object(route)] if route is not None and route.enabled else []
    return {"object": "list", "data": data}


async def model_retrieve(*, identity: ApiKeyIdentity, model: str) -> dict[str, Any]:
    route = await aroute(identity.model_id)
    if route is None or not route.enabled or model != route.slug:
        raise _model_not_found(model)
    return model_object(route)
