"""`Router`: the daemon's frame dispatcher, running on the hub's loop thread.

The hub calls `Router.on_front` and `Router.on_back` for every inbound frame.
The router validates the envelope, answers bad frames with an ``error`` frame,
applies the daemon-wide admission rules (open-session limit, open rate per
client, the global pending-request limit) and hands session traffic to the
right `SessionActor` with a ``tell``. Its tables are touched only on the loop
thread, so they have one owner and need no lock; actors change them by asking
the hub to run a router method (`session_finished`, `pending_changed`).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import pykka

from actors.evictor import Forget, Resync, Track
from actors.limits import GlobalPending, SoftLimit, TokenBucket
from actors.options import PRIORITY_METHODS, Limits, ServerPolicy
from actors.session import (
    CloseSession,
    Forgotten,
    FromClient,
    FromServer,
    Peers,
    Rebound,
    Reschedule,
    ServerExited,
    ServerStarted,
    SessionActor,
    SessionLinks,
)
from actors.control import ControlPlane
from actors.observe import Observers
from actors.session_core import SessionCore
from actors.supervisor import TICK, Forward
from transport.frames import ADAPTER_TO_DAEMON, CLIENT_TO_DAEMON, ErrorCode, FrameError, decode, encode
from transport.hub import Hub

log = logging.getLogger("troupe.router")


@dataclass(eq=False)
class AdapterLink:
    """A registered adapter: the peer id on the back socket and its sessions."""

    peer: bytes
    server: str
    capacity: int
    pid: int | None = None
    adapter_id: str | None = None
    sessions: set[str] = field(default_factory=set)
    last_seen: float = 0.0

    @property
    def full(self) -> bool:
        return self.capacity > 0 and len(self.sessions) >= self.capacity


@dataclass(eq=False)
class ClientLink:
    """A client connection: its sessions and its session-opening rate."""

    bucket: TokenBucket
    sessions: set[str] = field(default_factory=set)


@dataclass(eq=False, slots=True)
class Route:
    actor: pykka.ActorRef[SessionActor]
    client: bytes
    adapter: AdapterLink
    closing: bool = False


@dataclass(frozen=True)
class RouterOptions:
    max_frame_bytes: int = 4 * 1024 * 1024
    limits: Limits = field(default_factory=Limits)
    fault_injection: bool = False
    """Allow the ``inject_fault`` control operation (tests, drills); off by default."""
    server_policies: Mapping[str, ServerPolicy] = field(default_factory=dict)
    """``on_exit`` policy per server name; servers not listed fail their sessions."""
    adapter_timeout: float = 5.0
    """Seconds of silence (no frame, no heartbeat) after which an adapter counts as lost."""
    respawn_timeout: float = 15.0
    """Seconds a session whose adapter was lost waits for another adapter of its server."""


class Router:
    """Implements `transport.hub.HubHandler` for the daemon."""

    def __init__(
        self,
        hub: Hub,
        options: RouterOptions | None = None,
        *,
        supervisor: Callable[[object], None] = lambda _msg: None,
        observers: Observers | None = None,
        version: str = "",
    ) -> None:
        self._hub = hub
        self._options = options = options or RouterOptions()
        self._limits = limits = options.limits
        self.version = version
        self.observers = observers or Observers()
        self.fault_injection = options.fault_injection
        self.supervisor = supervisor
        """Tells the supervisor; children are reached through it by id (`Forward`)."""
        self.sessions: dict[str, Route] = {}
        self.adapters: dict[bytes, AdapterLink] = {}
        self.clients: dict[bytes, ClientLink] = {}
        self.errors: Counter[str] = Counter()
        self.pending = GlobalPending(limits.max_pending_total)
        self._pending_soft = SoftLimit(limits.max_pending_total, limits.soft_limit_ratio)
        self._sessions_soft = SoftLimit(limits.max_sessions, limits.soft_limit_ratio)
        self._links = SessionLinks(hub, self, self.to_child, self.observers)
        self.stopping = False
        self._drained: Future[None] | None = None
        self._parked: dict[str, float] = {}
        """Sessions waiting for an adapter of their server, with their deadline."""
        self.on_adapter_lost: Callable[[str | None, str], None] = lambda adapter_id, reason: None
        """Told (on the loop thread) when an adapter goes silent, so its process can be replaced."""
        self._expected: tuple[Counter[str], Future[None]] | None = None
        self.control = ControlPlane(self)
        self._pending_by_session: dict[str, int] = {}

    def to_child(self, child_id: str, message: object) -> None:
        """Send to the current incarnation of a supervised child. Any thread."""
        self.to_supervisor(Forward(child_id, message))

    def to_supervisor(self, message: object) -> bool:
        try:
            self.supervisor(message)
        except pykka.ActorDeadError:
            return False  # stopped for shutdown: nothing left to supervise
        return True

    # -- clients -------------------------------------------------------------------

    def on_front(self, peer: bytes, data: bytes) -> None:
        try:
            frame = decode(data, CLIENT_TO_DAEMON, max_bytes=self._options.max_frame_bytes)
            kind = frame["t"]
            if kind == "mcp":
                self._client_message(peer, frame)
            elif kind == "open":
                self._open(peer, frame)
            elif kind == "close":
                self._tell(self._route(peer, frame), CloseSession("client", frame.get("ref")), frame)
            else:
                self._control(peer, frame)
        except FrameError as exc:
            self._refuse(peer, exc)

    def _client_message(self, peer: bytes, frame: dict[str, Any]) -> None:
        if "sid" not in frame:
            frame["sid"] = self._only_session_of(peer, frame)
        route = self._route(peer, frame)
        msg = frame["msg"]
        method = msg.get("method")
        counted, over = False, None
        if "id" in msg and isinstance(method, str):
            self.control.requests += 1
            self.observers.metrics.count_request(method)
        if "id" in msg and isinstance(method, str) and method not in PRIORITY_METHODS:
            over = self.pending.admit()
            counted = over is None
            if counted:
                self._warn_pending()
        try:
            self._tell(route, FromClient(msg, counted, over), frame)
        except FrameError:
            if counted:
                self.pending.apply(-1)
            raise

    def _only_session_of(self, peer: bytes, frame: dict[str, Any]) -> str:
        client = self.clients.get(peer)
        sids = client.sessions if client is not None else set()
        if len(sids) != 1:
            raise FrameError(
                ErrorCode.BAD_FRAME,
                f"'mcp' frame names no session and this client has {len(sids)} open sessions; "
                "add the 'sid' field (it may be left out only when the client has exactly one session)",
                id=_request_id(frame["msg"]),
            )
        (sid,) = sids
        log.warning("mcp frame without sid from client %s routed to its only session %s", peer.hex(), sid)
        return sid

    def _route(self, peer: bytes, frame: dict[str, Any]) -> Route:
        sid, ref = frame["sid"], frame.get("ref")
        msg_id = _request_id(frame["msg"]) if "msg" in frame else None
        route = self.sessions.get(sid)
        if route is None:
            message = f"no open session {sid!r}; it was closed or never opened: open a new session"
            raise FrameError(ErrorCode.UNKNOWN_SESSION, message, sid=sid, id=msg_id, ref=ref)
        if route.client != peer:
            message = f"session {sid!r} belongs to another client connection"
            raise FrameError(ErrorCode.NOT_OWNER, message, sid=sid, id=msg_id, ref=ref)
        return route

    def _tell(self, route: Route, message: object, frame: dict[str, Any]) -> None:
        try:
            route.actor.tell(message)
        except pykka.ActorDeadError:
            sid = frame["sid"]
            msg_id = _request_id(frame["msg"]) if "msg" in frame else None
            message = f"session {sid!r} has ended; open a new session"
            raise FrameError(ErrorCode.SESSION_CLOSED, message, sid=sid, id=msg_id, ref=frame.get("ref")) from None

    def _open(self, peer: bytes, frame: dict[str, Any]) -> None:
        ref, server = frame["ref"], frame["server"]
        if self.stopping:
            raise FrameError(ErrorCode.SHUTTING_DOWN, "the daemon is shutting down; try again later", ref=ref)
        self._admit_open(peer, ref)
        adapter = self._pick_adapter(server, ref)
        sid = secrets.token_urlsafe(16)
        policy = self._options.server_policies.get(server)
        core = SessionCore(sid, server, time.monotonic(), self._limits, policy)
        actor = SessionActor.start(core, Peers(peer, adapter.peer, ref), self._links)
        self.sessions[sid] = Route(actor, peer, adapter)
        adapter.sessions.add(sid)
        self.clients[peer].sessions.add(sid)
        self.to_child("evictor", Track(sid, actor))
        if self._sessions_soft.crossed(len(self.sessions)):
            ratio = round(self._limits.soft_limit_ratio * 100)
            log.warning(
                "%d sessions open, over %d%% of max_sessions (%d)", len(self.sessions), ratio, self._limits.max_sessions
            )
        self._hub.send_back(adapter.peer, encode("spawn", sid=sid))

    def _admit_open(self, peer: bytes, ref: int | str) -> None:
        limits = self._limits
        if limits.on_session_limit == "refuse" and len(self.sessions) >= limits.max_sessions:
            raise FrameError(
                ErrorCode.TOO_MANY_SESSIONS,
                f"the daemon has {len(self.sessions)} sessions open, its limit (max_sessions); close one first",
                ref=ref,
                data={"scope": "global", "current": len(self.sessions), "limit": limits.max_sessions},
            )
        client = self.clients.get(peer)
        if client is None:
            client = self.clients[peer] = ClientLink(
                TokenBucket(limits.open_rate_per_client, limits.open_burst, time.monotonic())
            )
        wait = client.bucket.take(time.monotonic())
        if wait > 0:
            raise FrameError(
                ErrorCode.RATE_LIMITED,
                f"this client opens sessions faster than {limits.open_rate_per_client:g}/s; retry after "
                "data.retry_after_ms",
                ref=ref,
                data={"retry_after_ms": max(1, round(wait * 1000))},
            )

    def _pick_adapter(self, server: str, ref: int | str) -> AdapterLink:
        if not any(a.server == server for a in self.adapters.values()):
            known = sorted({a.server for a in self.adapters.values()})
            message = f"no server named {server!r} is registered; known servers: {', '.join(known) or 'none'}"
            raise FrameError(ErrorCode.UNKNOWN_SERVER, message, ref=ref)
        adapter = self._free_adapter(server)
        if adapter is None:
            message = f"every adapter of server {server!r} is at its session capacity; close a session or add adapters"
            raise FrameError(ErrorCode.SERVER_BUSY, message, ref=ref)
        return adapter

    def _free_adapter(self, server: str) -> AdapterLink | None:
        """The adapter of ``server`` with the fewest sessions and room for one more."""
        free = [a for a in self.adapters.values() if a.server == server and not a.full]
        return min(free, key=lambda a: len(a.sessions)) if free else None

    def _control(self, peer: bytes, frame: dict[str, Any]) -> None:
        self.control.handle(peer, frame["ref"], frame["op"], frame.get("args") or {})

    def _refuse(self, peer: bytes, exc: FrameError) -> None:
        self.errors[str(exc.code)] += 1
        self.observers.metrics.bad_frames.labels(str(exc.code)).inc()
        log.info("refused a frame from client %s: %s", peer.hex(), exc)
        self._hub.send_front(peer, exc.to_frame())

    # -- adapters ------------------------------------------------------------------

    def on_back(self, peer: bytes, data: bytes) -> None:
        try:
            frame = decode(data, ADAPTER_TO_DAEMON, max_bytes=self._options.max_frame_bytes)
        except FrameError as exc:
            self.errors[f"adapter_{exc.code}"] += 1
            log.warning("refused a frame from adapter %s: %s", peer.hex(), exc)
            self._hub.send_back(peer, exc.to_frame())
            return
        if frame["t"] == "register":
            self._register(peer, frame)
            return
        adapter = self.adapters.get(peer)
        if adapter is None:
            self._hub.send_back(peer, FrameError(ErrorCode.NOT_REGISTERED, "send 'register' first").to_frame())
            return
        adapter.last_seen = time.monotonic()
        kind = frame["t"]
        if kind == "heartbeat":
            return
        route = self.sessions.get(frame["sid"])
        if route is None or route.adapter is not adapter:
            log.debug("late %s frame from adapter %s for session %s", kind, adapter.server, frame["sid"])
            if kind != "exited":  # a server process nobody wants: have the adapter stop it
                self._hub.send_back(peer, encode("close", sid=frame["sid"], reason="unknown session"))
            return
        if kind == "mcp":
            message: object = FromServer(frame["msg"])
        elif kind == "spawned":
            message = ServerStarted(frame["pid"])
        else:
            message = ServerExited(frame.get("code"), frame["reason"])
        try:
            route.actor.tell(message)
        except pykka.ActorDeadError:
            log.debug("session %s ended before its %s frame arrived", frame["sid"], kind)

    def _register(self, peer: bytes, frame: dict[str, Any]) -> None:
        adapter_id, server = frame.get("adapter_id"), frame["server"]
        link = next((a for a in self.adapters.values() if adapter_id and a.adapter_id == adapter_id), None)
        if link is not None and link.peer != peer:
            log.info(
                "adapter %s of server %r reconnected; its %d sessions follow it", adapter_id, server, len(link.sessions)
            )
            del self.adapters[link.peer]
            link.peer = peer
            self.adapters[peer] = link
            for sid in link.sessions:
                self._tell_route(sid, Rebound(peer))
        elif link is None:
            capacity = frame["capacity"] or "unlimited"
            log.info("adapter for server %r registered (capacity %s)", server, capacity)
            link = self.adapters[peer] = AdapterLink(
                peer, server, max(0, frame["capacity"]), frame.get("pid"), adapter_id
            )
        link.last_seen = time.monotonic()
        self._hub.send_back(peer, encode("registered", server=server))
        self._check_expected()
        for sid in [sid for sid in self._parked if self._server_of(sid) == server]:
            self.respawn(sid)

    def expect(self, adapters: Counter[str]) -> Future[None]:
        """A future that completes once this many adapters per server have registered."""
        self._expected = (adapters, Future())
        self._check_expected()
        return self._expected[1]

    def _check_expected(self) -> None:
        if self._expected is None or self._expected[1].done():
            return
        have = Counter(a.server for a in self.adapters.values())
        if all(have[name] >= count for name, count in self._expected[0].items()):
            self._expected[1].set_result(None)

    def adapter_gone(self, adapter_id: str, reason: str) -> None:
        """An adapter process ended: its sessions' servers are gone with it."""
        for link in [a for a in self.adapters.values() if a.adapter_id == adapter_id]:
            self._adapter_lost(link, reason)

    def _adapter_lost(self, link: AdapterLink, reason: str) -> None:
        """Forget an adapter; each of its sessions follows its server's ``on_exit`` policy."""
        log.error("adapter of server %r (pid %s) lost: %s", link.server, link.pid, reason)
        self.adapters.pop(link.peer, None)
        self.on_adapter_lost(link.adapter_id, reason)
        for sid in list(link.sessions):
            self._tell_route(sid, ServerExited(None, f"adapter lost: {reason}"))

    def respawn(self, sid: str) -> None:
        """Start a new server process for a session whose process ended (on_exit = "restart")."""
        route = self.sessions.get(sid)
        if route is None:
            self._parked.pop(sid, None)
            return
        adapter = route.adapter if route.adapter.peer in self.adapters else self._free_adapter(route.adapter.server)
        if adapter is None:
            if sid not in self._parked:
                self._parked[sid] = time.monotonic() + self._options.respawn_timeout
                log.warning("session %s waits for an adapter of server %r", sid, route.adapter.server)
            return
        self._parked.pop(sid, None)
        if route.adapter is not adapter:
            route.adapter.sessions.discard(sid)
            adapter.sessions.add(sid)
            route.adapter = adapter
            self._tell_route(sid, Rebound(adapter.peer))
        self._hub.send_back(adapter.peer, encode("spawn", sid=sid))

    def _server_of(self, sid: str) -> str | None:
        route = self.sessions.get(sid)
        return route.adapter.server if route is not None else None

    def _tell_route(self, sid: str, message: object) -> None:
        route = self.sessions.get(sid)
        if route is not None:
            try:
                route.actor.tell(message)
            except pykka.ActorDeadError:
                pass

    def _watch_adapters(self, now: float) -> None:
        for link in [a for a in self.adapters.values() if now - a.last_seen > self._options.adapter_timeout]:
            self._adapter_lost(link, f"no frame or heartbeat for {now - link.last_seen:.1f}s")
        for sid, deadline in list(self._parked.items()):
            if now >= deadline:
                del self._parked[sid]
                reason = (
                    f"no adapter of server {self._server_of(sid)!r} came back within {self._options.respawn_timeout:g}s"
                )
                self._tell_route(sid, ServerExited(None, reason, restartable=False))

    # -- sessions report -------------------------------------------------------------

    def pending_changed(self, sid: str, delta: int) -> None:
        self.pending.apply(delta)
        self._pending_by_session[sid] = self._pending_by_session.get(sid, 0) + delta
        self._warn_pending()

    def metrics_snapshot(self) -> dict[str, Any]:
        """Figures this thread owns, for the Prometheus collector (asked through the hub)."""
        hub = self._hub.stats_now()
        counts = [self._pending_by_session.get(sid, 0) for sid in self.sessions]
        frames = {
            "in": dict(hub.frames_in),
            "out": dict(hub.frames_out),
            "dropped": dict(hub.dropped),
            "held": dict(hub.held),
        }
        return {
            "sessions_open": len(self.sessions),
            "pending": self.pending.count,
            "pending_per_session": counts,
            "frames": frames,
        }

    def _warn_pending(self) -> None:
        if self._pending_soft.crossed(self.pending.count):
            log.warning(
                "%d requests pending daemon-wide, over %d%% of max_pending_total (%d)",
                self.pending.count,
                round(self._limits.soft_limit_ratio * 100),
                self._limits.max_pending_total,
            )

    def session_closing(self, sid: str, reason: str) -> None:
        """The session is ending: a resync must not count it among the live ones."""
        route = self.sessions.get(sid)
        if route is not None:
            route.closing = True

    def session_finished(self, sid: str) -> None:
        """Forget a session (called on the loop thread when its actor ends)."""
        route = self.sessions.pop(sid, None)
        self._pending_by_session.pop(sid, None)
        if route is not None:
            try:
                route.actor.tell(Forgotten())
            except pykka.ActorDeadError:
                pass  # it crashed: already stopped
            self.to_child("evictor", Forget(sid))
            route.adapter.sessions.discard(sid)
            client = self.clients.get(route.client)
            if client is not None:
                client.sessions.discard(sid)
        self._sessions_soft.crossed(len(self.sessions))
        if self._drained is not None and not self.sessions and not self._drained.done():
            self._drained.set_result(None)

    # -- lifecycle -----------------------------------------------------------------

    def on_tick(self, now: float) -> None:
        """The daemon's clock: the janitor's passes hang off it."""
        self.to_supervisor(TICK)
        self._watch_adapters(now)
        self.control.on_tick(now)
        if len(self.clients) > 2 * len(self.sessions) + 64:
            self.clients = {peer: c for peer, c in self.clients.items() if c.sessions}

    def begin_shutdown(self, reason: str = "shutdown") -> Future[None]:
        """Refuse new sessions and close every open one; the future completes when none is left."""
        self.stopping = True
        self._drained = Future()
        for route in list(self.sessions.values()):
            try:
                route.actor.tell(CloseSession(reason))
            except pykka.ActorDeadError:
                pass
        if not self.sessions:
            self._drained.set_result(None)
        return self._drained

    def reschedule_all(self) -> None:
        """A new janitor starts empty: every session asks it again for its next wake-up."""
        for route in self.sessions.values():
            try:
                route.actor.tell(Reschedule())
            except pykka.ActorDeadError:
                pass

    def resync_evictor(self) -> None:
        """A new evictor starts empty: send it every open session, in opening order."""
        live = tuple((sid, route.actor) for sid, route in self.sessions.items() if not route.closing)
        self.to_child("evictor", Resync(live))

    def actors(self) -> list[pykka.ActorRef[SessionActor]]:
        return [route.actor for route in self.sessions.values()]


def _request_id(msg: object) -> int | str | None:
    value = msg.get("id") if isinstance(msg, dict) else None
    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None
