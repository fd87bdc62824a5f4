"""The session state machine: one enum, one `transition()`.

``Initializing -> Active -> ShuttingDown -> Closed``, and ``Failed(reason)``
from any non-terminal state. `SessionStateMachine.transition` refuses an
illegal move with `IllegalTransition` and leaves the state as it was.
"""

from __future__ import annotations

from enum import Enum
from typing import Final


class State(Enum):
    INITIALIZING = "initializing"
    ACTIVE = "active"
    SHUTTING_DOWN = "shutting_down"
    CLOSED = "closed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL: Final = frozenset({State.CLOSED, State.FAILED})

LEGAL: Final[dict[State, frozenset[State]]] = {
    State.INITIALIZING: frozenset({State.ACTIVE, State.SHUTTING_DOWN, State.FAILED}),
    State.ACTIVE: frozenset({State.SHUTTING_DOWN, State.FAILED}),
    State.SHUTTING_DOWN: frozenset({State.CLOSED, State.FAILED}),
    State.CLOSED: frozenset(),
    State.FAILED: frozenset(),
}


class IllegalTransition(RuntimeError):
    def __init__(self, current: State, target: State) -> None:
        super().__init__(f"illegal session transition {current.value} -> {target.value}")
        self.current = current
        self.target = target


class SessionStateMachine:
    """Holds the state and, once failed, why."""

    __slots__ = ("failure", "state")

    def __init__(self) -> None:
        self.state = State.INITIALIZING
        self.failure: str | None = None

    def can(self, target: State) -> bool:
        return target in LEGAL[self.state]

    def transition(self, target: State, reason: str | None = None) -> None:
        """Move to ``target``; ``reason`` is required for, and kept with, FAILED."""
        if target not in LEGAL[self.state]:
            raise IllegalTransition(self.state, target)
        if target is State.FAILED:
            if not reason:
                raise ValueError("a transition to FAILED needs a reason")
            self.failure = reason
        self.state = target

    def __repr__(self) -> str:
        if self.state is State.FAILED:
            return f"Failed({self.failure!r})"
        return self.state.name.title().replace("_", "")
