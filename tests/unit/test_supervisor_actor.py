"""Supervision's pykka shell: the `Supervisor` actor over small `SupervisedActor` children defined here.

Children are observed through the records they leave in queues and through
`Status`; nothing sleeps to wait, every wait polls a condition with a deadline.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pykka
import pytest
from conftest import wait_for as shared_wait_for

from mcp_troupe.actors.core.supervision import (
    ChildSpec,
    ChildState,
    Restart,
    Strategy,
    SupervisorPolicy,
)
from mcp_troupe.actors.shells.janitor import Janitor
from mcp_troupe.actors.shells.supervisor import (
    TICK,
    ChildContext,
    Crash,
    Forward,
    InjectFault,
    Status,
    SupervisedActor,
    Supervisor,
    Tick,
)

pytestmark = pytest.mark.timeout(60)

PERMANENT, TRANSIENT, TEMPORARY = Restart.PERMANENT, Restart.TRANSIENT, Restart.TEMPORARY
ONE_FOR_ONE, ONE_FOR_ALL, REST_FOR_ONE = Strategy.ONE_FOR_ONE, Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE
RUNNING, RESTARTING, STOPPED = ChildState.RUNNING, ChildState.RESTARTING, ChildState.STOPPED

ACTOR_THREAD = re.compile(r"^(Supervisor|Probe|Janitor)-\d+$")


def wait_for(condition: Callable[[], Any], timeout: float = 5.0, what: str = "a condition") -> Any:
    """`conftest.wait_for` with this file's defaults: short timeouts, a fast poll."""
    return shared_wait_for(condition, timeout, what, interval=0.002)


def drain(q: queue.SimpleQueue[Any]) -> list[Any]:
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items


def actor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if ACTOR_THREAD.match(t.name)]


@pytest.fixture(autouse=True)
def _no_actors_leak() -> Iterator[None]:
    """Start from no actor threads; stop every actor afterwards, supervisors first (a child stopped
    behind its supervisor's back would be restarted by it, outside `stop_all`'s snapshot)."""
    wait_for(lambda: not actor_threads(), 10, "actor threads of an earlier test to end")
    try:
        yield
    finally:
        for ref in pykka.ActorRegistry.get_by_class(Supervisor):
            ref.stop(timeout=10)
        pykka.ActorRegistry.stop_all(timeout=10)


# ==============================================================================
# Supervisor: the pykka shell, with real child actors
# ==============================================================================


@dataclass(frozen=True, slots=True)
class Note:
    """A message a `Probe` records with its incarnation."""

    value: Any


