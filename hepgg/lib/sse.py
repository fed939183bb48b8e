"""Incremental Server-Sent Events parsing, for reading a copy of a stream as it passes.

``SSEDecoder.feed(chunk)`` takes bytes as they arrive (split anywhere, even inside a line or a
UTF-8 sequence) and returns the events completed so far. It never holds the stream back: callers
forward the original bytes and feed a copy here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str  # "" when the event had no ``event:`` field ("message" by the spec)
    data: str
    id: str | None = None


class SSEDecoder:
    def __init__(self, *, max_buffer: int = 16 * 1024 * 1024) -> None:
        self._buffer = b""
        self._max_buffer = max_buffer
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        self._buffer += chunk
        events: list[ServerSentEvent] = []
        if b"\r" not in self._buffer:
            # The common case (\n endings only): whole events split off at once, in C, rather
            # than a line at a time (profiled: the per-line loop was a tenth of a stream's CPU).
            *complete, self._buffer = self._buffer.split(b"\n\n")
            for block in complete:
                for line in block.decode("utf-8", errors="replace").split("\n"):
                    if (event := self._take_line(line)) is not None:
                        events.append(event)
                if (event := self._take_line("")) is not None:
                    events.append(event)
            if len(self._buffer) > self._max_buffer:
                self._buffer = b""
            return events
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                break
            end, after = cut
            line = self._buffer[:end].decode("utf-8", errors="replace")
            self._buffer = self._buffer[after:]
            event = self._take_line(line)
            if event is not None:
                events.append(event)
        if len(self._buffer) > self._max_buffer:  # a runaway line: drop it, never grow unbounded
            self._buffer = b""
        return events

    def close(self) -> list[ServerSentEvent]:
        """Events still pending when the stream ends without a final blank line."""
        events = self.feed(b"\n\n") if self._buffer or self._data else []
        return events

    def _take_line(self, line: str) -> ServerSentEvent | None:
        if not line:
            if not self._data and not self._event:
                return None
            event = ServerSentEvent(self._event, "\n".join(self._data), self._id)
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    """(end of the first line, start of the next) for \\n, \\r\\n or \\r endings, else None."""
    lf = buffer.find(b"\n")
    cr = buffer.find(b"\r")
    if cr == -1 and lf == -1:
        return None
    if cr != -1 and (lf == -1 or cr < lf):
        if cr + 1 == len(buffer):
            return None  # a \r at the end may be half of \r\n: wait for more
        return cr, cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1
    return lf, lf + 1
