"""Supervision: the sans-IO `SupervisorCore` (OTP semantics) and the pykka `Supervisor` shell.

The core is driven with explicit times (no threads, no clock). The shell is
driven with small `SupervisedActor` children defined here, observed through
the records they leave in queues and through `Status`; nothing sleeps to wait,
every wait polls a condition with a deadline.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import pykka
import pytest
from conftest import wait_for as shared_wait_for
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mcp_troupe.actors.core.supervision import (
    Action,
    ChildSpec,
    ChildState,
    Escalate,
    Restart,
    StartChild,
    StopChild,
    Strategy,
    SupervisorCore,
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
# SupervisorCore: pure, with explicit times
# ==============================================================================


def core(
    *children: str | tuple[str, Restart] | ChildSpec,
    strategy: Strategy = ONE_FOR_ONE,
    intensity: int = 1,
    period: float = 5.0,
    backoff_initial: float = 0.0,
    backoff_max: float = 30.0,
    start: bool = True,
) -> SupervisorCore:
    specs = []
    for child in children:
        if isinstance(child, ChildSpec):
            specs.append(child)
        elif isinstance(child, tuple):
            specs.append(ChildSpec(child[0], restart=child[1]))
        else:
            specs.append(ChildSpec(child))
    policy = SupervisorPolicy(strategy, intensity, period, backoff_initial, backoff_max)
    c = SupervisorCore(specs, policy)
    if start:
        c.start_all()
    return c


def crash(c: SupervisorCore, child_id: str, now: float, reason: str = "boom") -> list[Action]:
    """The current incarnation of ``child_id`` crashed."""
    incarnation, state = c.current(child_id)  # type: ignore[misc]
    assert state is RUNNING, f"{child_id} is {state}, cannot crash"
    return c.child_exited(child_id, incarnation, True, reason, now)


def states(c: SupervisorCore) -> dict[str, tuple[int, ChildState]]:
    return {child_id: c.current(child_id) for child_id in c.order}  # type: ignore[misc]


def test_start_all_starts_every_child_once_in_order() -> None:
    c = core("a", "b", "c", start=False)
    assert states(c) == {"a": (0, STOPPED), "b": (0, STOPPED), "c": (0, STOPPED)}
    assert c.start_all() == [StartChild("a", 1), StartChild("b", 1), StartChild("c", 1)]
    assert states(c) == {"a": (1, RUNNING), "b": (1, RUNNING), "c": (1, RUNNING)}
    assert c.status() == [
        {"id": i, "restart": "permanent", "state": "running", "incarnation": 1, "restarts": 0, "last_failure": None}
        for i in "abc"
    ]


def test_one_for_one_restarts_only_the_dead_child() -> None:
    c = core("a", "b", "c")
    assert crash(c, "b", 0.0, "ValueError: x") == [StartChild("b", 2)]
    assert states(c) == {"a": (1, RUNNING), "b": (2, RUNNING), "c": (1, RUNNING)}
    by_id = {s["id"]: s for s in c.status()}
    assert by_id["b"] == {
        "id": "b",
        "restart": "permanent",
        "state": "running",
        "incarnation": 2,
        "restarts": 1,
        "last_failure": "ValueError: x",
    }
    assert by_id["a"]["restarts"] == by_id["c"]["restarts"] == 0
    assert by_id["a"]["last_failure"] is by_id["c"]["last_failure"] is None


def test_one_for_all_stops_the_others_in_reverse_order_then_starts_all_in_order() -> None:
    specs = [
        ChildSpec("a", shutdown_timeout=1.0),
        ChildSpec("b", shutdown_timeout=2.0),
        ChildSpec("c", shutdown_timeout=3),
    ]
    c = core(*specs, strategy=ONE_FOR_ALL)
    assert crash(c, "b", 0.0) == [
        StopChild("c", 1, 3.0),
        StopChild("a", 1, 1.0),
        StartChild("a", 2),
        StartChild("b", 2),
        StartChild("c", 2),
    ]
    assert states(c) == {"a": (2, RUNNING), "b": (2, RUNNING), "c": (2, RUNNING)}
    assert [s["last_failure"] for s in c.status()] == [None, "boom", None]


@pytest.mark.parametrize("dead", ["a", "b", "c", "d"])
def test_rest_for_one_affects_exactly_the_dead_child_and_those_after_it(dead: str) -> None:
    order = ["a", "b", "c", "d"]
    c = core(*order, strategy=REST_FOR_ONE)
    rest = order[order.index(dead) :]
    expected: list[Action] = [StopChild(i, 1, 5.0) for i in reversed(rest) if i != dead]
    expected += [StartChild(i, 2) for i in rest]
    assert crash(c, dead, 0.0) == expected
    assert states(c) == {i: (2 if i in rest else 1, RUNNING) for i in order}


@pytest.mark.parametrize(
    ("restart", "abnormal", "restarted"),
    [
        (PERMANENT, True, True),
        (PERMANENT, False, True),
        (TRANSIENT, True, True),
        (TRANSIENT, False, False),
        (TEMPORARY, True, False),
        (TEMPORARY, False, False),
    ],
)
@pytest.mark.parametrize("strategy", list(Strategy))
def test_restart_types(restart: Restart, abnormal: bool, restarted: bool, strategy: Strategy) -> None:
    c = core("a", ("x", restart), "z", strategy=strategy, intensity=10)
    actions = c.child_exited("x", 1, abnormal, "why", 0.0)
    if restarted:
        assert StartChild("x", 2) in actions
        assert c.current("x") == (2, RUNNING)
    else:
        # No restart: nothing else is touched either, whatever the strategy.
        assert actions == []
        assert states(c) == {"a": (1, RUNNING), "x": (1, STOPPED), "z": (1, RUNNING)}
    x = c.status()[1]
    assert x["restart"] == restart.value
    assert x["last_failure"] == ("why" if abnormal else None)
    assert x["restarts"] == (1 if restarted else 0)


def test_exits_that_are_not_restarted_do_not_count_towards_intensity() -> None:
    c = core(("tmp", TEMPORARY), ("tr", TRANSIENT), "p", intensity=1, period=5.0)
    assert crash(c, "tmp", 0.0) == []
    assert c.child_exited("tr", 1, False, "done", 0.1) == []
    assert crash(c, "p", 0.2) == [StartChild("p", 2)]  # the first restart in the period: allowed
    assert c.escalated is None
    escalation = crash(c, "p", 0.3)  # the second one escalates: the counting does work
    assert isinstance(escalation[-1], Escalate)


def test_temporary_siblings_are_stopped_but_not_restarted() -> None:
    c = core("a", ("t", TEMPORARY), "c", strategy=ONE_FOR_ALL, intensity=5)
    assert crash(c, "a", 0.0) == [
        StopChild("c", 1, 5.0),
        StopChild("t", 1, 5.0),
        StartChild("a", 2),
        StartChild("c", 2),
    ]
    assert c.current("t") == (1, STOPPED)
    # ... and its report of being stopped (its on_stop) is news about a child the supervisor stopped itself.
    assert c.child_exited("t", 1, False, "stopped", 0.1) == []
    assert c.current("t") == (1, STOPPED)


def test_stale_exits_are_ignored() -> None:
    c = core("a", "b", "c", strategy=ONE_FOR_ALL, intensity=1, period=5.0)
    crash(c, "b", 0.0)
    before = c.status()
    # The incarnations the supervisor stopped itself report their on_stop, and the crashed one repeats itself.
    assert c.child_exited("a", 1, False, "stopped", 0.1) == []
    assert c.child_exited("c", 1, False, "stopped", 0.1) == []
    assert c.child_exited("b", 1, True, "boom again", 0.1) == []
    assert c.child_exited("nobody", 1, True, "who?", 0.1) == []
    assert c.child_exited("a", 3, True, "from the future", 0.1) == []
    assert c.status() == before
    assert c.escalated is None  # none of those counted as a restart (one more would escalate)
    # After a shutdown, the current incarnations' reports are stale too.
    c.shutdown()
    assert c.child_exited("a", 2, False, "stopped", 0.2) == []
    assert c.child_exited("b", 2, True, "boom", 0.2) == []
    assert [s["state"] for s in c.status()] == ["stopped"] * 3


def test_second_restart_within_the_period_escalates() -> None:
    c = core("a", "b", "c", intensity=1, period=5.0)
    assert crash(c, "a", 0.0) == [StartChild("a", 2)]
    actions = crash(c, "b", 1.0, "KeyError: k")
    assert actions[:-1] == [StopChild("c", 1, 5.0), StopChild("a", 2, 5.0)]  # b is already gone
    assert isinstance(actions[-1], Escalate)
    assert "'b'" in actions[-1].reason and "KeyError: k" in actions[-1].reason
    assert c.escalated == actions[-1].reason
    assert states(c) == {"a": (2, STOPPED), "b": (1, STOPPED), "c": (1, STOPPED)}
    # After escalation nothing starts again.
    assert c.tick(100.0) == []
    assert c.child_exited("a", 2, True, "late", 2.0) == []
    assert c.shutdown() == []


def test_restarts_spaced_more_than_the_period_apart_never_escalate() -> None:
    c = core("a", "b", intensity=1, period=5.0)
    for n in range(30):
        child = "ab"[n % 2]
        incarnation = c.current(child)[0]  # type: ignore[index]
        assert crash(c, child, n * 5.01) == [StartChild(child, incarnation + 1)]
    assert c.escalated is None


@pytest.mark.parametrize(
    ("intensity", "times", "escalates_at"),
    [
        (1, [0.0, 4.9], 1),
        (1, [0.0, 5.5, 10.4], 2),
        (2, [0.0, 1.0, 2.0], 2),
        (2, [0.0, 4.0, 5.5], None),  # a sliding window: 0.0 has left it by 5.5
        (2, [0.0, 1.0, 5.5, 6.5, 6.9], 4),  # 5.5, 6.5 and 6.9 are 3 within 5 s
        (3, [0.0, 0.0, 0.0, 0.0], 3),
    ],
)
def test_intensity_is_a_sliding_window(intensity: int, times: list[float], escalates_at: int | None) -> None:
    c = core("a", intensity=intensity, period=5.0)
    for i, now in enumerate(times):
        actions = crash(c, "a", now)
        if i == escalates_at:
            assert actions and isinstance(actions[-1], Escalate), (i, actions)
            return
        assert actions == [StartChild("a", i + 2)], (i, now)
    assert escalates_at is None


def test_intensity_zero_escalates_on_the_first_failure() -> None:
    c = core("a", "b", "c", intensity=0)
    actions = crash(c, "a", 0.0)
    assert actions[:-1] == [StopChild("c", 1, 5.0), StopChild("b", 1, 5.0)]
    assert isinstance(actions[-1], Escalate)
    assert not any(isinstance(a, StartChild) for a in actions)


def test_backoff_delays_the_restart_until_tick_and_doubles_up_to_the_cap() -> None:
    c = core("a", "b", intensity=100, period=60.0, backoff_initial=0.5, backoff_max=2.0)
    # (crash time, expected delay): doubling while the earlier restarts are within the period, capped at 2.0.
    schedule = [(0.0, 0.5), (1.0, 1.0), (3.0, 2.0), (6.0, 2.0), (10.0, 2.0), (100.0, 0.5)]
    for n, (at, delay) in enumerate(schedule):
        assert crash(c, "a", at) == []
        assert c.current("a") == (n + 1, RESTARTING)
        status = c.status()[0]
        assert (status["state"], status["incarnation"], status["restarts"]) == ("restarting", n + 1, n)
        assert c.child_exited("a", n + 1, True, "stale", at) == []  # not running: nothing to hear about
        assert c.tick(at + delay - 0.01) == []
        assert c.current("a") == (n + 1, RESTARTING)
        assert c.tick(at + delay) == [StartChild("a", n + 2)]
        assert c.tick(at + delay + 0.01) == []  # started once only
        assert c.status()[0]["restarts"] == n + 1
        assert c.current("a") == (n + 2, RUNNING)
    assert c.current("b") == (1, RUNNING)  # one_for_one: the neighbour never moved


def test_backoff_with_one_for_all_stops_now_and_starts_all_in_order_later() -> None:
    c = core("a", "b", "c", strategy=ONE_FOR_ALL, intensity=5, backoff_initial=0.5)
    assert crash(c, "b", 0.0) == [StopChild("c", 1, 5.0), StopChild("a", 1, 5.0)]
    assert {s["state"] for s in c.status()} == {"restarting"}
    assert c.tick(0.25) == []
    assert c.tick(0.5) == [StartChild("a", 2), StartChild("b", 2), StartChild("c", 2)]


def test_shutdown_cancels_a_pending_restart() -> None:
    c = core("a", "b", intensity=5, backoff_initial=0.5)
    crash(c, "a", 0.0)
    assert c.shutdown() == [StopChild("b", 1, 5.0)]  # a is not running: nothing to stop
    assert c.tick(10.0) == []
    assert states(c) == {"a": (1, STOPPED), "b": (1, STOPPED)}


def test_fail_next_start_marks_exactly_the_next_start_of_that_child() -> None:
    c = core("a", "b", start=False, intensity=100, period=1.0)
    c.fail_next_start("a")
    assert c.start_all() == [StartChild("a", 1, fail_on_start=True), StartChild("b", 1)]
    c.fail_next_start("b")
    assert crash(c, "a", 10.0) == [StartChild("a", 2)]  # b's mark is b's
    assert crash(c, "b", 20.0) == [StartChild("b", 2, fail_on_start=True)]
    assert crash(c, "b", 30.0) == [StartChild("b", 3)]  # used up
    # With backoff, the mark goes with the delayed start.
    c2 = core("a", intensity=100, period=1.0, backoff_initial=0.5)
    c2.fail_next_start("a")
    assert crash(c2, "a", 0.0) == []
    assert c2.tick(0.5) == [StartChild("a", 2, fail_on_start=True)]
    assert crash(c2, "a", 10.0) == []
    assert c2.tick(10.5) == [StartChild("a", 3)]


def test_fail_next_start_follows_the_child_through_a_one_for_all_restart() -> None:
    c = core("a", "b", "c", strategy=ONE_FOR_ALL, intensity=5)
    c.fail_next_start("c")
    assert crash(c, "a", 0.0)[-3:] == [StartChild("a", 2), StartChild("b", 2), StartChild("c", 2, fail_on_start=True)]


def test_shutdown_stops_running_children_in_reverse_start_order() -> None:
    specs = [ChildSpec("a", shutdown_timeout=0.5), ChildSpec("b", TEMPORARY), ChildSpec("c"), ChildSpec("d", TRANSIENT)]
    c = core(*specs)
    crash(c, "b", 0.0)  # temporary: gone for good
    assert c.shutdown() == [StopChild("d", 1, 5.0), StopChild("c", 1, 5.0), StopChild("a", 1, 0.5)]
    assert c.shutdown() == []
    assert [s["state"] for s in c.status()] == ["stopped"] * 4


def test_status_reports_restarts_last_failure_state_and_incarnation() -> None:
    c = core("a", ("b", TRANSIENT), ("t", TEMPORARY), intensity=10, backoff_initial=1.0)
    crash(c, "a", 0.0, "E1")
    c.tick(1.0)
    crash(c, "a", 2.0, "E2")  # second restart in the period: 2 s backoff, pending
    c.child_exited("b", 1, False, "done", 2.5)
    crash(c, "t", 3.0, "T")
    assert c.status() == [
        {
            "id": "a",
            "restart": "permanent",
            "state": "restarting",
            "incarnation": 2,
            "restarts": 1,
            "last_failure": "E2",
        },
        {"id": "b", "restart": "transient", "state": "stopped", "incarnation": 1, "restarts": 0, "last_failure": None},
        {"id": "t", "restart": "temporary", "state": "stopped", "incarnation": 1, "restarts": 0, "last_failure": "T"},
    ]


# -- a random walk ---------------------------------------------------------------


@dataclass
class Model:
    """What the outside world knows of the children: which incarnation of each is alive."""

    core: SupervisorCore
    live: dict[str, int | None]
    last: dict[str, int]
    escalated: bool = False
    fail_marks: set[str] = field(default_factory=set)
    """Children marked with `fail_next_start`: their next start, and only that one, must carry the mark."""

    def apply(self, actions: Sequence[Action]) -> None:
        order = self.core.order
        starts: list[int] = []
        stops: list[int] = []
        for i, action in enumerate(actions):
            match action:
                case StopChild(child_id, incarnation, timeout):
                    assert not starts, f"a stop after a start: {actions}"
                    assert self.live[child_id] == incarnation, f"stopping {action} but {self.live[child_id]} is live"
                    assert timeout == self.core.children[child_id].spec.shutdown_timeout
                    self.live[child_id] = None
                    stops.append(order.index(child_id))
                case StartChild(child_id, incarnation, fail_on_start):
                    assert not self.escalated, f"{action} after escalation"
                    assert fail_on_start == (child_id in self.fail_marks), f"{action}, marks {self.fail_marks}"
                    self.fail_marks.discard(child_id)
                    assert self.live[child_id] is None, f"{action} while {self.live[child_id]} is still running"
                    assert incarnation == self.last[child_id] + 1, f"{action} after {self.last[child_id]}"
                    self.last[child_id] = incarnation
                    self.live[child_id] = incarnation
                    starts.append(order.index(child_id))
                case Escalate():
                    assert i == len(actions) - 1, f"actions after Escalate: {actions}"
                    assert not self.escalated
                    assert all(v is None for v in self.live.values()), f"escalated with children running: {self.live}"
                    self.escalated = True
        assert stops == sorted(stops, reverse=True), f"stops not in reverse start order: {actions}"
        assert starts == sorted(starts), f"starts not in start order: {actions}"

    def check_agrees_with_core(self) -> None:
        for child_id in self.core.order:
            incarnation, state = self.core.current(child_id)  # type: ignore[misc]
            assert incarnation == self.last[child_id]
            assert (state is RUNNING) == (self.live[child_id] is not None), (child_id, state, self.live)


def affected(strategy: Strategy, order: list[str], child_id: str) -> list[str]:
    if strategy is ONE_FOR_ALL:
        return order
    if strategy is REST_FOR_ONE:
        return order[order.index(child_id) :]
    return [child_id]


STEP = st.tuples(
    st.sampled_from(["exit", "exit", "exit", "exit", "stale", "tick", "due", "due", "mark"]),
    st.integers(0, 3),  # which child
    st.booleans(),  # abnormal
    st.integers(0, 8),  # time advance, in quarter seconds (exact in binary)
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    strategy=st.sampled_from(list(Strategy)),
    restarts=st.lists(st.sampled_from(list(Restart)), min_size=1, max_size=4),
    intensity=st.integers(0, 5),
    period=st.sampled_from([1.0, 2.0, 5.0, 10.0]),
    backoff=st.sampled_from([(0.0, 30.0), (0.25, 0.75), (0.5, 1.5)]),
    steps=st.lists(STEP, max_size=60),
)
def test_random_exits_keep_the_invariants(
    strategy: Strategy,
    restarts: list[Restart],
    intensity: int,
    period: float,
    backoff: tuple[float, float],
    steps: list[tuple[str, int, bool, int]],
) -> None:
    specs = [ChildSpec(f"c{i}", restart=r, shutdown_timeout=1.0 + i) for i, r in enumerate(restarts)]
    policy = SupervisorPolicy(strategy, intensity, period, *backoff)
    c = SupervisorCore(specs, policy)
    order = c.order
    model = Model(c, dict.fromkeys(order), dict.fromkeys(order, 0))
    model.apply(c.start_all())
    model.check_agrees_with_core()
    restart_times: list[float] = []  # every restart decision (including the one that escalates)
    recent: dict[str, list[float]] = {i: [] for i in order}  # each child's restarts, for its backoff
    last_failure: dict[str, str | None] = dict.fromkeys(order)
    now = 0.0
    for n, (kind, which, abnormal, quarters) in enumerate(steps):
        now += quarters / 4
        child_id = order[which % len(order)]
        if kind == "mark":
            c.fail_next_start(child_id)
            model.fail_marks.add(child_id)
        elif kind in ("tick", "due"):
            pending = [c.children[i].restart_at for i in order if c.children[i].state is RESTARTING]
            if kind == "due" and pending:  # right at the earliest restart time
                now = max(now - quarters / 4, min(pending))  # type: ignore[type-var]
            due = [i for i in order if c.children[i].state is RESTARTING and c.children[i].restart_at <= now]  # type: ignore[operator]
            actions = c.tick(now)
            assert all(isinstance(a, StartChild) for a in actions), actions
            assert [a.id for a in actions] == due  # type: ignore[union-attr]
            model.apply(actions)
        elif kind == "stale":
            before = c.status()
            if model.last[child_id] > 1:
                assert c.child_exited(child_id, model.last[child_id] - 1, abnormal, "stale", now) == []
            if model.live[child_id] is None:  # stopped or restarting: its current incarnation is not running
                assert c.child_exited(child_id, model.last[child_id], abnormal, "stale", now) == []
            assert c.status() == before
        elif model.live[child_id] is None:
            assert c.child_exited(child_id, model.last[child_id], abnormal, "not running", now) == []
        else:
            incarnation = model.live[child_id]
            model.live[child_id] = None  # it is dead, whatever the supervisor decides
            running_before = {i for i in order if model.live[i] is not None}
            reason = f"exit {n}"
            if abnormal:
                last_failure[child_id] = reason
            actions = c.child_exited(child_id, incarnation, abnormal, reason, now)  # type: ignore[arg-type]
            spec = c.children[child_id].spec
            wanted = spec.restart is PERMANENT or (spec.restart is TRANSIENT and abnormal)
            if model.escalated or not wanted:
                assert actions == [], actions
            else:
                restart_times.append(now)
                in_window = sum(1 for t in restart_times if now - t <= period)
                if in_window > intensity:
                    event("escalated")
                    assert actions and isinstance(actions[-1], Escalate), (restart_times, actions)
                else:
                    assert not any(isinstance(a, Escalate) for a in actions), (restart_times, actions)
                    hit = affected(strategy, order, child_id)
                    touched = {a.id for a in actions if isinstance(a, StartChild | StopChild)}
                    assert touched <= set(hit), (strategy, child_id, actions)
                    assert {a.id for a in actions if isinstance(a, StopChild)} == (running_before & set(hit))
                    started = {a.id for a in actions if isinstance(a, StartChild)}
                    for i in hit:
                        if i != child_id and c.children[i].spec.restart is TEMPORARY:
                            assert i not in started and c.current(i)[1] is STOPPED  # type: ignore[index]
                            continue
                        recent[i].append(now)
                        if policy.backoff_initial == 0:
                            assert i in started, (i, actions)
                            continue
                        k = sum(1 for t in recent[i] if now - t <= period)
                        delay = min(policy.backoff_max, policy.backoff_initial * 2 ** (k - 1))
                        assert i not in started, (i, actions)
                        assert c.current(i)[1] is RESTARTING  # type: ignore[index]
                        assert c.children[i].restart_at == now + delay, (i, recent[i], delay)
                        event(f"backoff of {delay}s after {k} restart(s) in the period")
            model.apply(actions)
        model.check_agrees_with_core()
        status = c.status()
        assert [s["last_failure"] for s in status] == [last_failure[i] for i in order]
        assert [s["incarnation"] for s in status] == [model.last[i] for i in order]
        assert [s["restarts"] for s in status] == [model.last[i] - 1 for i in order]  # every start but the first
    # The sliding window over every restart decision never held more than `intensity` without escalating.
    if not model.escalated:
        for t in restart_times:
            assert sum(1 for u in restart_times if 0 <= t - u <= period) <= intensity
    live_before = [i for i in reversed(order) if model.live[i] is not None]
    shutdown = c.shutdown()
    assert shutdown == [StopChild(i, model.live[i], c.children[i].spec.shutdown_timeout) for i in live_before]  # type: ignore[misc]
    model.apply(shutdown)
    assert c.tick(now + 1000.0) == []


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
