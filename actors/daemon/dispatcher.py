"""`Dispatcher`: the daemon's frame dispatcher, running on the hub's loop thread.

The hub calls `Dispatcher.on_front` and `Dispatcher.on_back` for every inbound frame.
The dispatcher validates the envelope, answers bad frames with an ``error`` frame,
applies the daemon-wide admission rules (open-session limit, open rate per
client, the global pending-request limit) and hands session traffic to the
right `SessionActor` with a ``tell``. Its tables are touched only on the loop
thread, so they have one owner and need no lock; actors change them by asking
the hub to run a dispatcher method (`session_finished`, `pending_changed`).
"""

from __future__ import annotations

import hmac
import itertools
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import pykka

from mcp_troupe.actors.core.adapters import AdapterLink, AdapterTable
from mcp_troupe.actors.core.admission import Admission, ClientLink
from mcp_troupe.actors.core.answers import as_id, id_of
from mcp_troupe.actors.core.deadlines import Wakeups
from mcp_troupe.actors.core.options import PRIORITY_METHODS, Limits, ServerPolicy
from mcp_troupe.actors.core.recency import Recency
from mcp_troupe.actors.core.records import (
    MAX_RECORD_BYTES,
    RecordError,
    SessionRecord,
    Write,
    encode_record,
    token_digest,
)
from mcp_troupe.actors.core.refusals import RefusalLog
from mcp_troupe.actors.core.session import SessionCore
from mcp_troupe.actors.core.write_behind import WriteBehind
from mcp_troupe.actors.daemon.control import ControlPlane
from mcp_troupe.actors.daemon.passivation import Passivated
from mcp_troupe.actors.daemon.tables import Route
from mcp_troupe.actors.shells.loop_actor import tell_now
from mcp_troupe.actors.shells.session import (
    ClientFrameRefused,
    CloseSession,
    Detached,
    Forgotten,
    FromClient,
    FromServer,
    PassivatedShell,
    Peers,
    Reattached,
    Rebound,
    ServerExited,
    ServerStarted,
    ServerStderr,
    SessionActor,
    SessionLinks,
    Wake,
)
from mcp_troupe.actors.shells.supervisor import TICK, Forward
from mcp_troupe.actors.telemetry.observe import Observers
from mcp_troupe.transport.hub.loop import BACK, FRONT, Hub
from mcp_troupe.transport.keys import ANY_SERVER, VOUCH
from mcp_troupe.transport.wire import jsonrpc
from mcp_troupe.transport.wire.frames import MAX_ITEMS, ErrorCode, FrameError, encode
from mcp_troupe.transport.wire.kinds import (
    UPSTREAM_FAULTS,
    AttachFrame,
    ClientMcpFrame,
    CloseFrame,
    FaultFrame,
    OpenFrame,
    RegisterFrame,
    decode_from_adapter,
    decode_from_client,
)

log = logging.getLogger("troupe.dispatcher")


