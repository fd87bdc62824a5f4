"""Supervision's sans-IO core: `SupervisorCore` (OTP semantics) driven with explicit times, no threads, no clock."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
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

pytestmark = pytest.mark.timeout(60)

PERMANENT, TRANSIENT, TEMPORARY = Restart.PERMANENT, Restart.TRANSIENT, Restart.TEMPORARY
ONE_FOR_ONE, ONE_FOR_ALL, REST_FOR_ONE = Strategy.ONE_FOR_ONE, Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE
RUNNING, RESTARTING, STOPPED = ChildState.RUNNING, ChildState.RESTARTING, ChildState.STOPPED

ACTOR_THREAD = re.compile(r"^(Supervisor|Probe|Janitor)-\d+$")


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