class Probe(SupervisedActor):
    """A test child: leaves a record of its start-up, its stops and crashes, and what it receives."""

    def __init__(self, context: ChildContext, tree: Tree) -> None:
        super().__init__(context)
        self.tree = tree

    @property
    def me(self) -> tuple[str, int]:
        return self.context.child_id, self.context.incarnation

    def on_child_start(self) -> None:
        self.tree.running.put(self.me)

    def handle(self, message: Any) -> Any:
        match message:
            case Tick():
                return None
            case "incarnation":
                return self.context.incarnation
            case Note(value):
                self.tree.received.put((*self.me, value))
                return None
        return super().handle(message)

    def on_stop(self) -> None:
        self.tree.events.put(("stop", *self.me))
        super().on_stop()

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.tree.events.put(("crash", *self.me))
        super().on_failure(exception_type, exception_value, traceback)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Tree:
    """A `Supervisor` over `Probe` children, and the records they leave.

    ``events`` is one ordered log: ``("start", id, n)`` from the start function (in the supervisor's thread),
    ``("stop", id, n)`` from ``on_stop`` (the supervisor waits for it) and ``("crash", id, n)`` from
    ``on_failure`` (before the child tells the supervisor)."""

    def __init__(
        self,
        children: Sequence[str | ChildSpec],
        policy: SupervisorPolicy,
        clock: Callable[[], float] = time.monotonic,
        start_functions: dict[str, Callable[[ChildContext], pykka.ActorRef[Any]]] | None = None,
    ) -> None:
        self.events: queue.SimpleQueue[tuple[str, str, int]] = queue.SimpleQueue()
        self.running: queue.SimpleQueue[tuple[str, int]] = queue.SimpleQueue()
        self.received: queue.SimpleQueue[tuple[str, int, Any]] = queue.SimpleQueue()
        self.escalations: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.refs: dict[tuple[str, int], pykka.ActorRef[Any]] = {}
        self.contexts: dict[tuple[str, int], ChildContext] = {}
        specs = [c if isinstance(c, ChildSpec) else ChildSpec(c) for c in children]
        overrides = start_functions or {}
        self.supervisor = Supervisor.start(
            [(spec, overrides.get(spec.id, self.start_probe)) for spec in specs],
            policy,
            self.escalations.put,
            clock,
        )

    def start_probe(self, context: ChildContext) -> pykka.ActorRef[Any]:
        key = (context.child_id, context.incarnation)
        self.events.put(("start", *key))
        self.contexts[key] = context
        ref = Probe.start(context, self)
        self.refs[key] = ref
        return ref

    def tree_status(self) -> dict[str, Any]:
        """The whole `Status` reply: ``{strategy, intensity, period, escalated, children}``."""
        box: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.supervisor.tell(Status(box.put))
        return box.get(timeout=5)

    def status(self) -> dict[str, dict[str, Any]]:
        """The children's part of `Status`, by id."""
        return {child["id"]: child for child in self.tree_status()["children"]}

    def wait_status(self, what: str, **expected: tuple[int, str]) -> dict[str, dict[str, Any]]:
        """Poll `Status` until each named child has the given (incarnation, state)."""

        def matches() -> dict[str, dict[str, Any]] | None:
            status = self.status()
            ok = all((status[i]["incarnation"], status[i]["state"]) == v for i, v in expected.items())
            return status if ok else None

        return wait_for(matches, 5, what)

    def tick(self) -> None:
        """One tick, processed by the time this returns."""
        self.supervisor.ask(TICK, timeout=5)

    def ask(self, child_id: str, incarnation: int) -> Any:
        return self.refs[(child_id, incarnation)].ask("incarnation", timeout=5)

    def wait_dead(self, child_id: str, incarnation: int) -> None:
        wait_for(lambda: (child_id, incarnation) in self.refs, 5, f"{child_id}#{incarnation} to be started")
        ref = self.refs[(child_id, incarnation)]
        wait_for(lambda: not ref.is_alive(), 5, f"{child_id}#{incarnation} to die")


def policy(
    strategy: Strategy = ONE_FOR_ONE, intensity: int = 10, period: float = 60.0, **kw: float
) -> SupervisorPolicy:
    return SupervisorPolicy(strategy, intensity, period, **kw)


def test_supervisor_starts_children_in_order_and_answers_status() -> None:
    tree = Tree(["a", "b", "c"], policy(REST_FOR_ONE, intensity=3, period=7.5))
    status = tree.wait_status("all children running", a=(1, "running"), b=(1, "running"), c=(1, "running"))
    whole = tree.tree_status()
    assert {k: v for k, v in whole.items() if k != "children"} == {
        "strategy": "rest_for_one",
        "intensity": 3,
        "period": 7.5,
        "escalated": None,
    }
    assert [child["id"] for child in whole["children"]] == ["a", "b", "c"]  # in start order
    assert status == {
        i: {"id": i, "restart": "permanent", "state": "running", "incarnation": 1, "restarts": 0, "last_failure": None}
        for i in "abc"
    }
    assert drain(tree.events) == [("start", "a", 1), ("start", "b", 1), ("start", "c", 1)]
    assert [tree.ask(i, 1) for i in "abc"] == [1, 1, 1]
    assert sorted(drain(tree.running)) == [("a", 1), ("b", 1), ("c", 1)]


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (ONE_FOR_ONE, [("crash", "b", 1), ("start", "b", 2)]),
        (
            ONE_FOR_ALL,
            [("crash", "b", 1), ("stop", "d", 1), ("stop", "c", 1), ("stop", "a", 1)]
            + [("start", i, 2) for i in "abcd"],
        ),
        (
            REST_FOR_ONE,
            [("crash", "b", 1), ("stop", "d", 1), ("stop", "c", 1)] + [("start", i, 2) for i in "bcd"],
        ),
    ],
)
def test_strategies_restart_exactly_the_children_they_should(
    strategy: Strategy, expected: list[tuple[str, str, int]]
) -> None:
    tree = Tree(["a", "b", "c", "d"], policy(strategy))
    tree.wait_status("all running", a=(1, "running"), b=(1, "running"), c=(1, "running"), d=(1, "running"))
    drain(tree.events)
    tree.supervisor.tell(Forward("b", Crash()))  # a crash in a told message; no Tick is ever sent
    restarted = {e[1] for e in expected if e[0] == "start"}
    want = {i: ((2 if i in restarted else 1), "running") for i in "abcd"}
    status = tree.wait_status(f"{sorted(restarted)} restarted", **want)
    assert drain(tree.events) == expected
    assert status["b"]["last_failure"] == "FaultInjected: injected fault in b"
    assert {i: status[i]["restarts"] for i in "abcd"} == {i: int(i in restarted) for i in "abcd"}
    for i in "abcd":
        incarnation = want[i][0]
        assert tree.ask(i, incarnation) == incarnation  # the current incarnation is alive and answering
        if incarnation == 2:
            assert not tree.refs[(i, 1)].is_alive()
    # Let the replaced incarnations' own reports (their on_stop) reach the supervisor: stale, so nothing moves.
    wait_for(lambda: len(pykka.ActorRegistry.get_all()) == 5, 5, "only the current actors to be registered")
    assert {i: (s["incarnation"], s["state"]) for i, s in tree.status().items()} == want
    assert drain(tree.events) == []