@dataclass(frozen=True)
class DispatcherOptions:
    max_frame_bytes: int = 4 * 1024 * 1024
    max_frame_items: int = MAX_ITEMS
    """Elements (map entries and array items) one client frame may hold."""
    max_server_frame_bytes: int = 32 * 1024 * 1024 + 64 * 1024
    """Largest frame an adapter may send (a server's message and its envelope)."""
    max_server_frame_items: int = 1_000_000
    limits: Limits = field(default_factory=Limits)
    fault_injection: bool = False
    """Allow the ``inject_fault`` control operation (tests, drills); off by default."""
    server_policies: Mapping[str, ServerPolicy] = field(default_factory=dict)
    """``on_exit`` policy per server name; servers not listed fail their sessions."""
    pass_env: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Environment variables a session of each server may bring (``[servers.NAME] pass_env``)."""
    adapter_timeout: float = 5.0
    """Seconds of silence (no frame, no heartbeat) after which an adapter counts as lost."""
    respawn_timeout: float = 15.0
    """Seconds a session whose adapter was lost waits for another adapter of its server."""
    persist: bool = True
    """Keep session records for the store (``[daemon] store`` is not ``none``)."""
    store_queue: int = 100_000
    """Sessions whose changes may wait for the store at once (`WriteBehind`)."""
    store_batch: int = 1000
    """Changes the store actor writes in one transaction."""
    lost_kept: int = 100_000
    """Sessions lost in a restart remembered (id only), so that an ``attach`` to one is told why."""
    orphan_grace: float = 60.0
    """Seconds stored sessions wait for their adapter after a restart (``[daemon] orphan_grace``)."""


class Dispatcher:
    """Implements `mcp_troupe.transport.hub.loop.HubHandler` for the daemon."""

    def __init__(
        self,
        hub: Hub,
        options: DispatcherOptions | None = None,
        *,
        supervisor: Callable[[object], None] = lambda _msg: None,
        observers: Observers | None = None,
        version: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._hub = hub
        self._clock = clock
        """The time, read once per frame or tick and passed to every decision (a fake one in unit tests)."""
        self._options = options = options or DispatcherOptions()
        self._limits = limits = options.limits
        self.version = version
        self.observers = observers or Observers()
        self.fault_injection = options.fault_injection
        self.pass_env = options.pass_env
        self.supervisor = supervisor
        """Tells the supervisor; children are reached through it by id (`Forward`)."""
        self.now = clock()
        """The daemon's clock as of the last frame or tick."""
        self.sessions: dict[str, Route] = {}
        self.adapter_table = AdapterTable(options.adapter_timeout, options.respawn_timeout)
        self.clients: dict[bytes, ClientLink] = {}
        self.errors: Counter[str] = Counter()
        self.refusals = RefusalLog()
        self.admission = Admission(limits, self.now)
        self.pending = self.admission.pending
        self._links = SessionLinks(hub, self, self.to_child, self.observers)
        self.stopping = False
        self._drained: Future[None] | None = None
        self.on_adapter_lost: Callable[[str | None, str], None] = lambda adapter_id, reason: None
        """Told (on the loop thread) when an adapter goes silent, so its process can be replaced."""
        self._expected: tuple[Counter[str], Future[None]] | None = None
        self.control = ControlPlane(self, hub)
        self._pending_by_session: dict[str, int] = {}
        self.wakeups: Wakeups[str] = Wakeups()
        """When each session next needs `Wake`: the janitor's passes take what is due."""
        self.recency = Recency()
        """Sessions by last activity: the evictor's order."""
        self.closing = 0
        """Sessions in ``self.sessions`` that are closing: they no longer count against max_sessions."""
        self.evictions = 0
        self.detached: dict[str, float] = {}
        """Sessions whose client's connection ended, and when they close unless attached again."""
        self.persist = options.persist
        self.store_queue = WriteBehind(options.store_queue)
        """Session records not yet written: the store actor takes them in batches (`take_store_batch`)."""
        self.store_errors = 0
        self.lost: dict[str, str] = {}
        """Sessions the store held that did not survive the daemon's restart, and why (at most ``lost_kept``)."""
        self.restorable: dict[str, SessionRecord] = {}
        """Stored sessions of the previous daemon, waiting for their adapter to report their server alive."""
        self._restore_until = 0.0
        self.restored = 0
        self.passivated: dict[str, Passivated] = {}
        """Sessions idle past ``passivate_after``: no actor, no server process, their record kept."""
        self.passivations = 0
        self.reactivations = 0
        self.passivated_bytes = 0
        """Bytes of the records the passivated sessions hold (bounded by ``max_passivated_bytes``)."""
        self.reload_keys: Callable[[Callable[[dict[str, Any] | str], None]], None] | None = None
        """Set by the daemon when it has CurveZMQ keys: the ``security.reload`` operation."""

    @property
    def adapters(self) -> dict[bytes, AdapterLink]:
        """The registered adapters by connection (for reading: the table is `adapter_table`)."""
        return {link.peer: link for link in self.adapter_table}

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
        self.now = self._clock()
        try:
            o = self._options
            frame = decode_from_client(data, max_bytes=o.max_frame_bytes, max_items=o.max_frame_items)
            if frame["t"] == "mcp":
                self._client_message(peer, frame)
            elif frame["t"] == "open":
                self._open(peer, frame)
            elif frame["t"] == "close" and frame["sid"] in self.passivated:
                self._close_passivated(peer, frame["sid"], frame.get("ref"))
            elif frame["t"] == "close":
                route = self._route(peer, frame)
                self._tell(route, CloseSession("client", frame.get("ref")), frame)
                self.session_closing(frame["sid"], "client")  # from now on no attach can take it
            elif frame["t"] == "attach":
                self._attach(peer, frame)
            else:
                self.control.handle(peer, frame["ref"], frame["op"], frame.get("args") or {})
        except FrameError as exc:
            self._refuse(peer, exc)

    def _client_message(self, peer: bytes, frame: ClientMcpFrame) -> None:
        if "sid" not in frame:
            frame["sid"] = self._only_session_of(peer, frame)
        route = self._route(peer, frame)
        self.recency.touch(frame["sid"], self.now)
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
                self._pending_by_session[frame["sid"]] = self._pending_by_session.get(frame["sid"], 0) + 1
                self._warn_pending()
        try:
            self._tell(route, FromClient(msg, counted, over), frame, at_once=True)
        except FrameError:
            if counted:
                self.pending_changed(frame["sid"], -1)
            raise

    def _only_session_of(self, peer: bytes, frame: ClientMcpFrame) -> str:
        client = self.clients.get(peer)
        sids = client.sessions if client is not None else set()
        if len(sids) != 1:
            raise FrameError(
                ErrorCode.BAD_FRAME,
                f"'mcp' frame names no session and this client has {len(sids)} open sessions; "
                "add the 'sid' field (it may be left out only when the client has exactly one session)",
                id=id_of(frame["msg"]),
                ref=as_id(frame.get("ref")),
            )
        (sid,) = sids
        log.debug("mcp frame without sid from client %s routed to its only session %s", self.client_label(peer), sid)
        return sid

    def _route(self, peer: bytes, frame: ClientMcpFrame | CloseFrame) -> Route:
        sid, ref = frame["sid"], as_id(frame.get("ref"))
        msg_id = id_of(frame["msg"]) if frame["t"] == "mcp" else None
        route = self.sessions.get(sid)
        if route is None and sid in self.passivated and frame["t"] == "mcp":
            return self._reactivate(sid, peer, msg_id, ref)
        if route is None:
            message = f"no open session {sid!r}; it was closed or never opened: open a new session"
            raise FrameError(ErrorCode.UNKNOWN_SESSION, message, sid=sid, id=msg_id, ref=ref)
        if route.client != peer:
            message = f"session {sid!r} belongs to another client connection"
            raise FrameError(ErrorCode.NOT_OWNER, message, sid=sid, id=msg_id, ref=ref)
        return route

    def _tell(
        self, route: Route, message: object, frame: ClientMcpFrame | CloseFrame, *, at_once: bool = False
    ) -> None:
        try:
            if at_once:
                tell_now(route.actor, message)
            else:
                route.actor.tell(message)
        except pykka.ActorDeadError:
            sid = frame["sid"]
            msg_id = id_of(frame["msg"]) if frame["t"] == "mcp" else None
            message = f"session {sid!r} has ended; open a new session"
            raise FrameError(
                ErrorCode.SESSION_CLOSED, message, sid=sid, id=msg_id, ref=as_id(frame.get("ref"))
            ) from None

    def _open(self, peer: bytes, frame: OpenFrame) -> None:
        ref, server = frame["ref"], frame["server"]
        if self.stopping:
            raise FrameError(ErrorCode.SHUTTING_DOWN, "the daemon is shutting down; try again later", ref=ref)
        now = self.now
        client = self._client(peer)
        self.admission.check_open(client, ref, now)
        adapter = self.adapter_table.pick(server, ref)
        env = self._session_env(server, frame.get("env"), ref)
        victim = self.admission.room(self.open_sessions, self._victim, ref)
        if victim is not None:
            self._evict(victim)
        sid, token = _session_id(), _resume_token(frame.get("token"), ref)  # 128 random bits each
        policy = self._options.server_policies.get(server)
        core = SessionCore(sid, server, now, self._limits, policy, expire_idle=frame.get("expire_idle", False))
        label = client.label + _via(frame.get("via"))
        peers = Peers(peer, adapter.peer, ref, label, stderr=frame.get("stderr", False), token=token)
        actor = SessionActor.start(core, peers, self._links, self._clock)
        conn = self._hub.connection(FRONT, peer)
        owner_key = conn.key if conn is not None else b""
        digest = token_digest(token.encode())
        self.sessions[sid] = Route(actor, peer, adapter, env=env, token_sha256=digest, owner_key=owner_key)
        self.recency.touch(sid, self.now)
        adapter.sessions.add(sid)
        client.sessions.add(sid)
        if self.admission.sessions_alarm(self.open_sessions):
            ratio = round(self._limits.soft_limit_ratio * 100)
            log.warning(
                "%d sessions open, over %d%% of max_sessions (%d)", self.open_sessions, ratio, self._limits.max_sessions
            )
        self._hub.send_back(adapter.peer, encode("spawn", sid=sid, env=env))
        if client.blocked:
            self._hub.send_back(adapter.peer, encode("pause", sid=sid))

    def _attach(self, peer: bytes, frame: AttachFrame) -> None:
        """Move a session to this connection: its resume token (and, with CurveZMQ, its owner's key) says so."""
        sid, ref = frame["sid"], frame["ref"]
        route = self.sessions.get(sid)
        if route is None and sid in self.restorable:
            message = (
                f"session {sid!r} is being restored after a daemon restart (its adapter has not reported back "
                "yet); retry the attach in a moment"
            )
            raise FrameError(ErrorCode.SERVER_BUSY, message, sid=sid, ref=ref, data={"reason": "restoring"})
        if route is None and sid in self.passivated:
            self._attach_passivated(peer, frame)
            return
        if route is None and sid in self.lost:
            message = f"session {sid!r} was lost when the daemon restarted: {self.lost[sid]}; open a new session"
            raise FrameError(ErrorCode.UNKNOWN_SESSION, message, sid=sid, ref=ref)
        if route is None or route.closing:
            message = f"no open session {sid!r}; it was closed or never opened: open a new session"
            raise FrameError(ErrorCode.UNKNOWN_SESSION, message, sid=sid, ref=ref)
        self._check_resume(peer, frame, route.token_sha256, route.owner_key)
        old = self.clients.get(route.client)
        if old is not None:
            old.sessions.discard(sid)
        previous = route.client  # b"": a restored session, which had no client connection yet
        previous_alive = previous not in (peer, b"") and self._hub.connection(FRONT, previous) is not None
        route.client = peer
        client = self._client(peer)
        client.sessions.add(sid)
        self.detached.pop(sid, None)
        log.info("session %s attached to client %s", sid, client.label)
        try:
            route.actor.tell(Reattached(peer, client.label, ref, previous_alive))
        except pykka.ActorDeadError:
            raise FrameError(ErrorCode.SESSION_CLOSED, f"session {sid!r} has ended", sid=sid, ref=ref) from None
        # The client it left may have stopped reading (its server paused): the new one follows its own state.
        self._hub.send_back(route.adapter.peer, encode("pause" if client.blocked else "resume", sid=sid))

    def _check_resume(self, peer: bytes, frame: AttachFrame, token_sha256: str, owner_key: bytes) -> None:
        """An ``attach`` must bring the session's resume token and, with CurveZMQ, come from the key that opened it."""
        sid, ref = frame["sid"], frame["ref"]
        if not hmac.compare_digest(token_digest(frame["token"].encode("utf-8", "replace")), token_sha256):
            raise FrameError(ErrorCode.NOT_OWNER, f"wrong resume token for session {sid!r}", sid=sid, ref=ref)
        conn = self._hub.connection(FRONT, peer)
        if owner_key and not hmac.compare_digest(conn.key if conn is not None else b"", owner_key):
            message = f"session {sid!r} belongs to another key; attach it with the key that opened it"
            raise FrameError(ErrorCode.NOT_OWNER, message, sid=sid, ref=ref)

    def close_detached(self, sid: str) -> None:
        """A detached session holds all the frames it may for its client: it closes."""
        self.detached.pop(sid, None)
        self._tell_route(sid, CloseSession("client_gone"))

    def _detach(self, sids: set[str]) -> None:
        grace, keep = self._limits.reattach_grace, self._limits.reattach_buffer
        for sid in sids:
            self.detached[sid] = self.now + grace
            self._tell_route(sid, Detached(keep))

    def _expire_detached(self, now: float) -> None:
        for sid in [sid for sid, until in self.detached.items() if now >= until]:
            self.close_detached(sid)

    def rights(self, peer: bytes) -> frozenset[str]:
        """What the client behind ``peer`` may do (decided when its connection was let in)."""
        conn = self._hub.connection(FRONT, peer)
        return conn.rights if conn is not None else frozenset()

    def owns(self, peer: bytes, route: Route) -> bool:
        """The client behind ``peer`` is the session's owner: its connection, or (CurveZMQ) its key."""
        if route.client == peer:
            return True
        conn = self._hub.connection(FRONT, peer) if route.owner_key else None
        return conn is not None and hmac.compare_digest(conn.key, route.owner_key)

    def _session_env(self, server: str, env: dict[str, Any] | None, ref: int | str) -> dict[str, str] | None:
        """The variables a session brings for its server, if the server's ``pass_env`` names them all."""
        if not env:
            return None
        allowed = self._options.pass_env.get(server, frozenset())
        refused = sorted(name for name in env if name not in allowed)
        if refused:
            names = ", ".join(repr(name)[:80] for name in refused[:5])
            raise FrameError(
                ErrorCode.FORBIDDEN,
                f"server {server!r} takes no {names} from its sessions; the variables it takes are its "
                f"pass_env in the daemon's config: {sorted(allowed) or 'none'}",
                ref=ref,
            )
        if not all(isinstance(v, str) and len(v) <= MAX_ENV_VALUE for v in env.values()):
            raise FrameError(
                ErrorCode.BAD_ARGS, f"open: env values must be strings of at most {MAX_ENV_VALUE} bytes", ref=ref
            )
        return env

    @property
    def open_sessions(self) -> int:
        """Sessions that count against max_sessions: those not closing."""
        return len(self.sessions) - self.closing

    def _client(self, peer: bytes) -> ClientLink:
        client = self.clients.get(peer)
        if client is None:
            client = self.clients[peer] = self.admission.new_client(self.client_label(peer), self.now)
        return client

    def _victim(self) -> str | None:
        min_idle = self._limits.evict_after_idle

        def busy(sid: str) -> bool:
            route = self.sessions.get(sid)
            return route is None or route.closing or (min_idle > 0 and self._pending_by_session.get(sid, 0) > 0)

        return self.recency.victim(self.now, min_idle, busy)

    def _evict(self, sid: str) -> None:
        route = self.sessions[sid]
        self.session_closing(sid, "evicted")
        self.evictions += 1
        self.observers.metrics.evictions.inc()
        log.info("evicting session %s (least recently active; max_sessions %d)", sid, self._limits.max_sessions)
        try:
            route.actor.tell(CloseSession("evicted"))
        except pykka.ActorDeadError:
            pass

    def enforce_session_limit(self) -> None:
        """The evictor's pass: evict while more sessions are open than max_sessions allows.

        Opening never lets the count pass the limit; this catches a limit
        lowered under the sessions already open.
        """
        if self._limits.on_session_limit != "evict":
            return
        while self.open_sessions > self._limits.max_sessions:
            victim = self._victim()
            if victim is None:
                return
            self._evict(victim)

    def janitor_pass(self, now: float) -> None:
        """Wake every session whose wake-up is due (the janitor's pass, run on this thread)."""
        self.observers.metrics.janitor_passes.inc()
        for sid in self.wakeups.pop_due(now):
            route = self.sessions.get(sid)
            if route is None and sid in self.passivated:
                self.end_passivated(sid, "idle")
            if route is None:
                continue
            try:
                route.actor.tell(Wake())
            except pykka.ActorDeadError:
                log.debug("session %s ended before its wake-up", sid)

    def wake_me_at(self, sid: str, at: float) -> None:
        """A session asks to be woken at ``at`` (monotonic); replaces what it asked before."""
        if sid in self.sessions:
            self.wakeups.set(sid, at)

    def client_label(self, peer: bytes) -> str:
        client = self.clients.get(peer)
        if client is not None:
            return client.label
        conn = self._hub.connection(FRONT, peer)
        return conn.label if conn is not None else "(unknown connection)"

    def _refuse(self, peer: bytes, exc: FrameError) -> None:
        code = str(exc.code)
        self.errors[code] += 1
        self.observers.metrics.bad_frames.labels(code).inc()
        if self.refusals.note(peer, self.client_label(peer), code, self.now):
            log.info("refused a frame from client %s: %s", self.client_label(peer), exc)
            if code in _AUDITED:
                record = {"event": "refused", "code": code, "client": self.client_label(peer), "sid": exc.sid}
                self.observers.audit(record)
        self._hub.send_front(peer, exc.to_frame())
        if exc.too_big:
            self._answer_server_for(peer, exc)

    def _answer_server_for(self, peer: bytes, exc: FrameError) -> None:
        """A client's frame refused for its size may have been a response a server waits for: tell the session."""
        route = self.sessions.get(exc.sid) if exc.sid is not None else None
        if route is None or route.client != peer or exc.id is None:
            return
        limit = (exc.data or {}).get("limit")
        answer = jsonrpc.error(
            exc.id,
            jsonrpc.MESSAGE_TOO_LARGE,
            f"troupe: the client's response was {exc.message}; it never reached this server",
            {"limit": limit},
        )
        try:
            route.actor.tell(ClientFrameRefused(exc.id, answer))
        except pykka.ActorDeadError:
            pass

    # -- adapters ------------------------------------------------------------------

    def on_back(self, peer: bytes, data: bytes) -> None:
        self.now = self._clock()
        try:
            o = self._options
            frame = decode_from_adapter(data, max_bytes=o.max_server_frame_bytes, max_items=o.max_server_frame_items)
        except FrameError as exc:
            self.errors[f"adapter_{exc.code}"] += 1
            log.warning("refused a frame from adapter %s: %s", self._adapter_label(peer), exc)
            self._hub.send_back(peer, exc.to_frame())
            self._answer_refused_reply(peer, exc, len(data))
            return
        if frame["t"] == "register":
            self._register(peer, frame)
            return
        adapter = self.adapter_table.get(peer)
        if adapter is None:
            self._hub.send_back(peer, FrameError(ErrorCode.NOT_REGISTERED, "send 'register' first").to_frame())
            return
        self.adapter_table.seen(adapter, self.now)
        if frame["t"] == "heartbeat":
            return
        if frame["t"] == "unregister":
            self._adapter_left(adapter, frame["reason"])
            return
        if frame["t"] == "fault":
            self._count_fault(adapter, frame)
            return
        sid, kind = frame["sid"], frame["t"]
        route = self.sessions.get(sid)
        if (route is None or route.old_exit) and self._passivated_process(adapter, sid, kind):
            return
        if route is None or route.adapter is not adapter:
            log.debug("late %s frame from adapter %s for session %s", kind, adapter.server, sid)
            if kind != "exited":  # a server process nobody wants: have the adapter stop it
                self._hub.send_back(peer, encode("close", sid=sid, reason="unknown session"))
            return
        message: object
        if frame["t"] == "mcp":
            message = FromServer(frame["msg"], adapter.vouches and frame.get("checked", False))
            self.recency.touch(sid, self.now)
        elif frame["t"] == "spawned":
            message = ServerStarted(frame["pid"])
        elif frame["t"] == "stderr":
            message = ServerStderr(frame["line"])
        else:
            message = ServerExited(frame.get("code"), frame["reason"])
        try:
            if kind == "mcp":
                tell_now(route.actor, message)
            else:
                route.actor.tell(message)
        except pykka.ActorDeadError:
            log.debug("session %s ended before its %s frame arrived", sid, kind)

    def _count_fault(self, adapter: AdapterLink, frame: FaultFrame) -> None:
        """Labels are the adapter's registered server and a known kind: an adapter cannot grow the metrics."""
        kind = frame["kind"] if frame["kind"] in UPSTREAM_FAULTS else "other"
        self.observers.metrics.upstream_faults.labels(adapter.server, kind).inc()

    def _answer_refused_reply(self, peer: bytes, exc: FrameError, size: int) -> None:
        """A server's message refused for its size: whoever waits for it hears so now, not never.

        The refusal read the frame's ``sid`` and message ``id`` from its first bytes; the session treats
        the answer as the server's response (a request of the server with that id is not answered: the
        server is told by the error frame its adapter got)."""
        route = self.sessions.get(exc.sid) if exc.sid is not None else None
        if route is None or route.adapter.peer != peer or exc.id is None:
            return
        limit = (exc.data or {}).get("limit")
        what = (
            f"{size} bytes, over the limit of {limit} bytes" if exc.code == ErrorCode.FRAME_TOO_LARGE else "too large"
        )
        answer = jsonrpc.error(
            exc.id,
            jsonrpc.MESSAGE_TOO_LARGE,
            f"troupe: the server's response is {what} (max_server_frame_bytes / max_server_frame_items in the "
            "daemon's config); ask for less, or have the limit raised",
            {"limit": limit, "size": size},
        )
        try:
            route.actor.tell(FromServer(answer))
        except pykka.ActorDeadError:
            pass

    def _register(self, peer: bytes, frame: RegisterFrame) -> None:
        adapter_id, server = frame.get("adapter_id"), frame["server"]
        conn = self._hub.connection(BACK, peer)
        rights = conn.rights if conn is not None else frozenset()
        if ANY_SERVER not in rights and server not in rights:
            self.errors["adapter_forbidden"] += 1
            self.observers.metrics.forbidden.labels("register").inc()
            who = f"key {conn.user!r}" if conn is not None and conn.user else "this connection"
            log.warning("refused adapter %s for server %r: %s may not serve it", self._adapter_label(peer), server, who)
            self.observers.audit({"event": "refused", "code": "forbidden", "adapter": who, "server": server})
            message = (
                f"{who} may not register an adapter for server {server!r}: put its public key in the daemon's "
                f"adapters_dir/{server}/ (or adapters_dir/ for every server) and reload"
            )
            self._hub.send_back(peer, FrameError(ErrorCode.FORBIDDEN, message).to_frame())
            return
        registration = self.adapter_table.register(
            peer,
            server,
            frame["capacity"],
            frame.get("pid"),
            adapter_id,
            self.now,
            retiring=frame.get("retiring", False),
        )
        link = registration.link
        link.vouches = VOUCH in rights
        if registration.replaced is not None:
            self._adapter_lost(registration.replaced, "its connection registered again as another adapter")
        if registration.reconnected:
            log.info(
                "adapter %s of server %r reconnected; its %d sessions follow it", adapter_id, server, len(link.sessions)
            )
            for sid in link.sessions:
                self._tell_route(sid, Rebound(peer))
        elif registration.new:
            capacity = frame["capacity"] or "unlimited"
            log.info("adapter for server %r registered (capacity %s)", server, capacity)
        self._adopt(link, frame.get("sessions") or {})
        self._hub.send_back(peer, encode("registered", server=server))
        self._check_expected()
        for sid in self.adapter_table.parked_for(server):
            self.respawn(sid)

    def expect(self, adapters: Counter[str]) -> Future[None]:
        """A future that completes once this many adapters per server have registered."""
        self._expected = (adapters, Future())
        self._check_expected()
        return self._expected[1]

    def _check_expected(self) -> None:
        if self._expected is None or self._expected[1].done():
            return
        have = Counter(a.server for a in self.adapter_table if not a.retiring)
        if all(have[name] >= count for name, count in self._expected[0].items()):
            self._expected[1].set_result(None)

    def adapter_gone(self, adapter_id: str, reason: str) -> None:
        """An adapter process ended: its sessions' servers are gone with it."""
        for link in [a for a in self.adapter_table if a.adapter_id == adapter_id]:
            self._adapter_lost(link, reason)

    def _adapter_left(self, link: AdapterLink, reason: str) -> None:
        """An adapter said it leaves (``unregister``): not lost, gone; its sessions follow their ``on_exit``."""
        log.info("adapter of server %r (pid %s) left: %s", link.server, link.pid, reason)
        self.adapter_table.remove(link)
        self._forget_stopping(link)
        for sid in list(link.sessions):
            self._tell_route(sid, ServerExited(None, f"adapter stopped: {reason}"))

    def _adapter_lost(self, link: AdapterLink, reason: str) -> None:
        """Forget an adapter; each of its sessions follows its server's ``on_exit`` policy."""
        log.error("adapter of server %r (pid %s) lost: %s", link.server, link.pid, reason)
        self.adapter_table.remove(link)
        self._forget_stopping(link)
        self.on_adapter_lost(link.adapter_id, reason)
        for sid in list(link.sessions):
            self._tell_route(sid, ServerExited(None, f"adapter lost: {reason}"))

    def respawn(self, sid: str) -> None:
        """Start a new server process for a session whose process ended (on_exit = "restart")."""
        table = self.adapter_table
        route = self.sessions.get(sid)
        if route is None:
            table.unpark(sid)
            return
        current = route.adapter
        adapter = current if table.is_live(current) and not current.retiring else table.free(current.server)
        if adapter is None:
            if table.park(sid, route.adapter.server, self.now):
                log.warning("session %s waits for an adapter of server %r", sid, route.adapter.server)
            return
        table.unpark(sid)
        if route.adapter is not adapter:
            route.adapter.sessions.discard(sid)
            adapter.sessions.add(sid)
            route.adapter = adapter
            self._tell_route(sid, Rebound(adapter.peer))
        self._hub.send_back(adapter.peer, encode("spawn", sid=sid, env=route.env))
        client = self.clients.get(route.client)
        if client is not None and client.blocked:
            self._hub.send_back(adapter.peer, encode("pause", sid=sid))

    # -- passivation -----------------------------------------------------------------

    def passivate(self, sid: str, record: SessionRecord, shell: PassivatedShell) -> bool:
        """A session idle past ``passivate_after`` leaves as its record (on its actor's turn, this thread);
        False when it may not now (the table is full, the session is ending, or the daemon is)."""
        route = self.sessions.get(sid)
        full = len(self.passivated) >= self._limits.max_passivated
        if route is None or route.closing or self.stopping or full or self._pending_by_session.get(sid, 0):
            return False
        full_record = self._full_record(route, record)
        entry = _entry(full_record, route.client, self.now, shell.created_at, route.env)
        size = len(entry.record)
        if size > MAX_RECORD_BYTES or self.passivated_bytes + size > self._limits.max_passivated_bytes:
            return False  # it could not be read back, or the passivated sessions hold all they may
        self.remember(full_record)
        self.passivated_bytes += size
        entry.stopping, entry.seq, entry.stderr = route.adapter, shell.seq, shell.stderr
        self.passivated[sid] = entry
        del self.sessions[sid]
        self._pending_by_session.pop(sid, None)
        self.wakeups.discard(sid)
        self.recency.discard(sid)
        route.adapter.sessions.discard(sid)
        route.actor.tell(Forgotten())
        if shell.expires_at is not None:
            self.wakeups.set(sid, shell.expires_at)
        self.passivations += 1
        return True

    def _reactivate(self, sid: str, peer: bytes, msg_id: int | str | None, ref: int | str | None) -> Route:
        """The client's message for a passivated session: a new actor and server process (handshake replayed)."""
        entry = self.passivated[sid]
        if entry.client != peer:
            message = f"session {sid!r} belongs to another client connection"
            raise FrameError(ErrorCode.NOT_OWNER, message, sid=sid, id=msg_id, ref=ref)
        table = self.adapter_table
        old = entry.stopping
        usable = old is not None and table.is_live(old) and not old.retiring and not old.full
        adapter = old if usable else table.free(entry.server)
        if adapter is None:
            message = f"no adapter of server {entry.server!r} has room to bring back passivated session {sid!r}; retry"
            raise FrameError(ErrorCode.SERVER_BUSY, message, sid=sid, id=msg_id, ref=ref)
        try:
            victim = self.admission.room(self.open_sessions, self._victim, 0)
        except FrameError as exc:
            message = f"passivated session {sid!r} cannot be brought back now: {exc.message}"
            raise FrameError(exc.code, message, sid=sid, id=msg_id, ref=ref, data=exc.data) from None
        try:
            record = entry.decoded(sid)
            policy = self._options.server_policies.get(record.server)
            core = SessionCore.reactivated(record, self.now, self._limits, policy)
        except RecordError as exc:
            self.end_passivated(sid, "failed")
            message = f"session {sid!r} could not be brought back ({exc}); open a new session"
            raise FrameError(ErrorCode.SESSION_CLOSED, message, sid=sid, id=msg_id, ref=ref) from None
        if victim is not None:
            self._evict(victim)
        self._forget_passivated(sid)
        peers = Peers(peer, adapter.peer, 0, record.client_label, stderr=entry.stderr)
        actor = SessionActor.start(core, peers, self._links, self._clock, opened_at=record.created_at, seq=entry.seq)
        route = Route(actor, peer, adapter, env=entry.env, token_sha256=entry.token_sha256, owner_key=entry.owner_key)
        route.old_exit = old is adapter
        self.sessions[sid] = route
        adapter.sessions.add(sid)
        self.recency.touch(sid, self.now)
        self.reactivations += 1
        log.info("session %s reactivated on server %r", sid, entry.server)
        if not route.old_exit:
            self._spawn_for(route, sid)
        return route

    def _spawn_for(self, route: Route, sid: str) -> None:
        self._hub.send_back(route.adapter.peer, encode("spawn", sid=sid, env=route.env))
        client = self.clients.get(route.client)
        if client is not None and client.blocked:
            self._hub.send_back(route.adapter.peer, encode("pause", sid=sid))

    def _passivated_process(self, adapter: AdapterLink, sid: str, kind: str) -> bool:
        """A frame from the server process a session was passivated from: its ``exited`` frees the session id on
        that adapter (a reactivated session's process may start now); whatever else it sent is dropped."""
        entry = self.passivated.get(sid)
        route = self.sessions.get(sid)
        if entry is not None and entry.stopping is adapter:
            if kind == "exited":
                entry.stopping = None
            return True
        if route is not None and route.old_exit and route.adapter is adapter:
            if kind == "exited":
                route.old_exit = False
                self._spawn_for(route, sid)
            return True
        return False

    def _forget_stopping(self, link: AdapterLink) -> None:
        """An adapter went away: the processes of passivated sessions it was stopping went with it."""
        for entry in self.passivated.values():
            if entry.stopping is link:
                entry.stopping = None
        for sid in list(link.sessions):
            route = self.sessions.get(sid)
            if route is not None and route.old_exit:
                route.old_exit = False
                link.sessions.discard(sid)
                self.respawn(sid)

    def _attach_passivated(self, peer: bytes, frame: AttachFrame) -> None:
        sid, ref = frame["sid"], frame["ref"]
        entry = self.passivated[sid]
        self._check_resume(peer, frame, entry.token_sha256, entry.owner_key)
        old = self.clients.get(entry.client)
        if old is not None:
            old.sessions.discard(sid)
        if entry.client not in (peer, b"") and self._hub.connection(FRONT, entry.client) is not None:
            message = "the session was attached to another connection with its resume token"
            self._hub.send_front(entry.client, encode("closed", sid=sid, reason="attached_elsewhere", message=message))
        entry.client = peer
        self._client(peer).sessions.add(sid)
        self.detached.pop(sid, None)
        self._hub.send_front(peer, encode("attached", ref=ref, sid=sid, server=entry.server, seq=entry.seq))

    def _close_passivated(self, peer: bytes, sid: str, ref: int | str | None) -> None:
        entry = self.passivated[sid]
        if entry.client != peer:
            message = f"session {sid!r} belongs to another client connection"
            raise FrameError(ErrorCode.NOT_OWNER, message, sid=sid, ref=as_id(ref))
        self.end_passivated(sid, "client", ref)

    def _forget_passivated(self, sid: str) -> Passivated:
        entry = self.passivated.pop(sid)
        self.passivated_bytes -= len(entry.record)
        return entry

    def end_passivated(self, sid: str, reason: str, ref: int | str | None = None) -> None:
        """A passivated session ends (its client closed it or went away, the daemon stops): no process to stop."""
        entry = self._forget_passivated(sid)
        self.detached.pop(sid, None)
        self.wakeups.discard(sid)
        if self.persist:
            self.store_queue.put(sid, None)
        client = self.clients.get(entry.client)
        if client is not None:
            client.sessions.discard(sid)
        message = f"session closed ({reason})"
        if entry.client:  # b"": restored from the store, no client has attached it yet
            self._hub.send_front(entry.client, encode("closed", sid=sid, reason=reason, message=message, ref=ref))
        self.observers.metrics.sessions_closed.labels(reason).inc()
        log.info("passivated session %s closed: %s", sid, message)

    # -- sessions of the previous daemon ---------------------------------------------

    def expect_restores(self, records: list[SessionRecord]) -> None:
        """The previous daemon's stored sessions: restored as their adapters report their servers alive,
        lost if none has within ``orphan_grace``."""
        now = self._clock()
        self._restore_until = now + self._options.orphan_grace
        self.restorable = {r.sid: r for r in records if r.state != "passivated"}
        wait = max(self._limits.reattach_grace, self._options.orphan_grace)
        for record in records:
            if record.state != "passivated":
                continue
            if len(self.passivated) >= self._limits.max_passivated:
                self._lose({record.sid: f"over max_passivated ({self._limits.max_passivated})"})
                continue
            try:
                entry = _entry(record, b"", now, now)
            except ValueError:
                self._lose({record.sid: "its record's owner key is not hex"})
                continue
            if self.passivated_bytes + len(entry.record) > self._limits.max_passivated_bytes:
                self._lose({record.sid: f"over max_passivated_bytes ({self._limits.max_passivated_bytes})"})
                continue
            self.passivated[record.sid] = entry
            self.passivated_bytes += len(entry.record)
            self.detached[record.sid] = now + wait

    def _adopt(self, link: AdapterLink, sessions: Mapping[str, Any]) -> None:
        """An adapter's live sessions: those stored for it are restored; a server nobody knows is stopped."""
        if len(sessions) > MAX_REGISTERED_SESSIONS:
            log.warning(
                "adapter %s of server %r names %d live sessions; only the first %d are looked at",
                link.adapter_id,
                link.server,
                len(sessions),
                MAX_REGISTERED_SESSIONS,
            )
        for sid, pid in itertools.islice(sessions.items(), MAX_REGISTERED_SESSIONS):
            if sid in link.sessions:
                continue  # a reconnect: the session is this daemon's already
            record = self.restorable.get(sid)
            if record is not None and record.adapter_id == link.adapter_id and record.server == link.server:
                del self.restorable[sid]
                self._restore(link, record, pid)
            else:
                self._hub.send_back(link.peer, encode("close", sid=sid, reason="unknown session"))

    def _restore(self, link: AdapterLink, record: SessionRecord, pid: object) -> None:
        sid = record.sid
        try:
            if not isinstance(pid, int) or isinstance(pid, bool):
                raise RecordError(f"its adapter reports pid {pid!r}")
            policy = self._options.server_policies.get(record.server)
            core = SessionCore.restored(replace(record, pid=pid), self.now, self._limits, policy)
            owner_key = bytes.fromhex(record.owner_key)
        except (RecordError, ValueError) as exc:
            log.warning("stored session %s cannot be restored: %s; stopping its server", sid, exc)
            self._lose({sid: f"its record cannot be restored: {exc}"})
            self._hub.send_back(link.peer, encode("close", sid=sid, reason="not restored"))
            return
        peers = Peers(b"", link.peer, 0, f"{record.client_label} (restored)")
        actor = SessionActor.start(core, peers, self._links, self._clock, opened_at=record.created_at, restored=True)
        self.sessions[sid] = Route(actor, b"", link, token_sha256=record.token_sha256, owner_key=owner_key)
        link.sessions.add(sid)
        self.recency.touch(sid, self.now)
        self.restored += 1
        wait = max(self._limits.reattach_grace, self._options.orphan_grace)
        self.detached[sid] = self.now + wait
        actor.tell(Detached(self._limits.reattach_buffer))
        log.info("session %s of server %r restored (pid %d); it waits %gs for its client", sid, link.server, pid, wait)

    def _expire_restores(self, now: float) -> None:
        if not self.restorable or now < self._restore_until:
            return
        grace = self._options.orphan_grace
        reason = f"its server process was not reported alive within orphan_grace ({grace:g}s)"
        log.warning("%d stored sessions were not restored: %s", len(self.restorable), reason)
        self._lose(dict.fromkeys(self.restorable, reason))
        self.restorable = {}

    def _lose(self, lost: Mapping[str, str]) -> None:
        for sid in lost:
            self.restorable.pop(sid, None)
            if self.persist:
                self.store_queue.put(sid, None)
        self.forget_lost(lost)

    def _tell_route(self, sid: str, message: object) -> None:
        route = self.sessions.get(sid)
        if route is None and isinstance(message, CloseSession) and sid in self.passivated:
            self.end_passivated(sid, message.reason)
        if route is not None:
            try:
                route.actor.tell(message)
            except pykka.ActorDeadError:
                pass

    def _watch_adapters(self, now: float) -> None:
        table = self.adapter_table
        for link in table.silent(now):
            self._adapter_lost(link, f"no frame or heartbeat for {now - link.last_seen:.1f}s")
        for sid, server in table.expired(now):
            reason = f"no adapter of server {server!r} came back within {table.respawn_timeout:g}s"
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
            "sessions_open": self.open_sessions,
            "pending": self.pending.count,
            "pending_per_session": counts,
            "frames": frames,
            "http": self.control.http_counts(),
            "store": self.store_stats(),
            "passivation": self.passivation_stats(),
        }

    def _warn_pending(self) -> None:
        if self.admission.pending_alarm():
            log.warning(
                "%d requests pending daemon-wide, over %d%% of max_pending_total (%d)",
                self.pending.count,
                round(self._limits.soft_limit_ratio * 100),
                self._limits.max_pending_total,
            )

    def remember(self, record: SessionRecord) -> None:
        """A session's record changed: queue it for the store, with what its route knows."""
        route = self.sessions.get(record.sid)
        if route is None or route.closing or not self.persist:
            return
        if (
            not self.store_queue.put(record.sid, self._full_record(route, record))
            and self.store_queue.dropped in _POWERS
        ):
            log.warning(
                "%d session records not stored: the store is behind by %d sessions (store_queue)",
                self.store_queue.dropped,
                len(self.store_queue),
            )

    @staticmethod
    def _full_record(route: Route, record: SessionRecord) -> SessionRecord:
        """The session's record with what its route knows (owner, adapter, env names)."""
        return replace(
            record,
            token_sha256=route.token_sha256,
            owner_key=route.owner_key.hex(),
            adapter_id=route.adapter.adapter_id,
            env_names=tuple(sorted(route.env or ())),
        )

    def store_stats(self) -> dict[str, int]:
        queue = self.store_queue
        return {
            "queued": len(queue),
            "written": queue.written,
            "dropped": queue.dropped,
            "errors": self.store_errors,
            "lost_on_restart": len(self.lost),
            "restoring": len(self.restorable),
            "restored": self.restored,
        }

    def passivation_stats(self) -> dict[str, int]:
        return {
            "passivated": len(self.passivated),
            "passivations": self.passivations,
            "reactivations": self.reactivations,
        }

    def take_store_batch(self) -> list[Write]:
        return self.store_queue.take(self._options.store_batch)

    def store_failed(self, _why: str) -> None:
        self.store_errors += 1

    def forget_lost(self, lost: Mapping[str, str]) -> None:
        """Sessions of the store that are gone (start-up, already deleted): an ``attach`` to one is told why."""
        for sid, reason in lost.items():
            if len(self.lost) >= self._options.lost_kept:
                break
            self.lost[sid] = reason

    def session_closing(self, sid: str, reason: str) -> None:
        """The session is ending: it no longer counts against max_sessions, nor can it be evicted."""
        route = self.sessions.get(sid)
        if route is not None and not route.closing:
            route.closing = True
            self.closing += 1
            self.recency.discard(sid)

    def session_finished(self, sid: str) -> None:
        """Forget a session (called on the loop thread when its actor ends)."""
        route = self.sessions.pop(sid, None)
        self._pending_by_session.pop(sid, None)
        self.detached.pop(sid, None)
        self.wakeups.discard(sid)
        self.recency.discard(sid)
        if route is not None:
            if self.persist:
                self.store_queue.put(sid, None)
            if route.closing:
                self.closing -= 1
            try:
                route.actor.tell(Forgotten())
            except pykka.ActorDeadError:
                pass  # it crashed: already stopped
            route.adapter.sessions.discard(sid)
            client = self.clients.get(route.client)
            if client is not None:
                client.sessions.discard(sid)
        self.admission.sessions_alarm(self.open_sessions)
        if self._drained is not None and not self.sessions and not self._drained.done():
            self._drained.set_result(None)

    # -- lifecycle -----------------------------------------------------------------

    def on_tick(self, now: float) -> None:
        """The daemon's clock: the janitor's and evictor's passes hang off it."""
        self.now = now
        self.to_supervisor(TICK)
        self._watch_adapters(now)
        self._expire_restores(now)
        if self.detached:
            self._expire_detached(now)
        self.control.on_tick(now)
        window = self.refusals.window
        for label, counts in self.refusals.suppressed(now):
            total = sum(counts.values())
            log.info("refused %d more frame(s) from %s in the last %gs (%s)", total, label, window, _codes(counts))
            if counts.keys() & _AUDITED:
                audited = {code: n for code, n in counts.items() if code in _AUDITED}
                self.observers.audit({"event": "refused", "client": label, "counts": audited, "window_s": window})
        if len(self.clients) > 2 * len(self.sessions) + 64:
            self.clients = {peer: c for peer, c in self.clients.items() if c.sessions}

    # -- connections ---------------------------------------------------------------

    def on_peer_lost(self, which: int, peer: bytes, reason: str) -> None:
        """A client's connection ended, or it stopped reading past its share: end its sessions."""
        if which == BACK:
            log.debug("connection of adapter %s ended (%s)", self._adapter_label(peer), reason)
            link = self.adapter_table.get(peer)
            if link is not None and reason == "key_revoked":
                self._adapter_lost(link, "its key was revoked")
            return
        client = self.clients.get(peer) if reason == "not_reading" else self.clients.pop(peer, None)
        if client is None or not client.sessions:
            return
        if reason == "disconnected" and self._limits.reattach_grace > 0:
            grace = self._limits.reattach_grace
            log.info(
                "client %s %s: its %d session(s) wait %gs for it",
                client.label,
                _LOST[reason],
                len(client.sessions),
                grace,
            )
            self._detach(client.sessions)
            return
        close = _CLOSE_REASON[reason]
        log.info("client %s %s: closing its %d session(s)", client.label, _LOST[reason], len(client.sessions))
        for sid in list(client.sessions):
            self._tell_route(sid, CloseSession(close))

    def on_peer_blocked(self, which: int, peer: bytes, blocked: bool) -> None:
        """Frames for a client wait in the hub: pause its sessions' servers until it reads again."""
        client = self.clients.get(peer) if which == FRONT else None
        if client is None or client.blocked == blocked:
            return
        client.blocked = blocked
        log.debug("client %s %s", client.label, "stopped reading: pausing its servers" if blocked else "reads again")
        kind = "pause" if blocked else "resume"
        for sid in client.sessions:
            route = self.sessions.get(sid)
            if route is not None and not route.closing:
                self._hub.send_back(route.adapter.peer, encode(kind, sid=sid))

    def _adapter_label(self, peer: bytes) -> str:
        link = self.adapter_table.get(peer)
        if link is not None:
            return f"{link.server!r} (pid {link.pid})"
        conn = self._hub.connection(BACK, peer)
        return conn.label if conn is not None else "(unknown connection)"

    def begin_shutdown(self, reason: str = "shutdown") -> Future[None]:
        """Refuse new sessions and close every open one; the future completes when none is left."""
        self.stopping = True
        self._drained = Future()
        for sid in list(self.passivated):
            self.end_passivated(sid, reason)
        for route in list(self.sessions.values()):
            try:
                route.actor.tell(CloseSession(reason))
            except pykka.ActorDeadError:
                pass
        if not self.sessions:
            self._drained.set_result(None)
        return self._drained

    def actors(self) -> list[pykka.ActorRef[SessionActor]]:
        return [route.actor for route in self.sessions.values()]


