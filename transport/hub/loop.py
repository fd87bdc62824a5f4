"""The hub: one I/O loop thread that owns every socket of the daemon.

ZMQ sockets are not thread-safe, so exactly one thread creates, uses and
closes them: the hub's loop. Other threads talk to the hub through its
`Mailbox` (`send_front`, `send_back`, `call`), which the loop's poller wakes
on; on the loop thread itself the same calls send at once, or queue ``fn`` in
a local run queue, without a system call. Inbound frames go to a
`HubHandler` that the daemon supplies; the handler, and everything run with
`call`, runs on the loop thread, so whatever it owns needs no lock.

Both ROUTER sockets trust nothing a peer says about itself:

* every connection's routing id is the daemon's, given through ZAP
  (`mcp_troupe.transport.hub.zap`); a peer-chosen ``ZMQ_ROUTING_ID`` is overridden, and
  routing ids are never disclosed;
* a socket monitor and ZAP together tell which connection each routing id is
  (`mcp_troupe.transport.hub.peers`), so the handler hears when a peer's connection ends
  (`HubHandler.on_peer_lost`): a killed process at once, a silent one after
  its heartbeat timeout;
* ``ZMQ_MAXMSGSIZE`` cuts off a peer that sends a message too large to be
  worth reading, before libzmq buffers it.

``ROUTER_MANDATORY`` is set, so no frame is silently lost: a frame for a peer
whose queue is full waits in the hub's `Backlog` (with every later frame for
that peer) until the peer reads, and the handler is told the peer is blocked
so it can hold back what feeds it. A peer that holds more than its share
(``backlog_bytes``, or the largest one when ``backlog_total`` is reached) is
given up: its frames are dropped, counted, and the handler is told.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import math
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, Protocol, TypeVar

import zmq
from zmq.utils.monitor import parse_monitor_message

from mcp_troupe.transport.hub import zap
from mcp_troupe.transport.hub.backlog import Backlog
from mcp_troupe.transport.hub.peers import Admission, Connection, PeerTable, address_uid
from mcp_troupe.transport.keys import ANY_SERVER, OPERATOR, VOUCH, KeyRing, ServerKeys
from mcp_troupe.transport.mailbox import Mailbox

log = logging.getLogger("troupe.hub")

T = TypeVar("T")

FRONT: Final = 0
BACK: Final = 1
EVENTS: Final = 2
_CALL: Final = 3
_STOP: Final = 4
_PUBLISH: Final = 5
_SOCKET_NAMES: Final = ("front", "back", "events")
_ZAP_DOMAINS: Final = ("front", "back", "events")
_RECV_BATCH: Final = 256
_RUN_BATCH: Final = 4096
_NOBLOCK: Final = int(zmq.NOBLOCK)
_NOBLOCK_MORE: Final = int(zmq.NOBLOCK | zmq.SNDMORE)
_RCVMORE: Final = int(zmq.RCVMORE)
_SRCFD: Final = int(zmq.SRCFD)
"""Plain ints: pyzmq's flag enums cost an ``Enum`` operation per use on the hot path."""
_send: Final = zmq.backend.Socket.send
"""pyzmq's send without its Python wrapper (half the cost of a small frame's send); the wrapper
adds only the zero-copy hand-over of large frames, used from `_COPY_BELOW` bytes."""
_COPY_BELOW: Final = 64 * 1024
"""pyzmq's default ``copy_threshold``: smaller frames are copied, larger ones handed over."""
TURN_WINDOW: Final = 100
"""Ticks (10 s at the default interval) over which `HubStats.longest_turn_ms` is the maximum."""
REFUSAL_WINDOW: Final = 10.0
REFUSALS_LOGGED: Final = 5
"""Connections refused for their key that are logged one by one per `REFUSAL_WINDOW` seconds; the rest are counted."""
_RETRY_MS: Final = 5
"""Poll timeout while frames wait in the backlog: how soon a peer that read gets the next ones."""
_MONITOR_EVENTS: Final = (
    zmq.EVENT_ACCEPTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_HANDSHAKE_FAILED: Final = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)

