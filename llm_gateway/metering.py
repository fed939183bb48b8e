"""What one ``/v1`` request used, read from the upstream's answer as it passes.

A ``Tally`` is fed the response (one JSON body, or the stream's chunks one by one), keeps the
upstream's own usage when it sends one, and otherwise the generated text so far, so that a
finished, failed or abandoned request can still be counted with the tokenizer, marked
``estimated``. An upstream's explicit count always wins over an estimate.

OpenAI's ``prompt_tokens`` include cached tokens; usage events count them apart
(``cache_read_input_tokens``) so that costs and ``/usage`` mean the same for every source.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from accounts.credentials import ApiKeyIdentity
from hepgg.lib import tokencount
from usage.records import UsageRecord


@dataclass(frozen=True, slots=True)
class Counts:
    input_tokens: int  # without cached tokens
    output_tokens: int
    cache_read_input_tokens: int
    estimated: bool

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_input_tokens


@dataclass(slots=True)
class Tally:
    identity: ApiKeyIdentity
    request: dict[str, Any]
    stream: bool
    started: float  # perf_counter at the gateway's receipt of the request
    event_id: str = ""  # the gateway's x-request-id: keys the event, so it is written once
    usage: dict[str, Any] | None = None
    text: list[str] = field(default_factory=list)
    message_id: str = ""
    upstream_request_id: str = ""
    finish_reason: str = ""
    first_byte: float | None = None
    client_disconnected: bool = False
    error: str = ""

    # -- feeding --------------------------------------------------------------------------
    def saw_first_byte(self) -> None:
        if self.first_byte is None:
            self.first_byte = time.perf_counter()

    def take_completion(self, body: dict[str, Any]) -> None:
        """A non-streaming response."""
        self._take_common(body)
        for choice in body.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            self._take_message(choice.get("message"))
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])

    def take_chunk(self, chunk: dict[str, Any]) -> None:
        """One streamed ``chat.completion.chunk`` (or an in-band error)."""
        self._take_common(chunk)
        if isinstance(chunk.get("error"), dict):
            self.error = str(chunk["error"].get("message", "upstream error"))
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            self._take_message(choice.get("delta"))
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])

    def _take_common(self, body: dict[str, Any]) -> None:
        if not self.message_id and isinstance(body.get("id"), str):
            self.message_id = body["id"]
        usage = body.get("usage")
        if isinstance(usage, dict) and usage:
            self.usage = usage

    def _take_message(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        for key in ("content", "reasoning_content", "reasoning", "refusal"):
            value = message.get(key)
            if isinstance(value, str) and value:
                self.text.append(value)
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                self.text.append(str(function.get("name") or ""))
                self.text.append(str(function.get("arguments") or ""))

    # -- counting -------------------------------------------------------------------------
    def reported(self) -> Counts | None:
        """The upstream's own counts, if it sent them."""
        usage = self.usage
        if not usage or "prompt_tokens" not in usage:
            return None
        prompt = _int(usage.get("prompt_tokens"))
        details = usage.get("prompt_tokens_details")
        cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
        completion = _int(usage.get("completion_tokens"))
        return Counts(max(0, prompt - cached), completion, min(cached, prompt), estimated=False)

    async def counts(self, *, reached_output: bool) -> Counts:
        """The upstream's counts, else an estimate (prompt, and the output seen so far)."""
        reported = self.reported()
        if reported is not None:
            return reported
        if not reached_output:
            return Counts(0, 0, 0, estimated=False)
        prompt = await tokencount.acount_chat_prompt(self.request)
        output = await tokencount.acount("".join(self.text))
        return Counts(prompt, output, 0, estimated=True)

    def record(self, counts: Counts, *, status: int) -> UsageRecord:
        now = time.perf_counter()
        details: dict[str, Any] = {"stream": self.stream}
        if self.client_disconnected:
            details["client_disconnected"] = True
        if self.error:
            details["error"] = self.error[:500]
        if counts.estimated:
            details["tokenizer"] = tokencount.encoder_name()
        return UsageRecord(
            account_id=self.identity.account_id,
            source="gateway",
            model=self.identity.model_slug,
            api_key_id=self.identity.key_id,
            input_tokens=counts.input_tokens,
            output_tokens=counts.output_tokens,
            cache_read_input_tokens=counts.cache_read_input_tokens,
            estimated=counts.estimated,
            status_code=status,
            stop_reason=self.finish_reason,
            latency_ms=(now - self.started) * 1000,
            ttfb_ms=None if self.first_byte is None else (self.first_byte - self.started) * 1000,
            request_id=self.upstream_request_id,
            message_id=self.message_id,
            event_id=self.event_id,
            details=details,
        )


def _int(value: Any) -> int:
    return tokencount.storable_count(value)
