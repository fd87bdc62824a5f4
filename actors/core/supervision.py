"""Erlang/OTP-style supervision decisions, sans-IO.

`SupervisorCore` knows the child specs, which incarnation of each child is
current, and the restart history. Told that a child exited (and how), it
decides what to do and returns actions: start or stop children, or escalate.
It owns no actor, thread or clock; `mcp_troupe.actors.shells.supervisor.Supervisor` carries the
actions out.

Semantics follow OTP's ``supervisor``:

* restart types: ``permanent`` (always restarted), ``transient`` (restarted
  only after an abnormal exit), ``temporary`` (never restarted);
* strategies: ``one_for_one`` (restart the child that died),
  ``one_for_all`` (stop the others in reverse start order, restart all in start
  order), ``rest_for_one`` (the same for the dead child and those started after it);
* intensity: more than ``intensity`` restarts within ``period`` seconds makes
  the supervisor stop every child in reverse start order and escalate;
* optional backoff: a restart waits ``backoff_initial`` seconds, doubling per
  consecutive restart of that child within ``period``, up to ``backoff_max``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Restart(Enum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class Strategy(Enum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


@dataclass(frozen=True)
class SupervisorPolicy:
    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: int = 1
    """Restarts allowed within ``period`` (OTP's default: 1 in 5 s)."""
    period: float = 5.0
    backoff_initial: float = 0.0
    """Seconds before a restart; 0 restarts at once (OTP's behaviour)."""
    backoff_max: float = 30.0


@dataclass(frozen=True)
class ChildSpec:
    id: str
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float = 5.0
    """Seconds a child gets to stop before it is abandoned (OTP: 5000 ms for workers)."""


class ChildState(Enum):
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPED = "stopped"


# -- actions -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartChild:
    id: str
    incarnation: int
    fail_on_start: bool = False
    """Fault injection: this incarnation raises in ``on_start``."""


@dataclass(frozen=True, slots=True)
class StopChild:
    id: str
    incarnation: int
    timeout: float


@dataclass(frozen=True, slots=True)
class Escalate:
    reason: str


Action = StartChild | StopChild | Escalate


@dataclass
class Child:
    spec: ChildSpec
    incarnation: int = 0
    state: ChildState = ChildState.STOPPED
    restarts: int = 0
    last_failure: str | None = None
    restart_at: float | None = None
    recent: deque[float] = field(default_factory=deque)
    """This child's restarts within the period, for its backoff."""


class SupervisorCore:
    def __init__(self, specs: Sequence[ChildSpec], policy: SupervisorPolicy | None = None) -> None:
        self.policy = policy or SupervisorPolicy()
        self.children = {spec.id: Child(spec) for spec in specs}
        self.order = [spec.id for spec in specs]
        self.restart_times: deque[float] = deque()
        self.escalated: str | None = None
        self._fail_next_start: set[str] = set()

    # -- events --------------------------------------------------------------------

    def start_all(self) -> list[Action]:
        return [self._start(child_id) for child_id in self.order]

    def child_exited(self, child_id: str, incarnation: int, abnormal: bool, reason: str, now: float) -> list[Action]:
        """The given incarnation of a child ended; ``abnormal`` for a crash."""
        child = self.children.get(child_id)
        if child is None or incarnation != child.incarnation or child.state is not ChildState.RUNNING:
            return []  # stale news: an incarnation we already replaced or stopped
        child.state = ChildState.STOPPED
        if abnormal:
            child.last_failure = reason
        if not self._should_restart(child.spec.restart, abnormal) or self.escalated:
            return []
        self._note_restart(now)
        if len([t for t in self.restart_times if now - t <= self.policy.period]) > self.policy.intensity:
            return self._escalate(
                f"child {child_id!r} failed ({reason}) and restart intensity "
                f"{self.policy.intensity} in {self.policy.period:g}s was exceeded"
            )
        return self._restart(self._affected(child_id), child_id, now)

    def tick(self, now: float) -> list[Action]:
        """Start the children whose backoff has run out."""
        actions: list[Action] = []
        for child_id in self.order:
            child = self.children[child_id]
            if child.state is ChildState.RESTARTING and child.restart_at is not None and now >= child.restart_at:
                child.restart_at = None
                child.restarts += 1
                actions.append(self._start(child_id))
        return actions

    def shutdown(self) -> list[Action]:
        """Stop every running child in reverse start order."""
        actions: list[Action] = []
        for child_id in reversed(self.order):
            child = self.children[child_id]
            if child.state is ChildState.RUNNING:
                actions.append(StopChild(child_id, child.incarnation, child.spec.shutdown_timeout))
            child.state = ChildState.STOPPED
            child.restart_at = None
        return actions

    def fail_next_start(self, child_id: str) -> None:
        self._fail_next_start.add(child_id)

    # -- queries -------------------------------------------------------------------

    def current(self, child_id: str) -> tuple[int, ChildState] | None:
        child = self.children.get(child_id)
        return (child.incarnation, child.state) if child else None

    def status(self) -> list[dict[str, Any]]:
        return [
            {
                "id": c.spec.id,
                "restart": c.spec.restart.value,
                "state": c.state.value,
                "incarnation": c.incarnation,
                "restarts": c.restarts,
                "last_failure": c.last_failure,
            }
            for c in (self.children[i] for i in self.order)
        ]

    # -- internals -----------------------------------------------------------------

    @staticmethod
    def _should_restart(restart: Restart, abnormal: bool) -> bool:
        return restart is Restart.PERMANENT or (restart is Restart.TRANSIENT and abnormal)

    def _note_restart(self, now: float) -> None:
        self.restart_times.append(now)
        while self.restart_times and now - self.restart_times[0] > self.policy.period:
            self.restart_times.popleft()

    def _affected(self, child_id: str) -> list[str]:
        strategy = self.policy.strategy
        if strategy is Strategy.ONE_FOR_ALL:
            return list(self.order)
        if strategy is Strategy.REST_FOR_ONE:
            return self.order[self.order.index(child_id) :]
        return [child_id]

    def _restart(self, affected: list[str], failed_id: str, now: float) -> list[Action]:
        actions: list[Action] = []
        for child_id in reversed(affected):
            child = self.children[child_id]
            if child_id != failed_id and child.state is ChildState.RUNNING:
                actions.append(StopChild(child_id, child.incarnation, child.spec.shutdown_timeout))
                child.state = ChildState.STOPPED
        for child_id in affected:
            child = self.children[child_id]
            if child_id != failed_id and child.spec.restart is Restart.TEMPORARY:
                continue
            delay = self._backoff(child, now)
            if delay > 0:
                child.state, child.restart_at = ChildState.RESTARTING, now + delay
            else:
                child.restarts += 1
                actions.append(self._start(child_id))
        return actions

    def _backoff(self, child: Child, now: float) -> float:
        policy = self.policy
        child.recent.append(now)
        while child.recent and now - child.recent[0] > policy.period:
            child.recent.popleft()
        if policy.backoff_initial <= 0:
            return 0.0
        return min(policy.backoff_max, policy.backoff_initial * 2.0 ** (len(child.recent) - 1))

    def _start(self, child_id: str) -> StartChild:
        child = self.children[child_id]
        child.incarnation += 1
        child.state = ChildState.RUNNING
        fail = child_id in self._fail_next_start
        self._fail_next_start.discard(child_id)
        return StartChild(child_id, child.incarnation, fail)

    def _escalate(self, reason: str) -> list[Action]:
        self.escalated = reason
        return [*self.shutdown(), Escalate(reason)]