_DROP_HELP: Final = {
    "unroutable": "the peer is not connected (it went away)",
    "peer_gone": "the peer's connection ended before it read them",
    "not_reading": "the peer stopped reading and holds more than its share of the daemon's send backlog",
    "error": "the socket refused the frame",
}


class HubHandler(Protocol):
    """What the hub calls on its own thread."""

    def on_front(self, peer: bytes, data: bytes) -> None: ...

    def on_back(self, peer: bytes, data: bytes) -> None: ...

    def on_tick(self, now: float) -> None: ...

    def on_peer_lost(self, which: int, peer: bytes, reason: str) -> None:
        """``peer`` is gone (``disconnected``) or was given up on (``not_reading``): end what it had."""
        ...

    def on_peer_blocked(self, which: int, peer: bytes, blocked: bool) -> None:
        """Frames for ``peer`` started (True) or stopped (False) waiting in the hub: hold back what feeds it."""
        ...


@dataclass
class HubStats:
    """Counters owned by the loop thread; read a copy with `Hub.stats`."""

    frames_in: Counter[str] = field(default_factory=Counter)
    frames_out: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    handler_errors: int = 0
    held: Counter[str] = field(default_factory=Counter)
    """Frames that waited in the backlog (peer's queue full), by socket."""
    connections: Counter[str] = field(default_factory=Counter)
    """``<socket>_accepted``, ``<socket>_ended``, ``<socket>_refused`` (by ZAP), ``<socket>_handshake_failed``,
    ``<socket>_own_id`` (kept a routing id of its own), ``<socket>_lost_<reason>``."""
    open_connections: Counter[str] = field(default_factory=Counter)
    backlog_bytes: int = 0
    longest_turn_ms: float = 0.0
    """The most CPU time one turn of the loop took (everything it received, ran and sent) in the
    last `TURN_WINDOW` turns' ticks: how long the hub was unavailable to every other peer at worst."""

    def copy(self) -> HubStats:
        return HubStats(
            Counter(self.frames_in),
            Counter(self.frames_out),
            Counter(self.dropped),
            self.handler_errors,
            Counter(self.held),
            Counter(self.connections),
            Counter(self.open_connections),
            self.backlog_bytes,
            self.longest_turn_ms,
        )


@dataclass(frozen=True)
class HubOptions:
    tick_interval: float = 0.1
    """Seconds between `HubHandler.on_tick` calls: the daemon's clock."""
    heartbeat_ms: int = 1000
    """ZMTP heartbeat interval on both sockets."""
    client_timeout_ms: int = 5000
    """A client connection with no traffic (ZMTP heartbeats included) for this long is closed."""
    sndhwm: int = 10_000
    rcvhwm: int = 10_000
    backlog_bytes: int = 16 * 1024 * 1024
    """Bytes of frames held for one peer whose queue is full; beyond, the peer is given up on."""
    backlog_total: int = 128 * 1024 * 1024
    """Bytes of frames held for all peers; beyond, the peer holding the most is given up on."""
    front_max_message: int = 16 * 1024 * 1024
    """``ZMQ_MAXMSGSIZE`` of the front socket: a larger message cuts its sender's connection."""
    back_max_message: int = 256 * 1024 * 1024
    """``ZMQ_MAXMSGSIZE`` of the back socket."""
    max_connections: tuple[int, int] = (4096, 1024)
    """Connections the front and the back socket take at once; ZAP refuses more."""
    identity_delay: float = 0.005
    """Seconds ZAP waits before answering, so that a peer's handshake is read before the routing id
    the daemon gives it (libzmq takes whichever it processes last; measured: 2 ms suffice)."""
    linger_ms: int = 1000
    """How long `stop` lets queued frames leave before closing."""
    server_keys: ServerKeys | None = None
    """The daemon's CurveZMQ key pair; with it, the sockets named in `curve` take only CurveZMQ peers."""
    curve: frozenset[int] = frozenset()
    """Sockets (`FRONT`, `BACK`, `EVENTS`) that use CurveZMQ: those bound to tcp when keys are set."""
    keys: KeyRing = field(default_factory=KeyRing)
    """Public keys let in, and their rights; replaced with `Hub.set_keys`."""
    trusted_uids: frozenset[int] = frozenset({os.getuid(), 0})
    """Users whose ipc connections get every right (operator; adapters of any server): the runtime
    directory's owner (and root, who can reach it anyway)."""


