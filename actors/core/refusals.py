"""`RefusalLog`: refused frames, logged without letting a peer flood the log. Pure, clock-free.

A peer that sends garbage gets an ``error`` frame for every frame, but the
log must not grow with it (a million bad frames would otherwise write a
hundred megabytes). Within each window the first ``per_window`` refusals of
a peer are logged in full; the rest are counted, and at the end of the
window one line per such peer says how many there were, by code.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class _Peer:
    label: str
    logged: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)


class RefusalLog:
    def __init__(self, window: float = 10.0, per_window: int = 5) -> None:
        self.window = window
        self.per_window = per_window
        self._peers: dict[bytes, _Peer] = {}
        self._started = 0.0

    def note(self, peer: bytes, label: str, code: str, now: float) -> bool:
        """A refusal for ``peer``: True if it should be logged now, False if it is only counted."""
        entry = self._peers.get(peer)
        if entry is None:
            if not self._peers:
                self._started = now
            entry = self._peers[peer] = _Peer(label)
        if entry.logged < self.per_window:
            entry.logged += 1
            return True
        entry.suppressed[code] += 1
        return False

    def summaries(self, now: float) -> list[str]:
        """At the end of a window: one line per peer whose refusals were not all logged; starts a new window."""
        return [
            f"refused {sum(counts.values())} more frame(s) from {label} in the last {self.window:g}s "
            f"({', '.join(f'{code} {n}' for code, n in counts.most_common())})"
            for label, counts in self.suppressed(now)
        ]

    def suppressed(self, now: float) -> list[tuple[str, Counter[str]]]:
        """At the end of a window: per peer whose refusals were not all logged, its label and the rest's
        counts by code; starts a new window."""
        if not self._peers or now - self._started < self.window:
            return []
        found = [(p.label, p.suppressed) for p in self._peers.values() if p.suppressed]
        self._peers.clear()
        return found
