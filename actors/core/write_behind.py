"""`WriteBehind`: the session store's queue of changes not yet written (pure).

Sessions change on the hub's thread; the store actor writes in batches, off the hot path. Between
them this queue keeps at most one change per session (the latest wins: a session written ten times
between two batches costs one row), in the order sessions first changed. It is bounded: over
``limit`` sessions waiting, a new session's change is refused and counted in ``dropped`` (its
record is written with its next change, or never if it has none: the documented loss window).
A batch that could not be written goes back with `requeue`, unless a newer change came meanwhile.
"""

from __future__ import annotations

from mcp_troupe.actors.core.records import SessionRecord, Write


class WriteBehind:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._waiting: dict[str, SessionRecord | None] = {}
        self.dropped = 0
        """Changes refused because ``limit`` sessions were already waiting."""
        self.written = 0
        """Changes handed out in batches (`take`)."""

    def __len__(self) -> int:
        return len(self._waiting)

    def put(self, sid: str, record: SessionRecord | None) -> bool:
        """Queue ``sid``'s new record (None: delete it). False if refused (the queue is full)."""
        waiting = self._waiting
        if sid not in waiting and len(waiting) >= self.limit:
            self.dropped += 1
            return False
        waiting[sid] = record
        return True

    def take(self, most: int) -> list[Write]:
        """Up to ``most`` changes, oldest first, removed from the queue."""
        waiting = self._waiting
        batch: list[Write] = []
        for sid in waiting:
            if len(batch) >= most:
                break
            batch.append((sid, waiting[sid]))
        for sid, _ in batch:
            del waiting[sid]
        self.written += len(batch)
        return batch

    def requeue(self, batch: list[Write]) -> None:
        """Give back a batch the store did not take; a change queued since then is newer and stays."""
        self.written -= len(batch)
        for sid, record in batch:
            if sid not in self._waiting:
                self.put(sid, record)
