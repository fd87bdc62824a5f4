"""The hub: one I/O loop thread that owns every socket of the daemon.

ZMQ sockets are not thread-safe, so exactly one thread creates, uses and
closes them: the hub's loop. Other threads talk to the hub through its
`Mailbox` (`send_front`, `send_back`, `call`), which the loop's poller wakes
on; on the loop thread itself the same calls send at once, or queue ``fn`` in
a local run queue, without a system call. Inbound frames go to a
`HubHandler` that the daemon supplies; the handler, and everything run with
`call`, runs on the loop thread, so whatever it owns needs no lock.

Both sockets are ROUTERs with ``ROUTER_MANDATORY`` set, so no frame is
silently lost: a frame for a peer whose queue is full waits in the hub's
`Backlog` (with every later frame for that peer) until the peer reads; one
for a peer that takes nothing for ``backlog_timeout`` seconds, or beyond
``backlog_bytes``, is counted in `HubStats.dropped` by reason and logged.
"""

from __future__ import annotations

import errno
import math
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Final, Protocol, TypeVar

import zmq

from transport.backlog import Backlog
from transport.mailbox import Mailbox

log = logging.getLogger("troupe.hub")

T = TypeVar("T")

FRONT: Final = 0
BACK: Final = 1
EVENTS: Final = 2
_CALL: Final = 3
_STOP: Final = 4
_PUBLISH: Final = 5
_SOCKET_NAMES: Final = ("front", "back", "events")
_RECV_BATCH: Final = 256
_RUN_BATCH: Final = 4096
_NOBLOCK: Final = int(zmq.NOBLOCK)
_NOBLOCK_MORE: Final = int(zmq.NOBLOCK | zmq.SNDMORE)
_RCVMORE: Final = int(zmq.RCVMORE)
"""Plain ints: pyzmq's flag enums cost an ``Enum`` operation per use on the hot path."""
_RETRY_MS: Final = 5
"""Poll timeout while frames wait in the backlog: how soon a peer that read gets the next ones."""


_DROP_HELP: Final = {
    "unroutable": "the peer took nothing for backlog_timeout seconds (it is gone, or stopped reading)",
    "backlog_full": "the peer is not reading and backlog_bytes of frames wait for it already",
    "error": "the socket refused the frame",
}


class HubHandler(Protocol):
    """What the hub calls on its own thread."""

    def on_front(self, peer: bytes, data: bytes) -> None: ...

    def on_back(self, peer: bytes, data: bytes) -> None: ...

    def on_tick(self, now: float) -> None: ...


@dataclass
class HubStats:
    """Counters owned by the loop thread; read a copy with `Hub.stats`."""

    frames_in: Counter[str] = field(default_factory=Counter)
    frames_out: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    handler_errors: int = 0
    held: Counter[str] = field(default_factory=Counter)
    """Frames that waited in the backlog (peer's queue full), by socket."""

    def copy(self) -> HubStats:
        return HubStats(
            Counter(self.frames_in),
            Counter(self.frames_out),
            Counter(self.dropped),
            self.handler_errors,
            Counter(self.held),
        )


@dataclass(frozen=True)
class HubOptions:
    tick_interval: float = 0.1
    """Seconds between `HubHandler.on_tick` calls: the daemon's clock."""
    heartbeat_ms: int = 1000
    """ZMTP heartbeat interval; a peer silent for 3 intervals is dropped."""
    sndhwm: int = 10_000
    rcvhwm: int = 10_000
    backlog_bytes: int = 64 * 1024 * 1024
    """Bytes of frames held for one peer whose queue is full (beyond ``sndhwm`` frames); more are dropped."""
    backlog_timeout: float = 10.0
    """Seconds a peer may take no frame before what is held for it is dropped (it is taken to be gone)."""
    linger_ms: int = 1000
    """How long `stop` lets queued frames leave before closing."""


