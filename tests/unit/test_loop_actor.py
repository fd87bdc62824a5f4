"""`LoopActor`: pykka's contract, kept, with the messages run by the hub's loop thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pykka
import pytest
from conftest import wait_for

from mcp_troupe.actors.shells.loop_actor import BATCH, LoopActor, tell_now
from mcp_troupe.transport.hub.loop import Hub, HubOptions


class _NoTraffic:
    def on_front(self, peer: bytes, data: bytes) -> None: ...

    def on_back(self, peer: bytes, data: bytes) -> None: ...

    def on_tick(self, now: float) -> None: ...


@pytest.fixture
def hub() -> Iterator[Hub]:
    hub = Hub(HubOptions(tick_interval=0.05))
    hub.start(_NoTraffic())
    yield hub
    hub.stop()


class Recorder(LoopActor):
    def __init__(self, loop: Hub, log: list[Any], name: str = "r") -> None:
        super().__init__(loop)
        self.log = log
        self.name = name

    def on_start(self) -> None:
        self.log.append((self.name, "start", threading.current_thread().name))

    def on_stop(self) -> None:
        self.log.append((self.name, "stop"))

    def on_failure(self, *exc_info: Any) -> None:
        self.log.append((self.name, "failure", repr(exc_info[1])))

    def on_receive(self, message: Any) -> Any:
        if message == "boom":
            raise ValueError("boom")
        if message == "thread":
            return threading.current_thread().name
        self.log.append((self.name, message))
        return message


def test_messages_run_on_the_loop_thread_in_order_after_on_start(hub: Hub) -> None:
    log: list[Any] = []
    ref = Recorder.start(hub, log)
    for i in range(300):
        ref.tell(i)
    assert ref.ask("thread", timeout=5) == "troupe-hub"
    assert log[0] == ("r", "start", "troupe-hub")
    assert log[1:] == [("r", i) for i in range(300)]
    ref.stop(timeout=5)
    assert log[-1] == ("r", "stop")
    assert not ref.is_alive()


def test_an_exception_in_an_ask_goes_back_to_the_asker_and_the_actor_lives(hub: Hub) -> None:
    ref = Recorder.start(hub, [])
    with pytest.raises(ValueError, match="boom"):
        ref.ask("boom", timeout=5)
    assert ref.ask("still here", timeout=5) == "still here"
    ref.stop(timeout=5)


def test_an_exception_in_a_tell_calls_on_failure_and_answers_the_waiting_asks(hub: Hub) -> None:
    log: list[Any] = []
    ref = Recorder.start(hub, log)
    later: list[pykka.Future[Any]] = []

    def queue_together() -> None:  # on the loop thread: all queued before the actor runs
        ref.tell("boom")
        later.append(ref.ask("after", block=False))

    hub.call(queue_together)
    wait_for(lambda: later and not ref.is_alive(), 5, "the actor to die")
    with pytest.raises(pykka.ActorDeadError):
        later[0].get(timeout=5)
    assert ("r", "failure", "ValueError('boom')") in log
    assert ("r", "after") not in log and ("r", "stop") not in log
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("x")


def test_an_exception_in_on_start_stops_the_actor_and_calls_no_hook(hub: Hub) -> None:
    log: list[Any] = []

    class BadStart(Recorder):
        def on_start(self) -> None:
            raise RuntimeError("no start")

    ref = BadStart.start(hub, log)
    future = ref.ask("hello", block=False)
    with pytest.raises(pykka.ActorDeadError):
        future.get(timeout=5)
    assert log == []
    assert ref not in pykka.ActorRegistry.get_all()


def test_a_busy_actor_yields_the_loop_after_a_batch(hub: Hub) -> None:
    log: list[Any] = []
    busy, quiet = Recorder.start(hub, log, "busy"), Recorder.start(hub, log, "quiet")
    busy.ask("ready", timeout=5)
    quiet.ask("ready", timeout=5)
    log.clear()

    def queue_together() -> None:
        for i in range(3 * BATCH):
            busy.tell(i)
        quiet.tell("hello")

    hub.call(queue_together)
    wait_for(lambda: len(log) == 3 * BATCH + 1, 5, "every message to be handled")
    assert log.index(("quiet", "hello")) == BATCH, "the quiet actor waited for more than one batch of the busy one"
    busy.stop(timeout=5)
    quiet.stop(timeout=5)


def test_waiting_for_a_loop_actor_on_its_loop_thread_raises_instead_of_hanging(hub: Hub) -> None:
    ref = Recorder.start(hub, [])

    def ask_on_loop() -> str:
        try:
            ref.ask("x", timeout=1)
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    assert "would never end" in hub.ask(ask_on_loop)
    ref.stop(timeout=5)


def test_a_message_to_an_actor_that_stopped_meanwhile_is_answered_not_lost(hub: Hub) -> None:
    ref = Recorder.start(hub, [])
    ref.ask("ready", timeout=5)

    def stop_then_ask() -> pykka.Future[Any]:  # on the loop thread: the ask is queued behind the stop
        ref.tell(pykka.messages._ActorStop())
        return ref.ask("late", block=False)

    future = hub.ask(stop_then_ask)
    with pytest.raises(pykka.ActorDeadError):
        future.get(timeout=5)


class Teller(LoopActor):
    """Records what it handles; told ``("nested", x)``, tells itself ``x`` at once from inside its handler."""

    def __init__(self, loop: Hub, log: list[Any]) -> None:
        super().__init__(loop)
        self.log = log

    def on_failure(self, *exc_info: Any) -> None:
        self.log.append(("failure", repr(exc_info[1])))

    def on_receive(self, message: Any) -> Any:
        if message == "boom":
            raise ValueError("boom")
        if isinstance(message, tuple) and message[0] == "nested":
            tell_now(self.actor_ref, message[1])
            self.log.append(("after nested tell", message[1]))
            return None
        self.log.append(message)
        return None


def test_tell_now_handles_at_once_when_idle_and_queues_behind_what_waits(hub: Hub) -> None:
    log: list[Any] = []
    ref = Teller.start(hub, log)
    ref.ask("started", timeout=5)

    def on_loop() -> list[Any]:
        tell_now(ref, "at once")
        seen = list(log)  # handled inside tell_now: nothing queued before it
        ref.tell("queued")
        tell_now(ref, "behind the queued one")  # an earlier message waits: this one waits behind it
        seen_after = list(log)
        tell_now(ref, ("nested", "inner"))  # handling a message: the one it tells itself waits
        return [seen, seen_after]

    seen, seen_after = hub.ask(on_loop)
    assert seen[-1] == "at once"
    assert seen_after == seen
    wait_for(lambda: len(log) >= 6, 5, "the queued messages handled")
    assert log == ["started", "at once", "queued", "behind the queued one", ("after nested tell", "inner"), "inner"]
    ref.stop(timeout=5)


def test_tell_now_keeps_pykkas_failure_semantics_and_refuses_a_dead_actor(hub: Hub) -> None:
    log: list[Any] = []
    ref = Teller.start(hub, log)
    ref.ask("started", timeout=5)
    hub.ask(lambda: tell_now(ref, "boom"))
    assert log[-1] == ("failure", "ValueError('boom')")
    wait_for(lambda: not ref.is_alive(), 5, "the failed actor stopped")
    with pytest.raises(pykka.ActorDeadError):
        hub.ask(lambda: tell_now(ref, "too late"))


def test_tell_now_from_another_thread_is_a_tell(hub: Hub) -> None:
    log: list[Any] = []
    ref = Teller.start(hub, log)
    tell_now(ref, "from the test's thread")
    assert ref.ask("thread?", timeout=5) is None
    assert log == ["from the test's thread", "thread?"]
    ref.stop(timeout=5)
