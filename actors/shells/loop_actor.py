"""`LoopActor`: a pykka actor run by an event loop instead of a thread of its own.

pykka's `ThreadingActor` gives every actor a thread. For a session that is
the wrong price: each frame then crosses from the hub's thread to the
session's and back (futex wake-ups and GIL hand-offs were a quarter of the
daemon's CPU in the profile of ``docs/performance.rst``), each session costs
a thread stack, and opening one means starting a thread.

A `LoopActor` keeps pykka's whole contract (`pykka.ActorRef`, ``tell``,
``ask``, proxies, the registry, ``on_start``/``on_stop``/``on_failure`` with
pykka's semantics) but its messages are run by an `EventLoop`, the thread
that owns the daemon's sockets, the way Erlang runs many processes on one
scheduler: one message at a time per actor, in the order sent, never two at
once, and at most `BATCH` in a row before other actors and the sockets get a
turn.

The rules that come with it: a handler must not block (it would stall every
actor of the loop), and code on the loop thread must never ``ask`` a loop
actor and wait for the answer (it would wait for itself; `LoopFuture` raises
instead). The inbox belongs to the loop thread: other threads hand envelopes
over through `EventLoop.call`, so nothing here needs a lock.
"""

from __future__ import annotations

import logging
import queue
import sys
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, Final, Protocol

import pykka
from pykka import ActorDeadError, ActorRegistry, ThreadingFuture, messages

log = logging.getLogger("troupe.actors")

PYKKA_PRIVATE: Final = {
    # pykka.Actor's names this module overrides or calls, with the signature it relies on
    "_create_actor_inbox": "() -> 'ActorInbox'",
    "_create_future": "() -> 'Future[Any]'",
    "_start_actor_loop": "(self) -> 'None'",
    "_actor_loop_setup": "(self) -> 'None'",
    "_actor_loop_teardown": "(self) -> 'None'",
    "_handle_receive": "(self, message: 'Any') -> 'Any'",
    "_handle_failure": "(self, exception_type: 'type[BaseException] | None', "
    "exception_value: 'BaseException | None', traceback: 'TracebackType | None') -> 'None'",
    "_stop": "(self) -> 'None'",
}
"""pykka has no public hook for running an actor without a thread of its own: these private names are
the only ones used, here only, and ``tests/unit/test_pykka_contract.py`` fails on a pykka whose names,
signatures or message loop (copied in `LoopActor._handle_envelope`) differ from 4.5's."""

BATCH: Final = 64
"""Messages one actor handles in a row before it goes to the back of the loop's queue."""


