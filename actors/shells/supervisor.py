"""`Supervisor`: the pykka shell that carries out `SupervisorCore`'s decisions.

pykka has no supervision (an exception in a told message kills the actor and
calls ``on_failure``; one in ``on_start`` stops it and calls no hook; a stopped
actor cannot restart), so troupe builds it here:

* a child is a `SupervisedActor`; its ``on_failure`` tells the supervisor
  (`ChildExited`), and a liveness check on every `Tick` catches deaths that
  call no hook (an exception in ``on_start``);
* a restart starts a *new* actor from the child's start function;
* others reach a child by its stable id through the supervisor (`Forward`),
  never through an `ActorRef` that may be stale. A message for a child that is
  between incarnations is kept and delivered to the next one.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pykka

from mcp_troupe.actors.core.supervision import (
    Action,
    ChildSpec,
    ChildState,
    Escalate,
    StartChild,
    StopChild,
    SupervisorCore,
    SupervisorPolicy,
)
from mcp_troupe.actors.telemetry.observe import Observers

log = logging.getLogger("troupe.supervisor")

MAX_HELD_MESSAGES = 10_000
"""Messages kept for a child between incarnations; older ones are dropped first."""


class FaultInjected(RuntimeError):
    """Raised on purpose by fault injection."""


@dataclass(frozen=True)
class ChildContext:
    """What a child incarnation knows about its place in the tree."""

    supervisor: pykka.ActorRef[Any]
    child_id: str
    incarnation: int
    fail_on_start: bool = False


StartFunction = Callable[[ChildContext], pykka.ActorRef[Any]]

# -- messages ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChildExited:
    child_id: str
    incarnation: int
    abnormal: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Forward:
    """Deliver ``message`` to whichever incarnation of ``child_id`` is current."""

    child_id: str
    message: Any


@dataclass(frozen=True, slots=True)
class Tick:
    """The daemon's clock: liveness checks, backoff timers; forwarded to every child."""


@dataclass(frozen=True, slots=True)
class Status:
    """Ask for the tree: ``reply`` is called (on the supervisor's thread) with
    ``{strategy, intensity, period, escalated, children: [...]}``."""

    reply: Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class InjectFault:
    child_id: str
    now: bool = True
    """Raise in the child's next told message."""
    next_start: bool = False
    """Raise in ``on_start`` of the child's next incarnation."""


@dataclass(frozen=True, slots=True)
class Crash:
    """Sent to a child by fault injection: it raises on receipt."""


class SupervisedActor(pykka.ThreadingActor):
    """Base of supervised children: reports its exits to its supervisor."""

    use_daemon_thread = True

    def __init__(self, context: ChildContext) -> None:
        super().__init__()
        self.context = context

    def on_start(self) -> None:
        if self.context.fail_on_start:
            raise FaultInjected(f"injected fault in on_start of {self.context.child_id}")
        self.on_child_start()

    def on_child_start(self) -> None:
        """Start-up work of the child (``on_start`` is taken by fault injection)."""

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Crash):
            raise FaultInjected(f"injected fault in {self.context.child_id}")
        return self.handle(message)

    def handle(self, message: Any) -> Any:
        raise TypeError(f"{type(self).__name__} got an unknown message {message!r}")

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._report(True, f"{type(exception_value).__name__}: {exception_value}")

    def on_stop(self) -> None:
        self._report(False, "stopped")

    def _report(self, abnormal: bool, reason: str) -> None:
        ctx = self.context
        try:
            ctx.supervisor.tell(ChildExited(ctx.child_id, ctx.incarnation, abnormal, reason))
        except pykka.ActorDeadError:
            pass  # the supervisor is gone too: nobody to tell


