"""`Evictor`: the supervised actor whose passes keep open sessions within ``max_sessions``.

Which session goes first is decided where the sessions are: the dispatcher
keeps them in order of last activity (`mcp_troupe.actors.core.recency.Recency`, exact, on the
hub's thread) and evicts at once, when an open would pass the limit, the
least recently active session that has been idle for ``evict_after_idle``
seconds; if none has, the open is refused, so a burst of openings never
pushes out a session in use and the count never passes the limit. The
evictor's pass, run on every tick of the daemon's clock, evicts the same way
while more sessions are open than the limit allows (a limit lowered under
the sessions already open). An evicted session ends cleanly: its pending
requests get errors, its client gets ``closed`` with reason ``evicted``, its
server process is stopped.

As with the janitor, the state is not the actor's: a crashed evictor is
restarted by the supervisor and nothing is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mcp_troupe.actors.shells.supervisor import ChildContext, SupervisedActor, Tick

log = logging.getLogger("troupe.evictor")


class Evictor(SupervisedActor):
    def __init__(self, context: ChildContext, run_pass: Callable[[], None]) -> None:
        super().__init__(context)
        self._run_pass = run_pass
        self.passes = 0

    def handle(self, message: Any) -> Any:
        match message:
            case Tick():
                self.passes += 1
                self._run_pass()
            case _:
                return super().handle(message)
        return None
