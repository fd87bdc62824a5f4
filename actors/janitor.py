"""`Janitor`: wakes sessions when the deadlines they asked for come.

Sessions own their pending requests and know their own deadlines; each asks
the janitor for a wake-up only when it needs one earlier than the one it
already has (`actors.session.WakeMeAt`). The janitor keeps those in a
`DeadlineHeap` and, on every tick of the daemon's clock, wakes the sessions
whose time has come: O(k log n) per pass for k due sessions, never a scan of
every session. The ticks come from the hub's loop (`Tick`); the janitor
never sleeps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from actors.deadlines import DeadlineHeap
from actors.metrics import Metrics
from actors.session import Wake, WakeMeAt
from actors.supervisor import ChildContext, SupervisedActor, Tick

log = logging.getLogger("troupe.janitor")


@dataclass(frozen=True, slots=True)
class JanitorStats:
    passes: int
    woken: int
    scheduled: int


class Janitor(SupervisedActor):
    """A permanent child of the supervisor. A new incarnation starts with an
    empty heap; the daemon then asks every session to ask again (`Reschedule`)."""

    def __init__(
        self, context: ChildContext, clock: Callable[[], float] = time.monotonic, metrics: Metrics | None = None
    ) -> None:
        super().__init__(context)
        self._clock = clock
        self._metrics = metrics
        self._heap: DeadlineHeap[str, pykka.ActorRef[Any]] = DeadlineHeap()
        self.passes = 0
        self.woken = 0

    def handle(self, message: Any) -> Any:
        match message:
            case WakeMeAt(sid, at, ref):
                self._heap.push(at, sid, ref)
            case Tick():
                self._pass(self._clock())
            case _:
                return super().handle(message)
        return None

    def _pass(self, now: float) -> None:
        due = self._heap.pop_due(now)
        self.passes += 1
        if self._metrics is not None:
            self._metrics.janitor_passes.inc()
        for sid, ref in due.items():
            try:
                ref.tell(Wake())
            except pykka.ActorDeadError:
                log.debug("session %s ended before its wake-up", sid)
                continue
            self.woken += 1

    def stats(self) -> JanitorStats:
        return JanitorStats(self.passes, self.woken, len(self._heap))
