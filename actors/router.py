"""`Router`: the daemon's frame dispatcher, running on the hub's loop thread.

The hub calls `Router.on_front` and `Router.on_back` for every inbound frame.
The router validates the envelope, answers bad frames with an ``error`` frame,
and hands session traffic to the right `SessionActor` with a ``tell``. Its
tables (sessions by id, adapters by peer) are touched only on the loop thread,
so they have one owner and need no lock; actors change them by asking the hub
to run a router method (`session_finished`).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import pykka

from actors.session import (
    CloseSession,
    FromClient,
    FromServer,
    Peers,
    ServerExited,
    ServerStarted,
    SessionActor,
)
from actors.session_core import SessionCore
from transport.frames import (
    ADAPTER_TO_DAEMON,
    CLIENT_TO_DAEMON,
    ErrorCode,
    FrameError,
    decode,
    encode,
)
from transport.hub import Hub

log = logging.getLogger("troupe.router")


@dataclass(eq=False)
class AdapterLink:
    """A registered adapter: the peer id on the back socket and its sessions."""

    peer: bytes
    server: str
    capacity: int
    pid: int | None = None
    sessions: set[str] = field(default_factory=set)

    @property
    def full(self) -> bool:
        return self.capacity > 0 and len(self.sessions) >= self.capacity


@dataclass(eq=False, slots=True)
class Route:
    actor: pykka.ActorRef[SessionActor]
    client: bytes
    adapter: AdapterLink


@dataclass(frozen=True)
class RouterOptions:
    max_frame_bytes: int = 4 * 1024 * 1024


class Router:
    """Implements `transport.hub.HubHandler` for the daemon."""

    def __init__(self, hub: Hub, options: RouterOptions | None = None, *, version: str = "") -> None:
        self._hub = hub
        self._options = options or RouterOptions()
        self._version = version
        self.sessions: dict[str, Route] = {}
        self.adapters: dict[bytes, AdapterLink] = {}
        self.errors: Counter[str] = Counter()
        self._stopping = False
        self._drained: Future[None] | None = None
        self._expected: tuple[Counter[str], Future[None]] | None = None
        self._ctl: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"health": self._health}

    # -- clients -------------------------------------------------------------------

    def on_front(self, peer: bytes, data: bytes) -> None:
        try:
            frame = decode(data, CLIENT_TO_DAEMON, max_bytes=self._options.max_frame_bytes)
            kind = frame["t"]
            if kind == "mcp":
                self._tell_session(peer, frame, FromClient(frame["msg"]))
            elif kind == "open":
                self._open(peer, frame)
            elif kind == "close":
                self._tell_session(peer, frame, CloseSession("client", frame.get("ref")))
            else:
                self._control(peer, frame)
        except FrameError as exc:
            self._refuse(peer, exc)

    def _tell_session(self, peer: bytes, frame: dict[str, Any], message: object) -> None:
        sid, ref = frame["sid"], frame.get("ref")
        msg_id = frame["msg"].get("id") if "msg" in frame else None
        msg_id = msg_id if isinstance(msg_id, (int, str)) and not isinstance(msg_id, bool) else None
        route = self.sessions.get(sid)
        if route is None:
            raise FrameError(
                ErrorCode.UNKNOWN_SESSION,
                f"no open session {sid!r}; it was closed or never opened: open a new session",
                sid=sid,
                id=msg_id,
                ref=ref,
            )
        if route.client != peer:
            raise FrameError(
                ErrorCode.NOT_OWNER,
                f"session {sid!r} belongs to another client connection",
                sid=sid,
                id=msg_id,
                ref=ref,
            )
        try:
            route.actor.tell(message)
        except pykka.ActorDeadError:
            raise FrameError(
                ErrorCode.SESSION_CLOSED, f"session {sid!r} has ended; open a new session", sid=sid, id=msg_id, ref=ref
            ) from None

    def _open(self, peer: bytes, frame: dict[str, Any]) -> None:
        ref, server = frame["ref"], frame["server"]
        if self._stopping:
            raise FrameError(ErrorCode.SHUTTING_DOWN, "the daemon is shutting down; try again later", ref=ref)
        adapter = self._pick_adapter(server, ref)
        sid = secrets.token_urlsafe(16)
        core = SessionCore(sid, server, time.monotonic())
        actor = SessionActor.start(core, Peers(peer, adapter.peer, ref), self._hub, self.session_finished)
        self.sessions[sid] = Route(actor, peer, adapter)
        adapter.sessions.add(sid)
        self._hub.send_back(adapter.peer, encode("spawn", sid=sid))

    def _pick_adapter(self, server: str, ref: int | str) -> AdapterLink:
        candidates = [a for a in self.adapters.values() if a.server == server]
        if not candidates:
            known = sorted({a.server for a in self.adapters.values()})
            raise FrameError(
                ErrorCode.UNKNOWN_SERVER,
                f"no server named {server!r} is registered; known servers: {', '.join(known) or 'none'}",
                ref=ref,
            )
        free = [a for a in candidates if not a.full]
        if not free:
            raise FrameError(
                ErrorCode.SERVER_BUSY,
                f"every adapter of server {server!r} is at its session capacity; close a session or add adapters",
                ref=ref,
            )
        return min(free, key=lambda a: len(a.sessions))

    def _control(self, peer: bytes, frame: dict[str, Any]) -> None:
        ref, op = frame["ref"], frame["op"]
        handler = self._ctl.get(op)
        if handler is None:
            error = {
                "code": str(ErrorCode.UNKNOWN_OP),
                "message": f"unknown control op {op!r}; known: {sorted(self._ctl)}",
            }
            self._hub.send_front(peer, encode("ctl", ref=ref, ok=False, error=error))
            return
        self._hub.send_front(peer, encode("ctl", ref=ref, ok=True, result=handler(frame.get("args") or {})))

    def _health(self, _args: dict[str, Any]) -> dict[str, Any]:
        servers: Counter[str] = Counter(a.server for a in self.adapters.values())
        return {
            "status": "stopping" if self._stopping else "serving",
            "version": self._version,
            "sessions": len(self.sessions),
            "servers": dict(servers),
        }

    def _refuse(self, peer: bytes, exc: FrameError) -> None:
        self.errors[str(exc.code)] += 1
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
        route = self.sessions.get(frame["sid"])
        if route is None or route.adapter is not adapter:
            log.debug("late %s frame from adapter %s for session %s", frame["t"], adapter.server, frame["sid"])
            return
        kind = frame["t"]
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
        if peer in self.adapters:
            log.info("adapter %s registered again", peer.hex())
        else:
            log.info(
                "adapter for server %r registered (capacity %s)", frame["server"], frame["capacity"] or "unlimited"
            )
        self.adapters[peer] = AdapterLink(peer, frame["server"], max(0, frame["capacity"]), frame.get("pid"))
        self._hub.send_back(peer, encode("registered", server=frame["server"]))
        self._check_expected()

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

    def adapter_gone(self, pid: int, reason: str) -> None:
        """An adapter process ended: its sessions' servers are gone with it."""
        for peer, adapter in list(self.adapters.items()):
            if adapter.pid != pid:
                continue
            del self.adapters[peer]
            for sid in list(adapter.sessions):
                route = self.sessions.get(sid)
                if route is not None:
                    try:
                        route.actor.tell(ServerExited(None, reason))
                    except pykka.ActorDeadError:
                        pass

    # -- lifecycle -----------------------------------------------------------------

    def session_finished(self, sid: str) -> None:
        """Forget a session (called on the loop thread when its actor ends)."""
        route = self.sessions.pop(sid, None)
        if route is not None:
            route.adapter.sessions.discard(sid)
        if self._drained is not None and not self.sessions and not self._drained.done():
            self._drained.set_result(None)

    def begin_shutdown(self) -> Future[None]:
        """Refuse new sessions and close every open one; the future completes when none is left."""
        self._stopping = True
        self._drained = Future()
        for route in list(self.sessions.values()):
            try:
                route.actor.tell(CloseSession("shutdown"))
            except pykka.ActorDeadError:
                pass
        if not self.sessions:
            self._drained.set_result(None)
        return self._drained

    def on_tick(self, now: float) -> None:
        """The daemon's clock; periodic work (expiry, eviction) hangs off it."""

    def actors(self) -> list[pykka.ActorRef[SessionActor]]:
        return [route.actor for route in self.sessions.values()]
