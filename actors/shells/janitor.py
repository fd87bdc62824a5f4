"""`Janitor`: the supervised actor whose passes wake the sessions that are due.

Sessions own their pending requests and know their own deadlines; each asks
for a wake-up only when it needs one earlier than the one it has. Those
wake-ups live in one place, the dispatcher's `mcp_troupe.actors.core.deadlines.Wakeups`, on the
hub's thread where the sessions run, so a wake-up costs no message and a
finished session leaves nothing behind. The janitor drives the passes: on
every tick of the daemon's clock it has the hub run `Dispatcher.janitor_pass`,
which takes what is due (O(k log n) for k due of n) and wakes those sessions.

State and driver are apart on purpose, the way an Erlang worker keeps its
table in ETS owned by a longer-lived process: when the janitor crashes and
the supervisor starts a new one, no wake-up is lost, only the passes pause
for the restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcp_troupe.actors.shells.supervisor import ChildContext, SupervisedActor, Tick

log = logging.getLogger("troupe.janitor")

RunPass = Callable[[float], None]
"""Runs one pass at the given monotonic time (the daemon: on the hub's thread)."""


@dataclass(frozen=True, slots=True)
class JanitorStats:
    passes: int


class Janitor(SupervisedActor):
    """A permanent child of the supervisor."""

    def __init__(self, context: ChildContext, run_pass: RunPass, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(context)
        self._run_pass = run_pass
        self._clock = clock
        self.passes = 0

    def handle(self, message: Any) -> Any:
        match message:
            case Tick():
                self.passes += 1
                self._run_pass(self._clock())
            case _:
                return super().handle(message)
        return None

    def stats(self) -> JanitorStats:
        return JanitorStats(self.passes)
