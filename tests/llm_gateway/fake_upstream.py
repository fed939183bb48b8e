"""A fake LLM provider for the gateway's tests: a real aiohttp server on loopback, in a thread,
speaking OpenAI Chat Completions at Cloudflare's path and at a plain ``/v1`` path.

The test sets ``behavior`` before a request and reads ``requests`` (what arrived) afterwards.
Counts are deterministic: ``prompt_tokens`` = 7 times the number of messages, ``completion_tokens``
= the number of content chunks (one token each).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.servers import free_port

CF_ACCOUNT = "acct-test"
CF_TOKEN = "cf-test-token"
OPENAI_KEY = "upstream-openai-key"
WORDS = ["Hello", " from", " the", " fake", " upstream", "."]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeUpstream:
    behavior: str = "ok"
    chunk_delay: float = 0.0
    header_delay: float = 0.0  # seconds before the response starts
    n_chunks: int = len(WORDS)
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    stream_aborted: threading.Event = field(default_factory=threading.Event)
    chunks_sent: list[float] = field(default_factory=list)

    def reset(self) -> None:
        self.behavior, self.chunk_delay, self.n_chunks = "ok", 0.0, len(WORDS)
        self.header_delay = 0.0
        self.requests.clear()
        self.chunks_sent.clear()
        self.stream_aborted.clear()

    @property
    def last(self) -> Received:
        return self.requests[-1]

    @staticmethod
    def prompt_tokens(body: dict[str, Any]) -> int:
        return 7 * len(body.get("messages") or [])

    # -- the protocol ---------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Received(request.path, dict(request.headers), body))
        behavior = self.behavior
        if self.header_delay:
            try:
                await asyncio.sleep(self.header_delay)
            except asyncio.CancelledError:  # the gateway closed the connection first
                self.stream_aborted.set()
                raise
        if behavior == "error_500":
            return web.json_response(
                {"error": {"message": "upstream exploded", "type": "server_error"}}, status=500
            )
        if behavior == "cf_error":
            return web.json_response(
                {"success": False, "errors": [{"code": 5006, "message": "bad input: prompt"}]},
                status=400,
            )
        if behavior == "timeout":
            await asyncio.sleep(30)
        if behavior == "reset_before":
            assert request.transport is not None
            request.transport.abort()
            await asyncio.sleep(1)
        if body.get("stream"):
            return await self._stream(request, body)
        return web.json_response(self._completion(body))

    def _usage(self, body: dict[str, Any]) -> dict[str, int]:
        prompt = self.prompt_tokens(body)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": self.n_chunks,
            "total_tokens": prompt + self.n_chunks,
        }

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        text = "".join(WORDS[i % len(WORDS)] for i in range(self.n_chunks))
        completion: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
        }
        if self.behavior != "no_usage":
            completion["usage"] = self._usage(body)
        return completion

    async def _stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": body["model"]}
        try:
            for i in range(self.n_chunks):
                delta = {"content": WORDS[i % len(WORDS)]}
                finish = "stop" if i == self.n_chunks - 1 else None
                chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.chunks_sent.append(time.monotonic())
                if self.behavior == "reset_after" and i == 1:
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
            if self.behavior == "truncate":
                return response
            options = body.get("stream_options") or {}
            if options.get("include_usage") and self.behavior != "no_usage":
                usage_chunk = {**base, "choices": [], "usage": self._usage(body)}
                await response.write(b"data: " + json.dumps(usage_chunk).encode() + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            self.stream_aborted.set()
            raise
        return response

    # -- running --------------------------------------------------------------------------
    def start(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        ready = threading.Event()
        app = web.Application()
        app.router.add_post("/client/v4/accounts/{account}/ai/v1/chat/completions", self.handle)
        app.router.add_post("/v1/chat/completions", self.handle)

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            runner = web.AppRunner(app, handler_cancellation=True)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
            self._runner = runner
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
