"""`Recency`: sessions from least to most recently active, and who may be evicted. Pure.

An `OrderedDict` keeps the order: a touch is one assignment and one
``move_to_end`` (O(1)), and the least recently active session is the first.
The dispatcher touches a session on every message of it, in either direction,
so the order is exact, not sampled.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable


class Recency:
    def __init__(self) -> None:
        self._last: OrderedDict[str, float] = OrderedDict()

    def touch(self, sid: str, now: float) -> None:
        self._last[sid] = now
        self._last.move_to_end(sid)

    def discard(self, sid: str) -> None:
        self._last.pop(sid, None)

    def last(self, sid: str) -> float | None:
        return self._last.get(sid)

    def victim(self, now: float, min_idle: float, busy: Callable[[str], bool]) -> str | None:
        """The least recently active session idle for ``min_idle`` seconds or more and not ``busy``.

        ``busy`` says a session must not be taken (it is closing, or, when
        ``min_idle`` is positive, a request of it is pending: a session
        waiting for an answer is in use however long ago its last message was).
        """
        for sid, at in self._last.items():
            if now - at < min_idle:
                return None  # every later one is more recent still
            if not busy(sid):
                return sid
        return None

    def __len__(self) -> int:
        return len(self._last)

    def __contains__(self, sid: object) -> bool:
        return sid in self._last
