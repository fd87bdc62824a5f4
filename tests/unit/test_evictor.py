"""Who is evicted first (`Recency`, driven directly), and the evictor actor that drives the passes."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import pykka
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_troupe.actors.core.recency import Recency
from mcp_troupe.actors.shells.evictor import Evictor
from mcp_troupe.actors.shells.supervisor import TICK, ChildContext


def test_least_recently_active_goes_first_and_touch_reorders() -> None:
    recency = Recency()
    recency.touch("a", 1.0)
    recency.touch("b", 2.0)
    recency.touch("a", 3.0)  # b is now the least recently active
    recency.touch("c", 4.0)
    assert recency.victim(now=5.0, min_idle=0, busy=lambda sid: False) == "b"
    recency.discard("b")
    assert recency.victim(now=5.0, min_idle=0, busy=lambda sid: False) == "a"
    assert recency.victim(now=5.0, min_idle=0, busy=lambda sid: sid == "a") == "c", "busy sessions are skipped"


def test_a_session_active_within_min_idle_is_never_the_victim() -> None:
    recency = Recency()
    recency.touch("old-but-busy", 0.0)
    recency.touch("idle", 10.0)
    recency.touch("active", 95.0)
    busy = {"old-but-busy"}.__contains__
    assert recency.victim(now=100.0, min_idle=60.0, busy=busy) == "idle"
    recency.touch("idle", 99.0)
    assert recency.victim(now=100.0, min_idle=60.0, busy=busy) is None, "everything else was active in 60 s"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abcdef"), st.floats(0, 100)), max_size=40),
    st.floats(0, 60),
    st.sets(st.sampled_from("abcdef")),
)
def test_the_victim_is_the_least_recently_touched_eligible_session(
    touches: list[tuple[str, float]], min_idle: float, busy: set[str]
) -> None:
    recency, last, clock = Recency(), {}, 0.0
    for sid, step in touches:
        clock += step
        recency.touch(sid, clock)
        last.pop(sid, None)
        last[sid] = clock  # insertion order: least recently touched first
    now = clock + 1.0
    victim = recency.victim(now, min_idle, busy.__contains__)
    expected = None
    for sid, at in last.items():
        if now - at < min_idle:
            break
        if sid not in busy:
            expected = sid
            break
    assert victim == expected


class _Nobody(pykka.ThreadingActor):
    use_daemon_thread = True

    def on_receive(self, message: object) -> None:
        pass


@pytest.fixture
def stand_in() -> Iterator[pykka.ActorRef[_Nobody]]:
    ref = _Nobody.start()
    yield ref
    pykka.ActorRegistry.stop_all()


def test_each_tick_runs_one_pass(stand_in: pykka.ActorRef[_Nobody]) -> None:
    passes: queue.SimpleQueue[str] = queue.SimpleQueue()
    evictor = Evictor.start(ChildContext(stand_in, "evictor", 1), lambda: passes.put(threading.current_thread().name))
    evictor.tell(TICK)
    evictor.ask(TICK)
    assert passes.qsize() == 2
    assert evictor.proxy().passes.get() == 2