class EventLoop(Protocol):
    """What a `LoopActor` needs from its loop (`mcp_troupe.transport.hub.loop.Hub` is one)."""

    def call(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the loop thread, after what was queued before it; safe from any thread."""
        ...

    def on_loop_thread(self) -> bool: ...


class LoopFuture(ThreadingFuture[Any]):
    """A `pykka.ThreadingFuture` that refuses to wait on the loop thread, where waiting would never end."""

    loop: EventLoop | None = None

    def get(self, *, timeout: float | None = None) -> Any:
        loop = self.loop
        if loop is not None and self._result is None and loop.on_loop_thread():
            raise RuntimeError(
                "waiting for a loop actor's answer on its own loop thread would never end: "
                "tell it a message with a callback instead"
            )
        return super().get(timeout=timeout)


class LoopInbox:
    """pykka's `ActorInbox` for a `LoopActor`; its queue is touched only on the loop thread."""

    __slots__ = ("_actor", "_items", "_scheduled")

    def __init__(self, actor: LoopActor) -> None:
        self._actor = actor
        self._items: deque[Any] = deque()
        self._scheduled = False

    def put(self, envelope: Any, /) -> None:
        loop = self._actor.loop
        if isinstance(envelope.reply_to, LoopFuture):
            envelope.reply_to.loop = loop
        if loop.on_loop_thread():
            self.put_local(envelope)
        else:
            loop.call(partial(self.put_local, envelope))

    def put_local(self, envelope: Any) -> None:
        actor = self._actor
        if actor.actor_stopped.is_set():
            _refuse(actor, envelope)
            return
        self._items.append(envelope)
        if actor.loop_started:
            self.schedule()

    def deliver(self, message: Any) -> None:
        """``tell`` from the loop thread, handled at once when the actor is idle (nothing waits in its
        inbox, it is not handling a message, it has started): the frame path's way in.

        The order and the one-at-a-time rule hold as with ``tell``: a message waiting, or one being
        handled, makes this one queue behind it. What is saved is the envelope's trip through the run
        queue (a quarter of the daemon's Python work per request). Raises `ActorDeadError` like ``tell``."""
        actor = self._actor
        if actor.actor_stopped.is_set():
            raise ActorDeadError(f"{actor.actor_ref} not found")
        if self._items or self._scheduled or actor.busy or not actor.loop_started:
            self.put_local(_Told(message))
            return
        actor.busy = True
        try:
            actor._handle_envelope(_Told(message))
        finally:
            actor.busy = False
        if actor.actor_stopped.is_set():
            actor._actor_loop_teardown()

    def schedule(self) -> None:
        if not self._scheduled and self._items:
            self._scheduled = True
            self._actor.loop.call(self._actor._run_batch)

    def unschedule(self) -> None:
        self._scheduled = False

    def get(self) -> Any:
        """The oldest envelope; `queue.Empty` when there is none (loop thread only)."""
        try:
            return self._items.popleft()
        except IndexError:
            raise queue.Empty from None

    get_nowait = get

    def empty(self) -> bool:
        return not self._items


class LoopActor(pykka.Actor):
    """A pykka actor whose messages the `EventLoop` given to ``__init__`` runs."""

    actor_inbox: LoopInbox

    def __init__(self, loop: EventLoop) -> None:
        self.loop = loop
        self.loop_started = False
        self.busy = False
        """Handling a message now (from the run queue or `LoopInbox.deliver`)."""
        super().__init__()

    def _create_actor_inbox(self) -> LoopInbox:  # type: ignore[override]
        return LoopInbox(self)

    @staticmethod
    def _create_future() -> LoopFuture:
        return LoopFuture()

    def _start_actor_loop(self) -> None:
        self.loop.call(self._setup)

    def _setup(self) -> None:
        self._actor_loop_setup()
        self.loop_started = True
        if self.actor_stopped.is_set():
            self._actor_loop_teardown()
        else:
            self.actor_inbox.schedule()

    def _run_batch(self) -> None:
        inbox = self.actor_inbox
        inbox.unschedule()
        self.busy = True
        try:
            for _ in range(BATCH):
                if self.actor_stopped.is_set():
                    break
                try:
                    envelope = inbox.get()
                except queue.Empty:
                    return
                self._handle_envelope(envelope)
        finally:
            self.busy = False
        if self.actor_stopped.is_set():
            self._actor_loop_teardown()
        else:
            inbox.schedule()

    def _handle_envelope(self, envelope: Any) -> None:
        """One turn of pykka's `Actor._actor_loop_running`, with the same failure semantics."""
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:
            if envelope.reply_to is not None:
                log.info("Exception returned from %s to caller:", self, exc_info=sys.exc_info())
                envelope.reply_to.set_exception()
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:  # noqa: BLE001 - pykka logs it and stops the actor
                    self._handle_failure(*sys.exc_info())
        except BaseException:  # noqa: BLE001 - pykka's own handling of KeyboardInterrupt and SystemExit
            # pykka stops every actor here; asking them to stop and waiting on
            # the loop thread would never end, so only ask.
            log.debug("%r in %s: stopping all actors", sys.exc_info()[1], self)
            self._stop()
            ActorRegistry.stop_all(block=False)


def tell_now(ref: pykka.ActorRef[Any], message: Any) -> None:
    """``ref.tell(message)``; from the loop thread to an idle `LoopActor`, handled at once (`LoopInbox.deliver`)."""
    inbox = ref.actor_inbox
    if isinstance(inbox, LoopInbox) and inbox._actor.loop.on_loop_thread():
        inbox.deliver(message)
    else:
        ref.tell(message)


class _Told:
    """An envelope of `LoopInbox.deliver`: what pykka's (private) ``Envelope`` of a ``tell`` holds."""

    __slots__ = ("message",)
    reply_to: None = None

    def __init__(self, message: Any) -> None:
        self.message = message


def _refuse(actor: LoopActor, envelope: Any) -> None:
    """An envelope for an actor that has stopped: answer an ``ask`` at once rather than never."""
    reply_to = envelope.reply_to
    if reply_to is None:
        return
    if isinstance(envelope.message, messages._ActorStop):
        reply_to.set(None)
    else:
        dead = ActorDeadError(f"{actor.actor_ref} stopped before handling the message")
        reply_to.set_exception(exc_info=(ActorDeadError, dead, None))
