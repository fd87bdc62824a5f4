"""Every legal transition succeeds; every illegal one is refused and changes nothing."""

from __future__ import annotations

import itertools

import pytest

from mcp_troupe.actors.core.state import LEGAL, IllegalTransition, SessionStateMachine, State

EXPECTED_LEGAL = {
    (State.INITIALIZING, State.ACTIVE),
    (State.INITIALIZING, State.SHUTTING_DOWN),
    (State.INITIALIZING, State.FAILED),
    (State.ACTIVE, State.SHUTTING_DOWN),
    (State.ACTIVE, State.FAILED),
    (State.SHUTTING_DOWN, State.CLOSED),
    (State.SHUTTING_DOWN, State.FAILED),
}
PATH_TO = {
    State.INITIALIZING: [],
    State.ACTIVE: [State.ACTIVE],
    State.SHUTTING_DOWN: [State.ACTIVE, State.SHUTTING_DOWN],
    State.CLOSED: [State.ACTIVE, State.SHUTTING_DOWN, State.CLOSED],
    State.FAILED: [State.FAILED],
}
ALL_PAIRS = list(itertools.product(State, State))


def machine_in(state: State) -> SessionStateMachine:
    machine = SessionStateMachine()
    for step in PATH_TO[state]:
        machine.transition(step, "boom" if step is State.FAILED else None)
    assert machine.state is state
    return machine


def test_table_matches_the_specified_machine() -> None:
    assert {(a, b) for a, targets in LEGAL.items() for b in targets} == EXPECTED_LEGAL


@pytest.mark.parametrize(("current", "target"), sorted(EXPECTED_LEGAL, key=str))
def test_legal_transition(current: State, target: State) -> None:
    machine = machine_in(current)
    machine.transition(target, "why" if target is State.FAILED else None)
    assert machine.state is target


@pytest.mark.parametrize(("current", "target"), [p for p in ALL_PAIRS if p not in EXPECTED_LEGAL], ids=str)
def test_illegal_transition_is_refused_without_change(current: State, target: State) -> None:
    machine = machine_in(current)
    failure_before = machine.failure
    with pytest.raises(IllegalTransition) as info:
        machine.transition(target, "why")
    assert (info.value.current, info.value.target) == (current, target)
    assert machine.state is current
    assert machine.failure == failure_before


def test_failed_keeps_its_reason_and_needs_one() -> None:
    machine = SessionStateMachine()
    with pytest.raises(ValueError):
        machine.transition(State.FAILED)
    assert machine.state is State.INITIALIZING
    machine.transition(State.FAILED, "server crashed")
    assert machine.failure == "server crashed"
    assert repr(machine) == "Failed('server crashed')"


def test_terminal_states_have_no_way_out() -> None:
    assert {s for s in State if s.terminal} == {State.CLOSED, State.FAILED}
    for state in (State.CLOSED, State.FAILED):
        assert not LEGAL[state]