def test_children_that_end_on_their_own_are_restarted_per_their_restart_type() -> None:
    specs = [ChildSpec("p"), ChildSpec("tr", TRANSIENT), ChildSpec("tmp", TEMPORARY)]
    specs += [ChildSpec("tr!", TRANSIENT), ChildSpec("tmp!", TEMPORARY)]
    tree = Tree(specs, policy(intensity=10))
    tree.wait_status("running", **{s.id: (1, "running") for s in specs})
    for child_id in ("p", "tr", "tmp"):  # a normal exit (on_stop) that the supervisor did not ask for
        assert tree.refs[(child_id, 1)].stop(timeout=5) is True
    for child_id in ("tr!", "tmp!"):
        tree.supervisor.tell(Forward(child_id, Crash()))
    status = tree.wait_status(
        "permanent and crashed transient restarted, the rest left stopped",
        p=(2, "running"),
        tr=(1, "stopped"),
        tmp=(1, "stopped"),
        **{"tr!": (2, "running"), "tmp!": (1, "stopped")},
    )
    assert {i: s["last_failure"] for i, s in status.items()} == {
        "p": None,
        "tr": None,
        "tmp": None,
        "tr!": "FaultInjected: injected fault in tr!",
        "tmp!": "FaultInjected: injected fault in tmp!",
    }
    assert {i: s["restarts"] for i, s in status.items()} == {"p": 1, "tr": 0, "tmp": 0, "tr!": 1, "tmp!": 0}
    assert tree.ask("p", 2) == 2 and tree.ask("tr!", 2) == 2


def test_inject_fault_now_crashes_the_child_and_it_is_restarted() -> None:
    tree = Tree(["a", "b"], policy())
    tree.wait_status("running", a=(1, "running"), b=(1, "running"))
    tree.supervisor.tell(InjectFault("a"))
    tree.wait_status("a restarted", a=(2, "running"), b=(1, "running"))
    assert drain(tree.events) == [("start", "a", 1), ("start", "b", 1), ("crash", "a", 1), ("start", "a", 2)]
    assert tree.contexts[("a", 2)].fail_on_start is False
    assert tree.ask("a", 2) == 2


def test_a_death_in_on_start_is_noticed_by_the_liveness_check_after_a_tick_of_grace() -> None:
    tree = Tree(["a", "b", "c"], policy(intensity=5))
    tree.wait_status("running", a=(1, "running"), b=(1, "running"), c=(1, "running"))
    tree.supervisor.tell(InjectFault("b", now=True, next_start=True))
    tree.wait_status("b's second incarnation started", b=(2, "running"))
    assert tree.contexts[("b", 2)].fail_on_start is True
    tree.wait_dead("b", 2)  # it raised in on_start: no hook told the supervisor
    assert tree.status()["b"]["incarnation"] == 2
    tree.tick()  # the tick of grace
    assert (tree.status()["b"]["incarnation"], tree.status()["b"]["state"]) == (2, "running")
    tree.tick()
    status = tree.wait_status("b restarted by the liveness check", a=(1, "running"), b=(3, "running"), c=(1, "running"))
    assert status["b"]["restarts"] == 2
    assert "died without reporting" in status["b"]["last_failure"]
    assert tree.contexts[("b", 3)].fail_on_start is False
    assert tree.ask("b", 3) == 3
    assert drain(tree.events) == [("start", i, 1) for i in "abc"] + [
        ("crash", "b", 1),
        ("start", "b", 2),
        ("start", "b", 3),
    ]
    assert ("b", 2) not in drain(tree.running)  # on_child_start never ran for the failing incarnation
    assert tree.escalations.empty()