class Hub:
    """Owns the ``front`` (clients) and ``back`` (adapters) ROUTER sockets and the ``events`` PUB socket."""

    def __init__(self, options: HubOptions | None = None) -> None:
        self.options = options or HubOptions()
        self._mailbox: Mailbox[tuple[Any, ...]] = Mailbox()
        self._thread: threading.Thread | None = None
        self._handler: HubHandler | None = None
        self._stats = HubStats()
        self._sockets: list[zmq.Socket[bytes]] = []
        self._monitors: list[zmq.Socket[bytes]] = []
        self._zap: zmq.Socket[bytes] | None = None
        self._zap_replies: deque[tuple[float, list[bytes]]] = deque()
        self._peers = tuple(PeerTable(max_admitted=2 * limit) for limit in self.options.max_connections)
        self._ready: Future[None] = Future()
        self._ident: int | None = None
        self._soon: deque[Callable[[], object]] = deque()
        """Calls queued on the loop thread itself: run in order, before the next poll waits."""
        self._backlog: Backlog[tuple[int, bytes]] = Backlog(self.options.backlog_bytes, self.options.backlog_total)
        self._turn_max = 0.0
        self._turn_maxima: deque[float] = deque(maxlen=TURN_WINDOW)
        self._keys = self.options.keys
        self._refused_keys = 0
        """Connections refused for their key in this `REFUSAL_WINDOW`: the first few are logged, then a count."""
        self._refusal_window = 0.0

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

    def set_keys(self, keys: KeyRing) -> None:
        """Let in the keys of ``keys`` from now on (any thread). Connections whose key is no longer
        among them are cut off: what they send is dropped, and the handler hears they are lost
        (``key_revoked``); the others keep going, with their keys' rights as ``keys`` says."""
        self.call(lambda: self._set_keys(keys))

    def stats_now(self) -> HubStats:
        """A copy of the counters; only from the loop thread (e.g. inside a handler)."""
        stats = self._stats.copy()
        stats.open_connections = Counter({"front": self._peers[FRONT].open, "back": self._peers[BACK].open})
        stats.backlog_bytes = self._backlog.total
        stats.longest_turn_ms = round(max(self._turn_max, *self._turn_maxima, 0.0) * 1000, 3)
        return stats

    def stats(self) -> HubStats:
        return self.ask(self.stats_now)

    def connection(self, which: int, peer: bytes) -> Connection | None:
        """What the hub knows of ``peer``'s connection (loop thread only)."""
        return self._peers[which].get(peer)

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued, close the sockets and end the loop."""
        if self._thread is None:
            return
        self._mailbox.put((_STOP,))
        self._thread.join(timeout)
        self._thread = None

    # -- loop thread ------------------------------------------------------------

    def _run(self) -> None:
        _seed_routing_ids()
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        ctx.setsockopt(zmq.MAX_SOCKETS, 4096)
        try:
            self._zap = ctx.socket(zmq.ROUTER)
            self._zap.bind(zap.ENDPOINT)
            o = self.options
            self._sockets = [
                self._make_router(ctx, FRONT, o.client_timeout_ms, 0, o.front_max_message),
                self._make_router(ctx, BACK, 3 * o.heartbeat_ms, 3 * o.heartbeat_ms, o.back_max_message),
                self._make_pub(ctx),
            ]
            for which, sock in enumerate(self._sockets):
                self._secure(which, sock)
            self._monitors = [sock.get_monitor_socket(_MONITOR_EVENTS) for sock in self._sockets[:2]]
        except BaseException as exc:  # noqa: BLE001 - re-raised in the starting thread
            self._ready.set_exception(exc)
            ctx.destroy(linger=0)
            return
        self._ident = threading.get_ident()
        self._ready.set_result(None)
        try:
            self._loop()
        finally:
            for sock in self._sockets[:2]:
                sock.disable_monitor()
            for sock in self._monitors:
                sock.close(linger=0)
            for sock in self._sockets:
                sock.close(linger=self.options.linger_ms)
            self._zap.close(linger=0)
            ctx.term()
            self._ident = None
            self._mailbox.close()

    def _make_router(
        self, ctx: zmq.Context[zmq.Socket[bytes]], which: int, timeout_ms: int, ttl_ms: int, max_message: int
    ) -> zmq.Socket[bytes]:
        o = self.options
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.SNDHWM, o.sndhwm)
        sock.setsockopt(zmq.RCVHWM, o.rcvhwm)
        sock.setsockopt(zmq.HEARTBEAT_IVL, o.heartbeat_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, timeout_ms)
        # No TTL for clients: it would make a client that stops reading drop its own connection.
        sock.setsockopt(zmq.HEARTBEAT_TTL, ttl_ms)
        sock.setsockopt(zmq.MAXMSGSIZE, max_message)
        sock.setsockopt(zmq.ZAP_DOMAIN, _ZAP_DOMAINS[which].encode())
        return sock

    def _secure(self, which: int, sock: zmq.Socket[bytes]) -> None:
        keys = self.options.server_keys
        if which not in self.options.curve or keys is None:
            return
        sock.curve_server = True
        sock.curve_secretkey = keys.secret
        sock.curve_publickey = keys.public
        sock.setsockopt(zmq.ZAP_DOMAIN, _ZAP_DOMAINS[which].encode())

    def _make_pub(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> zmq.Socket[bytes]:
        sock = ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.SNDHWM, self.options.sndhwm)
        return sock

    def _loop(self) -> None:
        front, back, _events = self._sockets
        zap_sock = self._zap
        monitor_front, monitor_back = self._monitors
        poller = zmq.Poller()
        for sock in (front, back, zap_sock, monitor_front, monitor_back):
            poller.register(sock, zmq.POLLIN)
        poller.register(self._mailbox.fileno(), zmq.POLLIN)
        interval = self.options.tick_interval
        next_tick = time.monotonic() + interval
        while True:
            now = time.monotonic()
            wake_at = min(next_tick, self._zap_replies[0][0]) if self._zap_replies else next_tick
            timeout_ms = 0 if self._soon else max(0, math.ceil((wake_at - now) * 1000))
            if self._backlog:
                self._flush_backlog()
                timeout_ms = min(timeout_ms, _RETRY_MS)
            ready = dict(poller.poll(timeout_ms))  # pyzmq truncates a float timeout: hence ceil
            began = time.thread_time()
            # Sockets before monitors: frames a peer sent before its connection ended come first.
            if front in ready:
                self._receive(FRONT)
            if back in ready:
                self._receive(BACK)
            if monitor_front in ready:
                self._serve_monitor(FRONT)
            if monitor_back in ready:
                self._serve_monitor(BACK)
            if zap_sock in ready:
                self._serve_zap()
            if self._zap_replies:
                self._send_zap_replies(time.monotonic())
            if self._mailbox.fileno() in ready and not self._serve_mailbox():
                return
            self._run_soon(_RUN_BATCH)
            now = time.monotonic()
            if now >= next_tick:
                self._dispatch(self._handler.on_tick, now)  # type: ignore[union-attr]
                self._peers[FRONT].expire(now)
                self._peers[BACK].expire(now)
                self._summarize_refusals(now)
                self._turn_maxima.append(self._turn_max)
                self._turn_max = 0.0
                next_tick = now + interval
            self._turn_max = max(self._turn_max, time.thread_time() - began)

    def _receive(self, which: int) -> None:
        handler = self._handler
        assert handler is not None
        sock = self._sockets[which]
        name = _SOCKET_NAMES[which]
        deliver = handler.on_front if which == FRONT else handler.on_back
        peers = self._peers[which]
        recv = sock.recv
        frames_in = self._stats.frames_in
        for _ in range(_RECV_BATCH):
            try:
                peer = recv(_NOBLOCK)
            except zmq.Again:
                return
            if peer in peers:
                # A DEALER sends [payload]; the ROUTER prepends the peer id, so a part always follows it.
                # A REQ socket adds an empty delimiter: the last part is the payload. The part is read as
                # a frame for its ``more`` flag: ``getsockopt(RCVMORE)`` costs three times as much.
                part = recv(_NOBLOCK, copy=False)
                while part.more:
                    part = recv(_NOBLOCK, copy=False)
                data = part.bytes
            else:
                first = self._first_message(which, peer)
                if first is None:
                    continue
                data = first
            frames_in[name] += 1
            self._dispatch(deliver, peer, data)

    def _first_message(self, which: int, peer: bytes) -> bytes | None:
        """The first message of a connection: learn which one it is before handing it on."""
        sock = self._sockets[which]
        name = _SOCKET_NAMES[which]
        fd: int | None = None
        user: str | None = None
        data = b""
        while sock.get(_RCVMORE):
            part = sock.recv(_NOBLOCK, copy=False)
            fd = part.get(_SRCFD)
            user = _user_id(part)
            data = part.bytes
        self._serve_monitor(which)  # up to date: the accept of this connection, the end of an older one
        conn = self._peers[which].seen(peer, fd, user or "")
        if conn is None:
            self._stats.dropped[f"{name}_from_ended_peer"] += 1
            return None
        if not conn.assigned:
            self._stats.connections[f"{name}_own_id"] += 1
            log.warning(
                "%s connection %s kept a routing id of its own (its handshake came after the daemon's); served",
                name,
                conn.label,
            )
        return data

    def _serve_monitor(self, which: int) -> None:
        monitor = self._monitors[which]
        name = _SOCKET_NAMES[which]
        peers = self._peers[which]
        while True:
            try:
                event = parse_monitor_message(monitor.recv_multipart(_NOBLOCK))
            except zmq.Again:
                return
            kind, fd = event["event"], int(event["value"])
            if kind == zmq.EVENT_ACCEPTED:
                self._stats.connections[f"{name}_accepted"] += 1
                self._lost(which, peers.accepted_fd(fd), "disconnected")
            elif kind == zmq.EVENT_DISCONNECTED:
                self._stats.connections[f"{name}_ended"] += 1
                self._lost(which, peers.disconnected(fd), "disconnected")
            elif kind & _HANDSHAKE_FAILED:
                self._stats.connections[f"{name}_handshake_failed"] += 1

    def _lost(self, which: int, conn: Connection | None, reason: str) -> None:
        if conn is None or conn.identity is None:
            return
        name = _SOCKET_NAMES[which]
        dropped = self._backlog.give_up((which, conn.identity))
        if dropped:
            self._stats.dropped[f"{name}_peer_gone"] += dropped
            log.warning("dropped %d frame(s) to %s peer %s: %s", dropped, name, conn.label, _DROP_HELP["peer_gone"])
        self._stats.connections[f"{name}_lost_{reason}"] += 1
        self._dispatch(self._handler.on_peer_lost, which, conn.identity, reason)  # type: ignore[union-attr]

    # -- ZAP: every connection gets a routing id of the daemon's making ----------

    def _serve_zap(self) -> None:
        assert self._zap is not None
        now = time.monotonic()
        for _ in range(_RECV_BATCH):
            try:
                parts = self._zap.recv_multipart(_NOBLOCK)
            except zmq.Again:
                return
            try:
                request = zap.parse_request(parts)
            except zap.ZapError as exc:
                log.warning("ignored a malformed ZAP request: %s", exc)
                continue
            self._zap_replies.append((now + self.options.identity_delay, self._admit(request, now)))

    def _admit(self, request: zap.ZapRequest, now: float) -> list[bytes]:
        which = _ZAP_DOMAINS.index(request.domain) if request.domain in _ZAP_DOMAINS else BACK
        name = _SOCKET_NAMES[which]
        admission = self._admission(which, request)
        if admission is None:
            self._stats.connections[f"{name}_refused_key"] += 1
            self._refused_keys += 1
            if self._refused_keys <= REFUSALS_LOGGED:
                key = zap.z85_key(request)
                log.warning(
                    "refused a %s connection from %s: its CurveZMQ key %s is not among the allowed keys "
                    "(add its .key file to the keys directory and reload)",
                    name,
                    request.address,
                    key[:12].decode() + "..." if key else "(none)",
                )
            return zap.reply(request, identity=None, status=400, text="key not allowed")
        if which == EVENTS:
            return zap.reply(request, identity=None, user_id=admission.user)
        self._serve_monitor(which)
        peers = self._peers[which]
        limit = self.options.max_connections[which]
        if peers.open > limit:
            self._stats.connections[f"{name}_refused"] += 1
            log.warning(
                "refused a %s connection from %s: %d connections open (limit %d)",
                name,
                request.address,
                peers.open,
                limit,
            )
            return zap.reply(request, identity=None, status=400, text=f"too many connections (limit {limit})")
        identity = zap.new_identity()
        peers.admitted(identity, admission, now)
        return zap.reply(request, identity=identity, user_id=admission.user)

    def _admission(self, which: int, request: zap.ZapRequest) -> Admission | None:
        """What a connection may do: a CurveZMQ key's grant; for other peers, what their transport implies."""
        if request.mechanism == "CURVE":
            grant = self._keys.grant(_ZAP_DOMAINS[which], request.credentials[0] if request.credentials else b"")
            if grant is None or (which == EVENTS and OPERATOR not in grant.rights):
                return None  # the event stream tells of every session: operators only
            return Admission(request.address, request.mechanism, grant.name, zap.z85_key(request), grant.rights)
        uid = address_uid(request.address)
        trusted = uid is not None and uid in self.options.trusted_uids
        if which == BACK:
            # ipc: the 0700 runtime directory; tcp: allow_insecure_tcp said so
            rights = frozenset({ANY_SERVER, VOUCH}) if trusted else frozenset({ANY_SERVER})
        else:
            rights = frozenset({OPERATOR}) if trusted else frozenset()
        return Admission(request.address, request.mechanism, rights=rights)

    def _set_keys(self, keys: KeyRing) -> None:
        self._keys = keys
        for which in (FRONT, BACK):
            for conn in self._peers[which].revoke(partial(keys.rights, _ZAP_DOMAINS[which])):
                name = _SOCKET_NAMES[which]
                log.warning(
                    "%s connection %s (key %r) is cut off: its key is no longer allowed", name, conn.label, conn.user
                )
                self._lost(which, conn, "key_revoked")

    def _summarize_refusals(self, now: float) -> None:
        if now - self._refusal_window < REFUSAL_WINDOW:
            return
        if self._refused_keys > REFUSALS_LOGGED:
            log.warning(
                "refused %d more connection(s) for their CurveZMQ key in the last %gs (stats: <socket>_refused_key)",
                self._refused_keys - REFUSALS_LOGGED,
                REFUSAL_WINDOW,
            )
        self._refused_keys, self._refusal_window = 0, now

    def _send_zap_replies(self, now: float) -> None:
        assert self._zap is not None
        while self._zap_replies and self._zap_replies[0][0] <= now:
            self._zap.send_multipart(self._zap_replies.popleft()[1])

    # -- the mailbox and the run queue --------------------------------------------

    def _serve_mailbox(self, limit: int = 4096) -> bool:
        """Carry out queued items; False once a stop was asked for (after sending everything queued)."""
        if self._carry_out(self._mailbox.drain(limit)):
            return True
        self._finish()
        return False

    def _carry_out(self, items: list[tuple[Any, ...]]) -> bool:
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

    # -- sending -------------------------------------------------------------------

    def _send(self, which: int, peer: bytes, data: bytes) -> None:
        key = (which, peer)
        if self._backlog and key in self._backlog:
            self._hold(key, data)  # behind what waits already: frames keep their order
            return
        error = self._try_send(which, peer, data)
        if error is None:
            return
        if error not in (errno.EAGAIN, errno.EHOSTUNREACH):
            self._drop(which, peer, 1, "error")
        elif peer in self._peers[which]:
            self._hold(key, data)
        else:
            self._drop(which, peer, 1, "unroutable")

    def _try_send(self, which: int, peer: bytes, data: bytes) -> int | None:
        """Send one frame; None when it went, else the errno."""
        sock = self._sockets[which]
        try:
            # ROUTER_MANDATORY refuses the first part (the peer id) if the frame
            # cannot go; once it is accepted the payload part cannot fail.
            _send(sock, peer, _NOBLOCK_MORE)
            if len(data) < _COPY_BELOW:
                _send(sock, data, _NOBLOCK)
            else:
                sock.send(data, _NOBLOCK)  # pyzmq's own send hands a large frame over without a copy
        except zmq.ZMQError as exc:
            return exc.errno
        self._stats.frames_out[_SOCKET_NAMES[which]] += 1
        return None

    def _hold(self, key: tuple[int, bytes], data: bytes) -> None:
        which, peer = key
        backlog = self._backlog
        blocked_before = key in backlog
        if not backlog.hold(key, data):
            over_own_share = backlog.held_bytes(key) + len(data) > backlog.max_bytes
            victim = key if over_own_share else backlog.largest()
            if victim is not None:
                self._give_up(victim)
            blocked_before = key in backlog
            if not backlog.hold(key, data):
                self._drop(which, peer, 1, "not_reading")
                return
        self._stats.held[_SOCKET_NAMES[which]] += 1
        if not blocked_before:
            self._soon.append(lambda: self._handler.on_peer_blocked(which, peer, True))  # type: ignore[union-attr]

    def _give_up(self, key: tuple[int, bytes]) -> None:
        """A peer holds too much of the backlog: drop what waits for it and tell the handler."""
        which, peer = key
        self._drop(which, peer, self._backlog.give_up(key), "not_reading")
        self._stats.connections[f"{_SOCKET_NAMES[which]}_lost_not_reading"] += 1
        self._soon.append(lambda: self._handler.on_peer_lost(which, peer, "not_reading"))  # type: ignore[union-attr]

    def _flush_backlog(self) -> None:
        def send(key: tuple[int, bytes], data: bytes) -> bool:
            which, peer = key
            return self._try_send(which, peer, data) is None

        handler = self._handler
        assert handler is not None
        for which, peer in self._backlog.flush(send):
            self._dispatch(handler.on_peer_blocked, which, peer, False)

    def _drop(self, which: int, peer: bytes, count: int, reason: str) -> None:
        if not count:
            return
        name = _SOCKET_NAMES[which]
        self._stats.dropped[f"{name}_{reason}"] += count
        conn = self._peers[which].get(peer)
        label = conn.label if conn is not None else "(not connected)"
        log.warning("dropped %d frame(s) to %s peer %s: %s", count, name, label, _DROP_HELP[reason])

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


def _seed_routing_ids() -> None:
    """Make libzmq's own routing-id counter unpredictable.

    A ROUTER numbers connections it has no id for from ``rand()``, which
    libzmq never seeds, so every process starts at the same value. The
    daemon gives every connection an id of its own through ZAP; this makes
    the counter libzmq falls back on (a peer whose handshake outran ZAP)
    impossible to predict as well.
    """
    try:
        ctypes.CDLL(None).srand(int.from_bytes(os.urandom(4), "big"))
    except (OSError, AttributeError):  # pragma: no cover - not a glibc-like platform
        log.debug("could not seed libc's rand(); libzmq's fallback routing ids stay predictable")


def _user_id(part: zmq.Frame) -> str | None:
    """The ZAP user id libzmq attached to a message (the hub's admission gave it), if any."""
    try:
        value = part.get("User-Id")
    except (zmq.ZMQError, KeyError):
        return None
    return value if isinstance(value, str) else None
