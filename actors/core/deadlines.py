"""`Wakeups`: when each key next needs waking, with O(k log n) passes. Pure; the dispatcher owns one.

A key has at most one wake-up; setting it again replaces it. Entries are
kept in a heap and invalidated lazily (an entry whose time is no longer its
key's is skipped when it comes up), and the heap is rebuilt when stale
entries outnumber live ones, so it stays O(n) in size and a key that is
discarded leaves nothing behind for long.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Wakeups(Generic[K]):
    def __init__(self) -> None:
        self._at: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._order = itertools.count()

    def set(self, key: K, at: float) -> None:
        """Wake ``key`` at ``at`` (and not at any time set before)."""
        self._at[key] = at
        if len(self._heap) > 2 * len(self._at) + 64:
            self._compact()
        heapq.heappush(self._heap, (at, next(self._order), key))

    def discard(self, key: K) -> None:
        if self._at.pop(key, None) is not None and len(self._heap) > 2 * len(self._at) + 64:
            self._compact()

    def pop_due(self, now: float) -> list[K]:
        """The keys whose time has come, each once, earliest first; they are removed."""
        due: list[K] = []
        heap, at_of = self._heap, self._at
        while heap and heap[0][0] <= now:
            at, _, key = heapq.heappop(heap)
            if at_of.get(key) == at:
                del at_of[key]
                due.append(key)
        return due

    def next_at(self) -> float | None:
        heap, at_of = self._heap, self._at
        while heap:
            at, _, key = heap[0]
            if at_of.get(key) == at:
                return at
            heapq.heappop(heap)
        return None

    def get(self, key: K) -> float | None:
        return self._at.get(key)

    def __len__(self) -> int:
        return len(self._at)

    @property
    def heap_size(self) -> int:
        """Entries in the heap, stale ones included (bounded by about twice `len`)."""
        return len(self._heap)

    def _compact(self) -> None:
        self._heap = [(at, next(self._order), key) for key, at in self._at.items()]
        heapq.heapify(self._heap)