def test_a_death_in_on_start_beyond_the_intensity_escalates() -> None:
    tree = Tree(["a", "b", "c"], policy(intensity=1, period=60.0))
    tree.wait_status("running", a=(1, "running"), b=(1, "running"), c=(1, "running"))
    drain(tree.events)
    tree.supervisor.tell(InjectFault("b", now=True, next_start=True))
    tree.wait_status("b's second incarnation", b=(2, "running"))
    tree.wait_dead("b", 2)
    tree.tick()
    assert tree.escalations.empty()  # the grace tick
    tree.tick()
    reason = tree.escalations.get(timeout=5)
    assert "'b'" in reason and "died without reporting" in reason
    assert drain(tree.events) == [("crash", "b", 1), ("start", "b", 2), ("stop", "c", 1), ("stop", "a", 1)]
    whole = tree.tree_status()
    assert whole["escalated"] == reason
    status = {child["id"]: child for child in whole["children"]}
    assert {i: s["state"] for i, s in status.items()} == {"a": "stopped", "b": "stopped", "c": "stopped"}
    assert not any(ref.is_alive() for ref in tree.refs.values())
    # Nothing comes back: not on later ticks, not for a forwarded crash.
    for _ in range(3):
        tree.tick()
    tree.supervisor.tell(Forward("a", Note("held")))
    tree.tick()
    assert drain(tree.events) == []
    assert tree.escalations.empty()
    assert tree.supervisor.is_alive()


def test_forwarded_messages_wait_for_the_next_incarnation_during_backoff() -> None:
    clock = FakeClock()
    tree = Tree(["a", "b"], policy(intensity=5, backoff_initial=1.0), clock)
    tree.wait_status("running", a=(1, "running"), b=(1, "running"))
    tree.supervisor.tell(Forward("a", Note(0)))
    assert tree.received.get(timeout=5) == ("a", 1, 0)
    tree.supervisor.tell(Forward("a", Crash()))
    tree.wait_status("a waiting for its restart", a=(1, "restarting"))
    for n in (1, 2, 3):
        tree.supervisor.tell(Forward("a", Note(n)))
    tree.tick()
    clock.now += 0.5
    tree.tick()
    assert (tree.status()["a"]["incarnation"], tree.status()["a"]["state"]) == (1, "restarting")
    assert drain(tree.received) == []
    clock.now += 0.5
    tree.tick()
    tree.wait_status("a restarted", a=(2, "running"))
    tree.supervisor.tell(Forward("a", Note(4)))
    got = [tree.received.get(timeout=5) for _ in range(4)]
    assert got == [("a", 2, 1), ("a", 2, 2), ("a", 2, 3), ("a", 2, 4)]
    assert tree.status()["b"]["incarnation"] == 1


def test_a_message_for_an_incarnation_that_died_silently_reaches_the_next_one() -> None:
    tree = Tree(["a"], policy(intensity=5))
    tree.wait_status("running", a=(1, "running"))
    tree.supervisor.tell(InjectFault("a", now=True, next_start=True))
    tree.wait_status("a's second incarnation", a=(2, "running"))
    tree.wait_dead("a", 2)
    tree.supervisor.tell(Forward("a", Note("for whoever is next")))  # the supervisor still thinks #2 runs
    tree.tick()
    tree.tick()
    tree.wait_status("a restarted", a=(3, "running"))
    assert tree.received.get(timeout=5) == ("a", 3, "for whoever is next")


def test_stopping_the_supervisor_stops_its_children_in_reverse_order() -> None:
    tree = Tree(["a", "b", "c"], policy())
    tree.wait_status("running", a=(1, "running"), b=(1, "running"), c=(1, "running"))
    drain(tree.events)
    assert tree.supervisor.stop(timeout=10) is True
    assert drain(tree.events) == [("stop", "c", 1), ("stop", "b", 1), ("stop", "a", 1)]
    assert pykka.ActorRegistry.get_all() == []
    wait_for(lambda: not actor_threads(), 5, "every actor thread to end")
    assert tree.escalations.empty()


