"""The evictor's LRU, driven directly (a real actor, a stand-in supervisor)."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from actors.evictor import Evictor, Forget, Resync, Track
from actors.session import CloseSession, Touch
from actors.supervisor import ChildContext


class Recorder(pykka.ThreadingActor):
    """Stands in for a session or the supervisor: records what it is told."""

    use_daemon_thread = True

    def __init__(self, name: str, inbox: queue.SimpleQueue[tuple[str, Any]]) -> None:
        super().__init__()
        self.name, self.inbox = name, inbox

    def on_receive(self, message: Any) -> None:
        self.inbox.put((self.name, message))


@pytest.fixture
def inbox() -> Iterator[queue.SimpleQueue[tuple[str, Any]]]:
    yield queue.SimpleQueue()
    pykka.ActorRegistry.stop_all()


def evicted(inbox: queue.SimpleQueue[tuple[str, Any]], count: int) -> list[str]:
    names = []
    for _ in range(count):
        name, message = inbox.get(timeout=5)
        assert message == CloseSession("evicted")
        names.append(name)
    return names


@pytest.mark.timeout(30)
def test_least_recently_active_goes_first_and_touch_reorders(inbox: queue.SimpleQueue[tuple[str, Any]]) -> None:
    sup = Recorder.start("supervisor", queue.SimpleQueue())
    evictor = Evictor.start(ChildContext(sup, "evictor", 1), max_sessions=2)
    sessions = {name: Recorder.start(name, inbox) for name in "abcd"}
    evictor.tell(Track("a", sessions["a"]))
    evictor.tell(Track("b", sessions["b"]))
    evictor.tell(Touch("a"))  # b is now the least recently active
    evictor.tell(Track("c", sessions["c"]))
    assert evicted(inbox, 1) == ["b"]
    evictor.tell(Forget("a"))
    evictor.tell(Track("d", sessions["d"]))  # c, d: at the bound, nobody evicted
    evictor.tell(Track("e", sessions["a"]))
    assert evicted(inbox, 1) == ["c"]
    evictor.stop()


@pytest.mark.timeout(30)
def test_resync_skips_sessions_already_evicted(inbox: queue.SimpleQueue[tuple[str, Any]]) -> None:
    sup = Recorder.start("supervisor", queue.SimpleQueue())
    evictor = Evictor.start(ChildContext(sup, "evictor", 2), max_sessions=1)
    refs = {name: Recorder.start(name, inbox) for name in "xyz"}
    evictor.tell(Track("x", refs["x"]))
    evictor.tell(Track("y", refs["y"]))
    assert evicted(inbox, 1) == ["x"]
    evictor.tell(Resync(tuple(refs.items())))  # x is still closing: neither counted nor evicted twice
    assert evicted(inbox, 1) == ["y"]
    evictor.ask(Touch("z"))  # a round trip: everything before it was handled
    assert inbox.empty()
