"""An incremental parser of ``text/event-stream`` bodies (the WHATWG event-stream format). Pure.

httpx reads bytes; this turns them into events. It is a few dozen lines and bounded (an event over
``max_event_bytes`` raises `SseError` instead of growing), which is why troupe has it rather than a
dependency: the adapter must refuse an upstream that streams one endless event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

DEFAULT_MAX_EVENT_BYTES: Final = 32 * 1024 * 1024


class SseError(ValueError):
    """The stream is not one troupe will read (an event or line over the limit)."""


@dataclass(frozen=True)
class Event:
    data: str
    id: str | None = None
    event: str = "message"


class SseParser:
    """Feed it the body's bytes as they come; it returns each complete event once.

    ``last_id`` is the stream's last event id (what ``Last-Event-ID`` resumes from) and ``retry`` the
    server's last ``retry:`` in milliseconds, as the format defines them: an event's id stays in force
    for later events that name none.
    """

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self.last_id: str | None = None
        self.retry: int | None = None
        self._buffer = bytearray()
        self._data: list[str] = []
        self._size = 0
        self._event = ""
        self._first = True

    def feed(self, chunk: bytes) -> list[Event]:
        if self._first and chunk:
            self._first = False
            if chunk.startswith(b"\xef\xbb\xbf"):
                chunk = chunk[3:]
        self._buffer += chunk
        events: list[Event] = []
        while True:
            end = self._line_end()
            if end is None:
                if len(self._buffer) > self.max_event_bytes:
                    raise SseError(f"an event-stream line is longer than {self.max_event_bytes} bytes")
                return events
            stop, skip = end
            line = self._buffer[:stop].decode("utf-8", "replace")
            del self._buffer[: stop + skip]
            event = self._line(line)
            if event is not None:
                events.append(event)

    def _line_end(self) -> tuple[int, int] | None:
        cr, lf = self._buffer.find(b"\r"), self._buffer.find(b"\n")
        if cr == -1 and lf == -1:
            return None
        if cr == -1 or (lf != -1 and lf < cr):
            return lf, 1
        if cr == len(self._buffer) - 1:
            return None  # a CR at the end may be the first half of CRLF
        return cr, 2 if self._buffer[cr + 1 : cr + 2] == b"\n" else 1

    def _line(self, line: str) -> Event | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._size += len(value) + 1
            if self._size > self.max_event_bytes:
                raise SseError(f"an event is larger than {self.max_event_bytes} bytes")
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_id = value
        elif name == "event":
            self._event = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        data, event = self._data, self._event or "message"
        self._data, self._size, self._event = [], 0, ""
        if not data:
            return None
        return Event("\n".join(data), self.last_id, event)
