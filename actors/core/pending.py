"""Requests waiting for their response, one table per direction.

Client-to-server and server-to-client requests have separate JSON-RPC id
spaces (sampling/createMessage, roots/list and elicitation/create come from the
server), so a session keeps two `PendingTable` s and matches a response only
against the table of the direction its request went.

Each request has a deadline, unless its timeout is 0 (none). The table keeps a heap of deadlines with lazy
deletion, so finding what is due costs O(k log n) for k due requests; the heap
is rebuilt when stale entries outnumber live ones, so it stays O(n) in size.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass

from mcp_troupe.transport.wire.jsonrpc import RequestId


@dataclass(slots=True)
class PendingRequest:
    id: RequestId
    method: str
    sent_at: float
    timeout: float
    deadline: float
    progress_token: RequestId | None = None
    progress_count: int = 0


class PendingTable:
    """Pending requests of one direction, by JSON-RPC id, with their deadlines."""

    __slots__ = ("_by_id", "_by_token", "_heap", "_order")

    def __init__(self) -> None:
        self._by_id: dict[RequestId, PendingRequest] = {}
        self._by_token: dict[RequestId, RequestId] = {}
        self._heap: list[tuple[float, int, RequestId]] = []
        self._order = 0

    def add(
        self, request_id: RequestId, method: str, now: float, timeout: float, progress_token: RequestId | None = None
    ) -> PendingRequest:
        if request_id in self._by_id:
            raise KeyError(f"request id {request_id!r} is already pending")
        deadline = now + timeout if timeout > 0 else math.inf
        entry = PendingRequest(request_id, method, now, timeout, deadline, progress_token)
        self._by_id[request_id] = entry
        if progress_token is not None:
            self._by_token[progress_token] = request_id
        if timeout > 0:
            self._push(entry)
        return entry

    def pop(self, request_id: RequestId) -> PendingRequest | None:
        entry = self._by_id.pop(request_id, None)
        if entry is not None and entry.progress_token is not None:
            self._by_token.pop(entry.progress_token, None)
        return entry

    def get(self, request_id: RequestId) -> PendingRequest | None:
        return self._by_id.get(request_id)

    def progress(self, token: RequestId, now: float, extend: bool) -> PendingRequest | None:
        """Count a progress notification for the request that owns ``token``."""
        request_id = self._by_token.get(token)
        entry = self._by_id.get(request_id) if request_id is not None else None
        if entry is None:
            return None
        entry.progress_count += 1
        if extend and entry.timeout > 0:
            entry.deadline = now + entry.timeout
            self._push(entry)
        return entry

    def expire(self, now: float) -> list[PendingRequest]:
        """Remove and return every request whose deadline has passed."""
        due = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, request_id = heapq.heappop(heap)
            entry = self._by_id.get(request_id)
            if entry is not None and entry.deadline == deadline:
                self.pop(request_id)
                due.append(entry)
        return due

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, _, request_id = heap[0]
            entry = self._by_id.get(request_id)
            if entry is not None and entry.deadline == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def drain(self) -> list[PendingRequest]:
        """Remove and return every pending request, oldest first."""
        entries = sorted(self._by_id.values(), key=lambda e: e.sent_at)
        self._by_id.clear()
        self._by_token.clear()
        self._heap.clear()
        return entries

    def _push(self, entry: PendingRequest) -> None:
        if len(self._heap) > 2 * len(self._by_id) + 64:
            self._heap = [(e.deadline, i, e.id) for i, e in enumerate(self._by_id.values())]
            heapq.heapify(self._heap)
            self._order = len(self._heap)
        self._order += 1
        heapq.heappush(self._heap, (entry.deadline, self._order, entry.id))

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[PendingRequest]:
        return iter(list(self._by_id.values()))

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._by_id