class Supervisor(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(
        self,
        children: Sequence[tuple[ChildSpec, StartFunction]],
        policy: SupervisorPolicy | None = None,
        escalate: Callable[[str], None] = lambda reason: None,
        clock: Callable[[], float] = time.monotonic,
        observers: Observers | None = None,
    ) -> None:
        super().__init__()
        self._observers = observers or Observers()
        self.core = SupervisorCore([spec for spec, _ in children], policy)
        self._start_functions = {spec.id: start for spec, start in children}
        self._escalate = escalate
        self._clock = clock
        self._refs: dict[str, pykka.ActorRef[Any]] = {}
        self._held: dict[str, deque[Any]] = {spec.id: deque(maxlen=MAX_HELD_MESSAGES) for spec, _ in children}
        self._seen_dead: set[tuple[str, int]] = set()

    def on_start(self) -> None:
        self._run(self.core.start_all())

    def on_stop(self) -> None:
        self._run(self.core.shutdown())

    def on_receive(self, message: Any) -> Any:
        match message:
            case Forward(child_id, inner):
                self._forward(child_id, inner)
            case ChildExited(child_id, incarnation, abnormal, reason):
                if abnormal:
                    log.error("child %s (incarnation %d) crashed: %s", child_id, incarnation, reason)
                    self._event("supervisor.child_died", child=child_id, incarnation=incarnation, reason=reason)
                self._run(self.core.child_exited(child_id, incarnation, abnormal, reason, self._clock()))
            case Tick():
                self._tick()
            case Status(reply):
                policy = self.core.policy
                reply(
                    {
                        "strategy": policy.strategy.value,
                        "intensity": policy.intensity,
                        "period": policy.period,
                        "escalated": self.core.escalated,
                        "children": self.core.status(),
                    }
                )
            case InjectFault(child_id, now, next_start):
                self._inject(child_id, now, next_start)
            case _:
                log.warning("supervisor ignored an unknown message %r", message)  # OTP: log and go on
        return None

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """The supervisor itself crashed: no child may outlive it, and its parent must know."""
        reason = f"the supervisor crashed: {exception_value!r}"
        log.critical("%s; stopping its children", reason)
        self._run(self.core.shutdown())
        self._escalate(reason)

    def _forward(self, child_id: str, message: Any) -> None:
        current = self.core.current(child_id)
        if current is None:
            log.warning("dropped a message for unknown child %r", child_id)
            return
        ref = self._refs.get(child_id)
        if current[1] is ChildState.RUNNING and ref is not None:
            try:
                ref.tell(message)
                return
            except pykka.ActorDeadError:
                pass  # died; its ChildExited (or the liveness check) restarts it
        self._held[child_id].append(message)

    def _tick(self) -> None:
        now = self._clock()
        for child_id in list(self._refs):
            ref = self._refs.get(child_id)
            incarnation, state = self.core.current(child_id)  # type: ignore[misc]
            if ref is None or state is not ChildState.RUNNING or ref.is_alive():
                continue
            key = (child_id, incarnation)
            if key not in self._seen_dead:  # one tick of grace for its on_failure report
                self._seen_dead = {k for k in self._seen_dead if k[0] != child_id} | {key}
                continue
            reason = "died without reporting a failure (an exception in on_start?)"
            log.error("child %s (incarnation %d) %s", child_id, incarnation, reason)
            self._event("supervisor.child_died", child=child_id, incarnation=incarnation, reason=reason)
            self._run(self.core.child_exited(child_id, incarnation, True, reason, now))
        self._run(self.core.tick(now))
        for child_id, ref in self._refs.items():
            if self.core.current(child_id)[1] is ChildState.RUNNING:  # type: ignore[index]
                try:
                    ref.tell(TICK)
                except pykka.ActorDeadError:
                    pass  # the liveness check above handles it next tick

    def _inject(self, child_id: str, now: bool, next_start: bool) -> None:
        log.warning("fault injection: %s (now=%s, next start=%s)", child_id, now, next_start)
        if next_start:
            self.core.fail_next_start(child_id)
        if now:
            self._forward(child_id, Crash())

    def _run(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case StartChild(child_id, incarnation, fail_on_start):
                    self._start_child(child_id, incarnation, fail_on_start)
                case StopChild(child_id, _incarnation, timeout):
                    self._stop_child(child_id, timeout)
                case Escalate(reason):
                    log.critical("supervisor escalates: %s", reason)
                    self._observers.metrics.escalations.inc()
                    self._event("supervisor.escalated", reason=reason)
                    self._escalate(reason)

    def _start_child(self, child_id: str, incarnation: int, fail_on_start: bool) -> None:
        context = ChildContext(self.actor_ref, child_id, incarnation, fail_on_start)
        try:
            ref = self._start_functions[child_id](context)
        except Exception as exc:  # noqa: BLE001 - a start that fails is that child failing (OTP)
            reason = f"start failed: {type(exc).__name__}: {exc}"
            log.error("child %s (incarnation %d) %s", child_id, incarnation, reason)
            self._run(self.core.child_exited(child_id, incarnation, True, reason, self._clock()))
            return
        self._refs[child_id] = ref
        if incarnation > 1:
            log.warning("child %s restarted (incarnation %d)", child_id, incarnation)
            self._observers.metrics.restarts.labels(child_id).inc()
            self._event("supervisor.restarted", child=child_id, incarnation=incarnation)
        held = self._held[child_id]
        while held:
            try:
                ref.tell(held[0])
            except pykka.ActorDeadError:
                return  # this incarnation died already; keep the rest for the next
            held.popleft()

    def _event(self, topic: str, **fields: Any) -> None:
        self._observers.publish(topic, fields)
        self._observers.audit({"event": topic, **fields})

    def _stop_child(self, child_id: str, timeout: float) -> None:
        ref = self._refs.pop(child_id, None)
        if ref is None:
            return
        try:
            ref.stop(block=True, timeout=timeout)
        except pykka.ActorDeadError:
            pass
        except pykka.Timeout:
            log.error("child %s did not stop within %.1fs; abandoned", child_id, timeout)


TICK = Tick()
