"""Keep secrets out of every log line.

Each credential type of the contract has a recognisable shape, so a log line can be scrubbed
without knowing which secrets exist: the value is replaced by its display prefix and ``…``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

PREFIX_CHARS = 6  # characters of a secret's random body that stay visible

# A skills key is 48 lowercase hex characters, and nothing in a log line marks where one starts
# or ends (``\xab<key>`` in the repr of bytes, ``<key>0`` in free text): every run of 48 or more
# lowercase hex characters is masked, a SHA-256 digest included (a digest is no secret, but a key
# cannot be told apart from a hex run that contains it).
_SECRET_RE = re.compile(
    r"(?P<kind>sk-hyd-|hyd_|pt_)(?P<body>[A-Za-z0-9_-]{16,})|(?P<hex>[0-9a-f]{48,})"
)
_HEADER_RE = re.compile(
    r"(?P<name>authorization|x-api-key)(?P<sep>['\"]?\s*[:=,]\s*[(]?['\"]?(?:b['\"])?)"
    r"(?P<scheme>(?:bearer|basic)\s+)?(?P<value>[^\s'\",)]+)",
    re.IGNORECASE,
)


def _mask_secret(match: re.Match[str]) -> str:
    if match.group("hex"):
        return match.group("hex")[:PREFIX_CHARS] + "…"
    return match.group("kind") + match.group("body")[:PREFIX_CHARS] + "…"


def _mask_header(match: re.Match[str]) -> str:
    value = match.group("value")
    # A value _SECRET_RE already masked stays as it is.
    shown = value if value.endswith("…") else value[: min(PREFIX_CHARS, len(value) // 2)] + "…"
    return f"{match.group('name')}{match.group('sep')}{match.group('scheme') or ''}{shown}"


def redact(text: str) -> str:
    """Return ``text`` with every credential-shaped value cut down to its prefix."""
    return _HEADER_RE.sub(_mask_header, _SECRET_RE.sub(_mask_secret, text))


class RedactSecretsFilter(logging.Filter):
    """A logging filter that rewrites the record's message (and traceback) with secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message and not self._redact_in_place(record):
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True

    @staticmethod
    def _redact_in_place(record: logging.LogRecord) -> bool:
        """Mask the format string and each string argument, keeping the arguments' shape (some
        formatters unpack them: uvicorn's access log does). False when the message still holds
        a secret that way (one split across arguments, or inside bytes)."""
        if not isinstance(record.args, tuple) or not isinstance(record.msg, str):
            return False
        original = record.msg, record.args
        record.msg = redact(record.msg)
        record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        message = record.getMessage()
        if redact(message) == message:
            return True
        record.msg, record.args = original
        return False


def install_server_log_redaction() -> None:
    """Scrub the ASGI servers' access logs, which do not all go through ``logging``.

    daphne writes its access log straight to a stream (stdout by default) with the full request
    path, and a proxy token travels in the path; uvicorn and granian log through ``logging`` on
    loggers that may have handlers of their own, so the filter goes on those loggers too.
    """
    try:
        from daphne.access import AccessLogGenerator
    except ImportError:  # pragma: no cover - daphne is a dependency
        pass
    else:
        if not getattr(AccessLogGenerator.write_entry, "_hepgg_redacted", False):
            original = AccessLogGenerator.write_entry

            def write_entry(self: Any, host: Any, date: Any, request: str, *args: Any, **kw: Any):
                return original(self, host, date, redact(request), *args, **kw)

            write_entry._hepgg_redacted = True  # type: ignore[attr-defined]
            AccessLogGenerator.write_entry = write_entry  # type: ignore[method-assign]

    redacting = RedactSecretsFilter()
    names = {
        "django.channels.server",
        "daphne",
        "uvicorn.access",
        "uvicorn.error",
        "granian.access",
        "granian",
        "aiohttp.access",
        "celery",
    }
    names.update(logging.Logger.manager.loggerDict)  # and every handler configured so far
    for name in sorted(names):
        logger = logging.getLogger(name)
        for target in (logger, *logger.handlers):
            if not any(isinstance(f, RedactSecretsFilter) for f in target.filters):
                target.addFilter(redacting)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactSecretsFilter) for f in handler.filters):
            handler.addFilter(redacting)
