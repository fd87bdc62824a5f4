"""`Evictor`: keeps open sessions at or under ``max_sessions``, least recently active first.

The router tells it about every session that opens (`Track`) and finishes
(`Forget`); sessions tell it when they are active (`Touch`, at most once per
`actors.session.TOUCH_INTERVAL` each, so the hot path pays nothing per frame). Recency lives
in an `OrderedDict`: a touch is one ``move_to_end`` (O(1), no duplicate
entries), an eviction one ``popitem(last=False)``. An evicted session ends
cleanly: its pending requests get errors, its client gets ``closed`` with
reason ``evicted``, its server process is stopped.

A new incarnation after a crash starts empty; the daemon sends it every open
session (`Resync`), in opening order, since recency was the crashed one's.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import pykka

from actors.metrics import Metrics
from actors.session import CloseSession, Touch
from actors.supervisor import ChildContext, SupervisedActor, Tick

log = logging.getLogger("troupe.evictor")


@dataclass(frozen=True, slots=True)
class Track:
    sid: str
    ref: pykka.ActorRef[Any]


@dataclass(frozen=True, slots=True)
class Forget:
    sid: str


@dataclass(frozen=True, slots=True)
class Resync:
    sessions: tuple[tuple[str, pykka.ActorRef[Any]], ...]


class Evictor(SupervisedActor):
    def __init__(self, context: ChildContext, max_sessions: int, metrics: Metrics | None = None) -> None:
        super().__init__(context)
        self._metrics = metrics
        self.max_sessions = max_sessions
        self._recency: OrderedDict[str, pykka.ActorRef[Any]] = OrderedDict()
        self._closing: set[str] = set()
        """Evicted, not yet finished: a `Resync` must not count or evict them again."""
        self.evicted = 0

    def handle(self, message: Any) -> Any:
        match message:
            case Touch(sid):
                if sid in self._recency:
                    self._recency.move_to_end(sid)
            case Track(sid, ref):
                self._recency[sid] = ref
                self._enforce()
            case Forget(sid):
                self._recency.pop(sid, None)
                self._closing.discard(sid)
            case Resync(sessions):
                self._recency = OrderedDict((sid, ref) for sid, ref in sessions if sid not in self._closing)
                self._enforce()
            case Tick():
                pass
            case _:
                return super().handle(message)
        return None

    def _enforce(self) -> None:
        while len(self._recency) > self.max_sessions:
            sid, ref = self._recency.popitem(last=False)
            self._closing.add(sid)
            self.evicted += 1
            if self._metrics is not None:
                self._metrics.evictions.inc()
            log.info("evicting session %s (least recently active; max_sessions %d)", sid, self.max_sessions)
            try:
                ref.tell(CloseSession("evicted"))
            except pykka.ActorDeadError:
                pass  # it ended on its own meanwhile