MAX_REGISTERED_SESSIONS = 100_000
"""Live sessions of one ``register`` the daemon looks at (restores, or has stopped)."""
MAX_ENV_VALUE = 32 * 1024
"""Longest value of a variable a session brings for its server."""

_LOST = {
    "disconnected": "is gone (connection ended)",
    "not_reading": "stopped reading",
    "key_revoked": "lost its key (revoked)",
}
_AUDITED = frozenset({str(ErrorCode.NOT_OWNER), str(ErrorCode.FORBIDDEN)})
"""Refusals that the audit log records: each of the first in a window, then their count per window."""


_POWERS = frozenset(4**n for n in range(16))
"""Counts at which a repeated warning is logged again (1, 4, 16, ...): counted always, logged rarely."""


def _entry(
    record: SessionRecord, client: bytes, now: float, created: float, env: dict[str, str] | None = None
) -> Passivated:
    """The passivated session of ``record`` (a full one: token digest and owner key filled in)."""
    key = bytes.fromhex(record.owner_key)
    return Passivated(encode_record(record), record.server, client, record.token_sha256, key, now, created, env)


def _session_id() -> str:
    """128 random bits, URL-safe; never starting with ``-``, so that ``troupe sessions show <sid>`` is not
    read as an option."""
    while (sid := secrets.token_urlsafe(16)).startswith("-"):
        pass
    return sid