class Hub:
    """Owns the ``front`` (clients) and ``back`` (adapters) ROUTER sockets and the ``events`` PUB socket."""

    def __init__(self, options: HubOptions | None = None) -> None:
        self.options = options or HubOptions()
        self._mailbox: Mailbox[tuple] = Mailbox()
        self._thread: threading.Thread | None = None
        self._handler: HubHandler | None = None
        self._stats = HubStats()
        self._sockets: list[zmq.Socket] = []
        self._ready: Future[None] = Future()
        self._ident: int | None = None
        self._soon: deque[Callable[[], object]] = deque()
        """Calls queued on the loop thread itself: run in order, before the next poll waits."""
        self._backlog = Backlog(self.options.backlog_bytes, self.options.backlog_timeout)

    # -- any thread -------------------------------------------------------------

    def start(self, handler: HubHandler) -> None:
        """Start the loop thread; returns once the sockets exist."""
        self._handler = handler
        self._thread = threading.Thread(target=self._run, name="troupe-hub", daemon=True)
        self._thread.start()
        self._ready.result(timeout=10)

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self._ident

    def send_front(self, peer: bytes, data: bytes) -> None:
        if threading.get_ident() == self._ident:
            self._send(FRONT, peer, data)
        else:
            self._mailbox.put((FRONT, peer, data))

    def send_back(self, peer: bytes, data: bytes) -> None:
        if threading.get_ident() == self._ident:
            self._send(BACK, peer, data)
        else:
            self._mailbox.put((BACK, peer, data))

    def publish(self, topic: str, payload: bytes) -> None:
        """Send ``[topic, payload]`` on the ``events`` PUB socket (dropped if nobody listens)."""
        if threading.get_ident() == self._ident:
            self._publish(topic.encode(), payload)
        else:
            self._mailbox.put((_PUBLISH, topic.encode(), payload))

    def call(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the loop thread (fire and forget), after everything queued before it.

        From the loop thread ``fn`` never runs inside the caller: it waits in
        the run queue until the current handler has returned.
        """
        if threading.get_ident() == self._ident:
            self._soon.append(fn)
        else:
            self._mailbox.put((_CALL, fn))

    def ask(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn`` on the loop thread and wait for its result (at once if already on it)."""
        if threading.get_ident() == self._ident:
            return fn()
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the asker
                future.set_exception(exc)

        self.call(run)
        return future.result(timeout=timeout)

    def bind(self, which: int, endpoint: str) -> str:
        """Bind ``front``, ``back`` or ``events``; returns the bound endpoint (resolves tcp port 0)."""

        def do_bind() -> str:
            sock = self._sockets[which]
            sock.bind(endpoint)
            return sock.getsockopt_string(zmq.LAST_ENDPOINT)

        return self.ask(do_bind)

    def stats_now(self) -> HubStats:
        """A copy of the counters; only from the loop thread (e.g. inside a handler)."""
        return self._stats.copy()

    def stats(self) -> HubStats:
        return self.ask(self._stats.copy)

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued, close the sockets and end the loop."""
        if self._thread is None:
            return
        self._mailbox.put((_STOP,))
        self._thread.join(timeout)
        self._thread = None

    # -- loop thread ------------------------------------------------------------

    def _run(self) -> None:
        ctx = zmq.Context()
        ctx.setsockopt(zmq.MAX_SOCKETS, 4096)
        try:
            self._sockets = [self._make_router(ctx), self._make_router(ctx), self._make_pub(ctx)]
        except BaseException as exc:  # noqa: BLE001 - re-raised in the starting thread
            self._ready.set_exception(exc)
            ctx.term()
            return
        self._ident = threading.get_ident()
        self._ready.set_result(None)
        try:
            self._loop()
        finally:
            for sock in self._sockets:
                sock.close(linger=self.options.linger_ms)
            ctx.term()
            self._ident = None
            self._mailbox.close()

    def _make_router(self, ctx: zmq.Context) -> zmq.Socket:
        o = self.options
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.SNDHWM, o.sndhwm)
        sock.setsockopt(zmq.RCVHWM, o.rcvhwm)
        sock.setsockopt(zmq.HEARTBEAT_IVL, o.heartbeat_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * o.heartbeat_ms)
        sock.setsockopt(zmq.HEARTBEAT_TTL, 3 * o.heartbeat_ms)
        return sock

    def _make_pub(self, ctx: zmq.Context) -> zmq.Socket:
        sock = ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.SNDHWM, self.options.sndhwm)
        return sock

    def _loop(self) -> None:
        front, back, _events = self._sockets
        poller = zmq.Poller()
        poller.register(front, zmq.POLLIN)
        poller.register(back, zmq.POLLIN)
        poller.register(self._mailbox.fileno(), zmq.POLLIN)
        interval = self.options.tick_interval
        next_tick = time.monotonic() + interval
        while True:
            timeout_ms = 0 if self._soon else max(0, math.ceil((next_tick - time.monotonic()) * 1000))
            if self._backlog:
                self._flush_backlog()
                timeout_ms = min(timeout_ms, _RETRY_MS)
            ready = dict(poller.poll(timeout_ms))  # pyzmq truncates a float timeout: hence ceil
            if front in ready:
                self._receive(front, "front")
            if back in ready:
                self._receive(back, "back")
            if self._mailbox.fileno() in ready and not self._serve_mailbox():
                return
            self._run_soon(_RUN_BATCH)
            now = time.monotonic()
            if now >= next_tick:
                self._dispatch(self._handler.on_tick, now)  # type: ignore[union-attr]
                next_tick = now + interval

    def _receive(self, sock: zmq.Socket, name: str) -> None:
        handler = self._handler
        assert handler is not None
        deliver = handler.on_front if name == "front" else handler.on_back
        recv, more = sock.recv, sock.get
        frames_in = self._stats.frames_in
        for _ in range(_RECV_BATCH):
            try:
                peer = recv(_NOBLOCK)
            except zmq.Again:
                return
            # A DEALER sends [payload]; the ROUTER prepends the peer id. A REQ
            # socket adds an empty delimiter: the last part is the payload.
            data = recv(_NOBLOCK) if more(_RCVMORE) else b""
            while more(_RCVMORE):
                data = recv(_NOBLOCK)
            frames_in[name] += 1
            self._dispatch(deliver, peer, data)

    def _serve_mailbox(self, limit: int = 4096) -> bool:
        """Carry out queued items; False once a stop was asked for (after sending everything queued)."""
        if self._carry_out(self._mailbox.drain(limit)):
            return True
        self._finish()
        return False

    def _carry_out(self, items: list[tuple]) -> bool:
        """Carry out mailbox items, all of them; False if one of them asked the loop to stop."""
        go_on = True
        for item in items:
            kind = item[0]
            if kind in (FRONT, BACK):
                self._send(kind, item[1], item[2])
            elif kind == _CALL:
                self._dispatch(item[1])
            elif kind == _PUBLISH:
                self._publish(item[1], item[2])
            else:
                go_on = False
        return go_on

    def _run_soon(self, limit: int) -> None:
        """Run up to ``limit`` queued calls, including those they queue; the rest wait for the next turn."""
        soon = self._soon
        for _ in range(limit):
            if not soon:
                return
            self._dispatch(soon.popleft())

    def _finish(self) -> None:
        """Carry out everything still queued before the sockets close (bounded: a stop must end)."""
        for _ in range(100):
            self._run_soon(_RUN_BATCH)
            items = self._mailbox.drain(1_000_000)
            self._carry_out(items)
            self._flush_backlog()
            if not items and not self._soon:
                break
        if self._backlog:
            self._stats.dropped["backlog_at_stop"] += len(self._backlog)
            log.warning("stopped with %d frame(s) still waiting for peers that were not reading", len(self._backlog))

    def _send(self, which: int, peer: bytes, data: bytes) -> None:
        if self._backlog and (which, peer) in self._backlog:
            self._hold((which, peer), data)  # behind what waits already: frames keep their order
            return
        error = self._try_send(which, peer, data)
        if error is None:
            return
        if error in (errno.EAGAIN, errno.EHOSTUNREACH):
            self._hold((which, peer), data)
        else:
            self._drop(which, peer, 1, "error")

    def _try_send(self, which: int, peer: bytes, data: bytes) -> int | None:
        """Send one frame; None when it went, else the errno."""
        sock = self._sockets[which]
        try:
            # ROUTER_MANDATORY refuses the first part (the peer id) if the frame
            # cannot go; once it is accepted the payload part cannot fail.
            sock.send(peer, _NOBLOCK_MORE)
            sock.send(data, _NOBLOCK)
        except zmq.ZMQError as exc:
            return exc.errno
        self._stats.frames_out[_SOCKET_NAMES[which]] += 1
        return None

    def _hold(self, key: tuple[int, bytes], data: bytes) -> None:
        if self._backlog.hold(key, data, time.monotonic()):
            self._stats.held[_SOCKET_NAMES[key[0]]] += 1
        else:
            self._drop(key[0], key[1], 1, "backlog_full")

    def _flush_backlog(self) -> None:
        def send(key: Hashable, data: bytes) -> bool:
            which, peer = key  # type: ignore[misc]
            return self._try_send(which, peer, data) is None

        for key, count in self._backlog.flush(send, time.monotonic()):
            which, peer = key  # type: ignore[misc]
            self._drop(which, peer, count, "unroutable")

    def _drop(self, which: int, peer: bytes, count: int, reason: str) -> None:
        name = _SOCKET_NAMES[which]
        self._stats.dropped[f"{name}_{reason}"] += count
        log.warning("dropped %d frame(s) to %s peer %s: %s", count, name, peer.hex(), _DROP_HELP[reason])

    def _publish(self, topic: bytes, payload: bytes) -> None:
        try:
            self._sockets[EVENTS].send_multipart((topic, payload), zmq.NOBLOCK)
        except zmq.Again:
            self._stats.dropped["events_full"] += 1
            return
        self._stats.frames_out["events"] += 1

    def _dispatch(self, fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except Exception:
            self._stats.handler_errors += 1
            log.exception("hub handler failed; the loop carries on")
