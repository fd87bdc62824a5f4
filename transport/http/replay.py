"""`EventLog`: a session's SSE events, numbered, kept for replay after a dropped connection. Pure.

Every event the front sends on any of a session's streams goes into the log first and is sent from
there, so a client that reconnects with ``Last-Event-ID: STREAM-SEQ`` gets every event of that
stream after ``SEQ``. The log is bounded by events and by bytes (``[http] replay_events`` and
``replay_bytes``); the oldest events fall out first and are counted (`dropped`). A reader asking
for events that fell out is told so (`Replay.gap`), which the front logs and counts.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Event:
    stream: int
    seq: int
    data: str

    @property
    def id(self) -> str:
        return f"{self.stream}-{self.seq}"


@dataclass(frozen=True, slots=True)
class Replay:
    events: list[Event]
    gap: bool
    """Some events of the stream after the given one are no longer in the log."""


@dataclass
class EventLog:
    max_events: int = 1000
    max_bytes: int = 8 * 1024 * 1024
    dropped: int = 0
    """Events that fell out of the log, whether or not they had been sent."""
    _events: deque[Event] = field(default_factory=deque)
    _bytes: int = 0
    _seq: int = 0
    _dropped_upto: dict[int, int] = field(default_factory=dict)
    """stream -> the highest seq of it that fell out"""

    def append(self, stream: int, data: str) -> Event:
        self._seq += 1
        event = Event(stream, self._seq, data)
        self._events.append(event)
        self._bytes += len(data)
        while self._events and (len(self._events) > self.max_events or self._bytes > self.max_bytes):
            old = self._events.popleft()
            self._bytes -= len(old.data)
            self._dropped_upto.pop(old.stream, None)
            self._dropped_upto[old.stream] = old.seq  # most recent last: the oldest go first below
            self.dropped += 1
            if len(self._dropped_upto) > self.max_events:
                del self._dropped_upto[next(iter(self._dropped_upto))]
        return event

    def after(self, stream: int, seq: int) -> Replay:
        """The events of ``stream`` after ``seq``, oldest first."""
        events = [e for e in self._events if e.stream == stream and e.seq > seq]
        return Replay(events, self._dropped_upto.get(stream, 0) > seq)

    def forget(self, stream: int) -> None:
        """Drop what is kept of a finished stream once its client has had all of it (not counted)."""
        kept = [e for e in self._events if e.stream != stream]
        if len(kept) != len(self._events):
            self._events = deque(kept)
            self._bytes = sum(len(e.data) for e in kept)
        self._dropped_upto.pop(stream, None)

    def dropped_through(self, stream: int) -> int:
        """The highest seq of ``stream`` that fell out of the log (0: none)."""
        return self._dropped_upto.get(stream, 0)

    @property
    def first_seq(self) -> int:
        """The seq of the oldest event kept (the next one's when the log is empty)."""
        return self._events[0].seq if self._events else self._seq + 1

    @property
    def last_seq(self) -> int:
        return self._seq

    def __len__(self) -> int:
        return len(self._events)