def _resume_token(wanted: str | None, ref: int | str) -> str:
    """The client's own token (one it can derive again, as the HTTP front does), or 128 random bits."""
    if wanted is None:
        return secrets.token_urlsafe(16)
    if not MIN_TOKEN_CHARS <= len(wanted) <= MAX_TOKEN_CHARS or not (wanted.isascii() and wanted.isprintable()):
        raise FrameError(
            ErrorCode.BAD_ARGS,
            f"open: token must be {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} printable ASCII characters (a secret of "
            "at least 128 bits), or left out for the daemon to draw one",
            ref=ref,
        )
    return wanted


MIN_TOKEN_CHARS, MAX_TOKEN_CHARS = 22, 256
"""Length bounds of a resume token a client brings in ``open`` (22 URL-safe characters: 128 bits)."""


def _codes(counts: Counter[str]) -> str:
    return ", ".join(f"{code} {n}" for code, n in counts.most_common())


_CLOSE_REASON = {"disconnected": "client_gone", "not_reading": "client_not_reading", "key_revoked": "key_revoked"}


def _via(value: str | None) -> str:
    """What a front says the session is for (``http 10.0.0.7:51234 token alice``), printable and short."""
    if not value:
        return ""
    return " via " + "".join(c for c in value[:200] if c.isprintable())
