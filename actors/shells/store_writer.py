"""`StoreWriter`: the supervised actor that writes session records to the store, off the hot path.

State and driver apart, as the janitor's: the changes not yet written wait in the dispatcher's
`mcp_troupe.actors.core.write_behind.WriteBehind` on the hub's thread, where sessions change; on
every tick of the daemon's clock this actor takes a batch from there and writes it in one
transaction. When it crashes, the supervisor starts another and no queued change is lost; when the
store cannot be written (a full disk, a store out of reach) the batch goes back to the queue, the
failure is logged and counted, and the daemon serves on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from mcp_troupe.actors.core.records import SessionStore, Write, to_rows
from mcp_troupe.actors.shells.supervisor import ChildContext, SupervisedActor, Tick

log = logging.getLogger("troupe.store")

TakeBatch = Callable[[], list[Write]]
"""Takes the next batch off the queue (the daemon: on the hub's thread)."""
GiveBack = Callable[[list[Write]], None]
"""Puts a batch that was not written back on the queue."""


class StoreWriter(SupervisedActor):
    """A permanent child of the supervisor. Its store connection is its own (made in its thread)."""

    def __init__(
        self,
        context: ChildContext,
        open_store: Callable[[], SessionStore],
        take: TakeBatch,
        give_back: GiveBack,
        on_error: Callable[[str], None] = lambda _why: None,
    ) -> None:
        super().__init__(context)
        self._open_store = open_store
        self._take = take
        self._give_back = give_back
        self._on_error = on_error
        self._store: SessionStore | None = None
        self._warned_at = float("-inf")
        self.batches = 0

    def on_child_start(self) -> None:
        self._store = self._open_store()

    def handle(self, message: Any) -> Any:
        match message:
            case Tick():
                self.flush()
            case _:
                return super().handle(message)
        return None

    def flush(self) -> int:
        """Write what waits, a batch at a time; the number of changes written."""
        written = 0
        while batch := self._take():
            if not self._write(batch):
                break
            written += len(batch)
        return written

    def _write(self, batch: list[Write]) -> bool:
        assert self._store is not None
        try:
            self._store.write(to_rows(batch))
        except Exception as exc:  # noqa: BLE001 - any store failure: keep the batch, serve on
            self._give_back(batch)
            why = f"{type(exc).__name__}: {exc}"
            self._on_error(why)
            now = time.monotonic()
            if now - self._warned_at >= 10.0:
                self._warned_at = now
                log.warning("could not write %d session records to the store (%s); will retry", len(batch), why)
            return False
        self.batches += 1
        return True

    def on_stop(self) -> None:
        try:
            self.flush()
        except Exception:
            log.debug("final store flush skipped", exc_info=True)
        if self._store is not None:
            self._store.close()
        super().on_stop()
