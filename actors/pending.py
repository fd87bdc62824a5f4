"""Requests waiting for their response, one table per direction.

Client-to-server and server-to-client requests have separate JSON-RPC id
spaces (sampling/createMessage, roots/list and elicitation/create come from the
server), so a session keeps two `PendingTable` s and matches a response only
against the table of the direction its request went.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from transport.jsonrpc import RequestId


@dataclass(slots=True)
class PendingRequest:
    id: RequestId
    method: str
    sent_at: float
    last_activity: float


class DuplicateRequestId(ValueError):
    pass


class PendingTable:
    """Pending requests of one direction, by JSON-RPC id."""

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        self._by_id: dict[RequestId, PendingRequest] = {}

    def add(self, request_id: RequestId, method: str, now: float) -> PendingRequest:
        if request_id in self._by_id:
            raise DuplicateRequestId(request_id)
        entry = PendingRequest(request_id, method, now, now)
        self._by_id[request_id] = entry
        return entry

    def pop(self, request_id: RequestId) -> PendingRequest | None:
        return self._by_id.pop(request_id, None)

    def get(self, request_id: RequestId) -> PendingRequest | None:
        return self._by_id.get(request_id)

    def drain(self) -> list[PendingRequest]:
        """Remove and return every pending request, oldest first."""
        entries = list(self._by_id.values())
        self._by_id.clear()
        return entries

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[PendingRequest]:
        return iter(list(self._by_id.values()))

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._by_id
