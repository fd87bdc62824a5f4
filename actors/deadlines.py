"""A heap of wake-up times by key. Pure; the janitor owns one."""

from __future__ import annotations

import heapq
import itertools
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class DeadlineHeap(Generic[K, V]):
    """Wake-ups ``(at, key, value)``; `pop_due` costs O(k log n) for k due entries.

    A key may be pushed several times (a session asking for an earlier
    wake-up); `pop_due` returns each due key once, with its latest value.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K, V]] = []
        self._order = itertools.count()

    def push(self, at: float, key: K, value: V) -> None:
        heapq.heappush(self._heap, (at, next(self._order), key, value))

    def pop_due(self, now: float) -> dict[K, V]:
        due: dict[K, tuple[int, V]] = {}
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, order, key, value = heapq.heappop(heap)
            if key not in due or due[key][0] < order:
                due[key] = (order, value)
        return {key: value for key, (_, value) in due.items()}

    def next_at(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)