def test_a_hundred_janitor_crashes_leak_no_threads_or_actors() -> None:
    before_threads = threading.active_count()
    refs: list[pykka.ActorRef[Any]] = []

    def start_janitor(context: ChildContext) -> pykka.ActorRef[Any]:
        ref = Janitor.start(context, lambda _now: None)
        refs.append(ref)
        return ref

    escalations: queue.SimpleQueue[str] = queue.SimpleQueue()
    supervisor = Supervisor.start(
        [(ChildSpec("janitor"), start_janitor)], policy(intensity=1000, period=60.0), escalations.put
    )

    def incarnation() -> tuple[int, str]:
        box: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        supervisor.tell(Status(box.put))
        (child,) = box.get(timeout=5)["children"]
        return child["incarnation"], child["state"]

    wait_for(lambda: incarnation() == (1, "running"), 5, "the janitor to start")
    supervisor.ask(TICK, timeout=5)  # the janitor does a pass: it is up and handling messages
    threads = threading.active_count()
    actors = len(pykka.ActorRegistry.get_all())
    assert (threads, actors) == (before_threads + 2, 2)
    for n in range(2, 102):
        supervisor.tell(InjectFault("janitor"))
        wait_for(lambda n=n: incarnation() == (n, "running"), 5, f"janitor incarnation {n}")
    wait_for(lambda: threading.active_count() == threads, 5, f"the thread count to settle back to {threads}")
    assert len(pykka.ActorRegistry.get_all()) == actors
    assert [ref.is_alive() for ref in refs] == [False] * 100 + [True]
    assert refs[-1].proxy().stats().get(timeout=5).passes == 0  # a fresh incarnation, with a fresh state
    assert escalations.empty()
    supervisor.stop(timeout=10)
    assert pykka.ActorRegistry.get_all() == []
    wait_for(lambda: threading.active_count() == before_threads, 5, f"the thread count to return to {before_threads}")


# -- a supervisor's own failures ---------------------------------------------------


def test_a_start_function_that_raises_on_restart_is_retried_or_escalated() -> None:
    """OTP: a child that fails to restart is retried, each try counting towards the intensity, until it
    starts or the supervisor gives up (stopping its children and escalating). The supervisor itself must
    not die of it and leave its other children running unsupervised."""
    tree: Tree
    assigned = threading.Event()  # the supervisor starts b from its own thread, maybe before `tree` is set

    def start_b(context: ChildContext) -> pykka.ActorRef[Any]:
        assert assigned.wait(5)
        if context.incarnation == 2:
            tree.events.put(("start-failed", context.child_id, context.incarnation))
            raise OSError("no resources for b today")
        return tree.start_probe(context)

    tree = Tree(["a", "b"], policy(intensity=5), start_functions={"b": start_b})
    assigned.set()
    tree.wait_status("running", a=(1, "running"), b=(1, "running"))
    tree.supervisor.tell(Forward("b", Crash()))
    wait_for(lambda: ("start-failed", "b", 2) in drain(tree.events), 5, "b's failing restart")

    def settled() -> bool:
        if not survives(tree.supervisor) or not tree.escalations.empty():
            return True
        status = tree.status()["b"]
        return status["incarnation"] >= 3 and status["state"] == "running"

    wait_for(settled, 5, "b to be restarted again or the supervisor to escalate")
    orphans = sorted(key for key, ref in tree.refs.items() if ref.is_alive())
    assert tree.supervisor.is_alive(), f"the supervisor died of a failing start function; left running: {orphans}"


def survives(supervisor: pykka.ActorRef[Any]) -> bool:
    """Tick the supervisor; False if it is dead by the time the tick's turn comes."""
    try:
        supervisor.ask(TICK, timeout=5)
    except pykka.ActorDeadError:
        return False
    return True


@pytest.mark.parametrize(
    "message",
    [Forward("no-such-child", Note(1)), "a message the supervisor does not know"],
    ids=["forward-to-unknown-child", "unknown-message"],
)
def test_no_child_outlives_its_supervisor(message: Any) -> None:
    """OTP: children never outlive their supervisor (and a supervisor logs unexpected messages and goes on).
    A supervisor that dies of an exception here must not leave its children running with nobody to restart
    them, stop them, or reach them."""
    tree = Tree(["a", "b"], policy())
    tree.wait_status("running", a=(1, "running"), b=(1, "running"))
    tree.supervisor.tell(message)
    if survives(tree.supervisor):  # asked after the message: it has been handled
        assert set(tree.status()) == {"a", "b"}
        return
    try:
        wait_for(lambda: not any(ref.is_alive() for ref in tree.refs.values()), 2, "the children to stop")
    except AssertionError:
        orphans = sorted(key for key, ref in tree.refs.items() if ref.is_alive())
        pytest.fail(f"the supervisor died of {message!r} and left its children running: {orphans}")
