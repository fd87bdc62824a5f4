"""Counting helpers for limits: a token bucket, a soft-limit alarm, the global count.

Pure and clock-free: callers pass the time in.
"""

from __future__ import annotations

from dataclasses import dataclass


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; rate 0 means unlimited."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._at = now

    def take(self, now: float) -> float:
        """Take one token: 0.0 if granted, else the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


class SoftLimit:
    """Says when a count crosses ``ratio * limit`` upwards, once per crossing.

    The alarm re-arms when the count falls back under the soft limit.
    """

    __slots__ = ("_raised", "limit", "soft")

    def __init__(self, limit: int, ratio: float) -> None:
        self.limit = limit
        self.soft = max(1, int(limit * ratio))
        self._raised = False

    def crossed(self, count: int) -> bool:
        if count >= self.soft:
            if not self._raised:
                self._raised = True
                return True
            return False
        self._raised = False
        return False


@dataclass
class GlobalPending:
    """The daemon-wide count of pending client requests, owned by the dispatcher.

    The dispatcher counts a request when it admits it (before the session has seen
    it); the session then reports how its own count moved *beyond* that
    admission (-1 if it refused the request, -k when k requests end). Once
    traffic stops every report has arrived and the count is exact.
    """

    limit: int
    count: int = 0

    def admit(self) -> tuple[int, int] | None:
        """Count one request in; returns ``(current, limit)`` instead if full."""
        if self.count >= self.limit:
            return (self.count, self.limit)
        self.count += 1
        return None

    def apply(self, delta: int) -> None:
        self.count += delta
