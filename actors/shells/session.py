"""`SessionActor`: the pykka shell around one `SessionCore`.

The actor owns its core (state machine, pending requests) and does only
this: feed the core messages with the time, turn its outputs into frames for
the hub, ask the janitor for wake-ups, and tell the dispatcher when its pending
count moved or the session finished. It never touches a socket.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from types import TracebackType
from typing import Any, Protocol

from mcp_troupe.actors.core.outputs import (
    Dropped,
    Finished,
    Opened,
    OpenFailed,
    Output,
    Passivate,
    Refuse,
    RequestDone,
    RequestRefused,
    RespawnServer,
    Schedule,
    SessionClosed,
    StopServer,
    ToClient,
    ToServer,
    Warn,
)
from mcp_troupe.actors.core.records import SessionRecord
from mcp_troupe.actors.core.session import SessionCore
from mcp_troupe.actors.core.state import State
from mcp_troupe.actors.shells.loop_actor import EventLoop, LoopActor
from mcp_troupe.actors.shells.supervisor import Crash, FaultInjected
from mcp_troupe.actors.telemetry.observe import Observers
from mcp_troupe.transport.wire.frames import ErrorCode, encode

log = logging.getLogger("troupe.session")


class Outbox(EventLoop, Protocol):
    """The part of the hub a session uses: the loop that runs it, and frames to send."""

    def send_front(self, peer: bytes, data: bytes) -> None: ...

    def send_back(self, peer: bytes, data: bytes) -> None: ...


class DispatcherPort(Protocol):
    """Dispatcher methods a session has run on the hub's loop thread."""

    def session_finished(self, sid: str) -> None: ...

    def session_closing(self, sid: str, reason: str) -> None: ...

    def respawn(self, sid: str) -> None: ...

    def pending_changed(self, sid: str, delta: int) -> None: ...

    def wake_me_at(self, sid: str, at: float) -> None: ...

    def close_detached(self, sid: str) -> None: ...

    def remember(self, record: SessionRecord) -> None: ...

    def passivate(self, sid: str, record: SessionRecord, shell: PassivatedShell) -> bool: ...


# -- messages ------------------------------------------------------------------


@dataclass(slots=True)  # not frozen: made for every message, and a frozen __init__ costs 3 times as much
class FromClient:
    msg: dict[str, Any]
    counted: bool = False
    """The dispatcher counted this request in the global pending count."""
    over_global: tuple[int, int] | None = None
    """Set when the global pending limit refused it: ``(current, limit)``."""


@dataclass(slots=True)  # not frozen: made for every message, and a frozen __init__ costs 3 times as much
class FromServer:
    msg: dict[str, Any]
    checked: bool = False
    """Its adapter vouched that it is plain JSON (`mcp_troupe.transport.keys.VOUCH`)."""


@dataclass(frozen=True, slots=True)
class ClientFrameRefused:
    """From the dispatcher: a frame of the client naming message ``id`` was refused before decoding (its size).

    If that message was the response to a request of the server, the server gets ``answer`` in its place."""

    id: int | str
    answer: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ServerStarted:
    pid: int


@dataclass(frozen=True, slots=True)
class ServerExited:
    code: int | None
    reason: str
    restartable: bool = True
    """False when no new process can be had: the session fails whatever its policy."""


@dataclass(frozen=True, slots=True)
class ServerStderr:
    """A line the server process wrote to its stderr (rate-limited by its adapter)."""

    line: str


@dataclass(frozen=True, slots=True)
class Rebound:
    """From the dispatcher: the session's server is now behind the adapter ``peer``."""

    adapter: bytes


@dataclass(frozen=True, slots=True)
class Detached:
    """From the dispatcher: the client's connection ended; keep its frames (at most ``keep``) for an ``attach``."""

    keep: int


@dataclass(frozen=True, slots=True)
class Reattached:
    """From the dispatcher: the client is now behind ``client`` (an ``attach`` with the resume token)."""

    client: bytes
    label: str
    ref: int | str
    previous_alive: bool
    """The connection it left is still open: tell it the session went elsewhere."""


@dataclass(frozen=True, slots=True)
class CloseSession:
    reason: str
    ref: int | str | None = None


@dataclass(frozen=True, slots=True)
class Wake:
    """From the janitor's pass: a deadline this session asked for has come."""


@dataclass(frozen=True, slots=True)
class Forgotten:
    """From the dispatcher: it routes nothing more here; the actor may stop."""


@dataclass(frozen=True, slots=True)
class Describe:
    """Ask for a snapshot of the session: returned to an ``ask``, or passed to ``reply``."""

    reply: Callable[[dict[str, Any]], None] | None = None
    stderr: bool = False
    """Include the last lines its server wrote to stderr (``stderr``: a list of strings)."""


@dataclass(frozen=True, slots=True)
class PassivatedShell:
    """What a passivating session's shell knows that its next actor needs (and the dispatcher keeps)."""

    created_at: float
    """When the session was opened (the daemon's clock)."""
    seq: int
    """Of the last frame its client was sent."""
    stderr: bool
    """Its client asked for its server's stderr lines."""
    expires_at: float | None
    """When it closes for being idle (opened with ``expire_idle``); None: it does not."""


@dataclass(frozen=True, slots=True)
class Peers:
    client: bytes
    adapter: bytes
    open_ref: int | str
    client_label: str = ""
    """How operators see the client's connection; its routing id is never shown."""
    stderr: bool = False
    """The client asked for its server's stderr lines (``stderr`` frames)."""
    token: str = field(default="", repr=False)
    """The resume token, sent once in ``opened``; never logged."""


@dataclass(frozen=True)
class SessionLinks:
    outbox: Outbox
    dispatcher: DispatcherPort
    to_child: Callable[[str, object], None]
    """Delivers a message to the current incarnation of a supervised child (by id)."""
    observers: Observers = field(default_factory=Observers)


STDERR_KEPT = 200
"""Lines of its server's stderr a session keeps for ``sessions.show`` (``troupe sessions logs``)."""


class SessionActor(LoopActor):
    """Runs on the hub's loop thread (see `shells.loop_actor`): frames to and from it cross no thread."""

    def __init__(
        self,
        core: SessionCore,
        peers: Peers,
        links: SessionLinks,
        clock: Callable[[], float] = time.monotonic,
        *,
        opened_at: float | None = None,
        restored: bool = False,
        seq: int = 0,
    ) -> None:
        """``opened_at``: wall-clock time the session was opened, when it was not now (a restored or reactivated
        session); ``restored``: it is a session of the previous daemon; ``seq``: of the last frame its client was
        sent (a reactivated session goes on from it)."""
        super().__init__(links.outbox)
        self.core = core
        self._peers = peers
        self._links = links
        self._clock = clock
        self._seq = seq
        self._close_ref: int | str | None = None
        self._reported_pending = 0
        self._reported_finished = False
        self._opened_at = time.time() if opened_at is None else opened_at
        self.restored = restored
        self._passivated = False
        """Handed over to the dispatcher as a record: what still reaches this actor goes back to it."""
        self._stderr: deque[str] = deque(maxlen=STDERR_KEPT)
        self._to_client: Callable[[bytes, bytes], None] = links.outbox.send_front
        """Sends a frame to the client; once its connection has ended, to nowhere (such frames are not
        drops: nobody could read them). What the session does for the record still happens."""
        self._counted = False
        """Whether the message being handled was counted in the global pending count."""
        self._held: deque[bytes] | None = None
        """Frames for a detached client, kept for its ``attach`` (None: the client is attached)."""
        self._held_limit = 0

    def on_receive(self, message: Any) -> Any:
        state = self.core.state
        result = self._handle(message)
        if self.core.state is State.ACTIVE:
            if state is not State.ACTIVE:
                info = self.core.info
                self._event("session.active", era=info.era.value, protocol_version=info.protocol_version)
                self._links.dispatcher.remember(self._record())
            elif type(message) in RECORD_CHANGES:
                self._links.dispatcher.remember(self._record())
        return result

    def _record(self) -> SessionRecord:
        """The session as the store keeps it; the dispatcher adds what its route knows (owner, adapter)."""
        core, info = self.core, self.core.info
        return SessionRecord(
            sid=core.sid,
            server=core.server,
            state=core.state.value,
            era=info.era.value,
            protocol_version=info.protocol_version,
            initialize=core.handshake.initialize_msg,
            client_info=info.client_info,
            client_capabilities=info.client_capabilities,
            server_info=info.server_info,
            server_capabilities=info.server_capabilities,
            pid=info.pid,
            adapter_id=None,
            token_sha256="",
            owner_key="",
            client_label=self._peers.client_label,
            env_names=(),
            created_at=self._opened_at,
            restarts=core.restarts,
        )

    def _handle(self, message: Any) -> Any:
        core, now = self.core, self._clock()
        if self._passivated:
            return self._after_passivation(message)
        match message:
            case FromClient(msg, counted, over_global):
                self._counted = counted
                self._emit(core.receive_from_client(msg, now, over_global), counted=counted)
                self._counted = False
            case FromServer(msg, checked):
                self._emit(core.receive_from_server(msg, now, checked=checked))
            case ClientFrameRefused(request_id, answer):
                self._emit(core.client_response_refused(request_id, answer, now))
            case Wake():
                self._emit(core.wake(now))
            case ServerStarted(pid):
                self._emit(core.server_started(pid, now))
            case ServerExited(code, reason, restartable):
                self._emit(core.server_exited(code, reason, now, restartable=restartable))
            case ServerStderr(line):
                self._stderr.append(line)
                if self._peers.stderr:
                    self._to_client(self._peers.client, encode("stderr", sid=core.sid, line=line))
            case Rebound(adapter):
                self._peers = replace(self._peers, adapter=adapter)
            case Detached(keep):
                self._held, self._held_limit = deque(), keep
                self._to_client = self._hold
            case Reattached(client, label, ref, previous_alive):
                self._reattach(client, label, ref, previous_alive)
            case CloseSession(reason, ref):
                self._close_ref = ref
                if reason == "client_gone":
                    self._to_client = _nowhere
                self._emit(core.close(reason, now, repeat=ref is not None))
                if ref is not None and not core.started:
                    self._unopened_close(ref)
            case Forgotten():
                self.stop()
            case Describe(reply, stderr):
                snapshot = {
                    **core.describe(now),
                    "client": self._peers.client_label,
                    "opened_at": self._opened_at,
                    "restarts": core.restarts,
                    "detached": self._held is not None,
                    "restored": self.restored,
                }
                if stderr:
                    snapshot["stderr"] = list(self._stderr)
                if reply is None:
                    return snapshot
                reply(snapshot)
            case Crash():
                raise FaultInjected(f"injected fault in session {core.sid}")
            case _:
                raise TypeError(f"SessionActor got an unknown message {message!r}")
        return None

    def _passivate(self) -> None:
        """Idle for ``passivate_after``: leave as a record (if the dispatcher has room) and stop the server."""
        core = self.core
        record, expires_at = replace(self._record(), state="passivated"), core.idle_deadline()
        # A message waiting in the inbox (a client's frame, its close, an attach, the server's exit) would be
        # told to an actor that has left: stay until it is handled. The dispatcher forgets this actor in the
        # call below, on this thread, so nothing is told to it after an empty inbox.
        busy = self._held or not self.actor_inbox.empty()
        shell = PassivatedShell(core.created_at, self._seq, self._peers.stderr, expires_at)
        if busy or not self._links.dispatcher.passivate(core.sid, record, shell):
            self._emit(core.passivation_declined(self._clock()))
            return
        self._passivated = True
        self._reported_finished = True  # the dispatcher forgot this actor: it must not forget the session's next one
        self._links.outbox.send_back(self._peers.adapter, encode("close", sid=core.sid, reason="passivated"))
        log.info("session %s passivated (idle %gs)", core.sid, core.limits.passivate_after)
        self._event("session.passivated")

    def _after_passivation(self, message: Any) -> Any:
        """Only `Forgotten` can come now: the actor passivated with an empty inbox, and the dispatcher forgot it
        in the same turn. Anything else is a bug, dropped and counted, never handled by a session that left."""
        if isinstance(message, Forgotten):
            self.stop()
        else:
            self.core.dropped += 1
            log.warning("session %s: %s after it passivated, dropped", self.core.sid, type(message).__name__)
        return None

    def _hold(self, _peer: bytes, data: bytes) -> None:
        held = self._held
        assert held is not None
        if len(held) < self._held_limit:
            held.append(data)
            return
        if len(held) == self._held_limit:
            self._held_limit = -1  # asked once: the dispatcher closes the session
            log.info("session %s: its client stayed away past reattach_buffer frames; closing it", self.core.sid)
            self._links.outbox.call(partial(self._links.dispatcher.close_detached, self.core.sid))
        self._links.observers.metrics.detached_dropped.inc()

    def _reattach(self, client: bytes, label: str, ref: int | str, previous_alive: bool) -> None:
        old, sid = self._peers.client, self.core.sid
        if previous_alive:
            message = "the session was attached to another connection with its resume token"
            self._links.outbox.send_front(old, encode("closed", sid=sid, reason="attached_elsewhere", message=message))
        held = self._held or deque()
        self._peers = replace(self._peers, client=client, client_label=label)
        self._held = None
        self._to_client = self._links.outbox.send_front
        frame = encode("attached", ref=ref, sid=sid, server=self.core.server, seq=self._seq - len(held))
        self._to_client(client, frame)
        for data in held:
            self._to_client(client, data)
        self._event("session.attached", held=len(held))

    def _unopened_close(self, ref: int | str) -> None:
        """A ``close`` with a ref for a session its client was never told of: answer the ref, name no session."""
        message = "the session ended before it opened; its open is answered with spawn_failed"
        frame = encode("error", code=str(ErrorCode.SESSION_CLOSED), message=message, ref=ref, sid=self.core.sid)
        self._to_client(self._peers.client, frame)

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        log.error("session %s crashed: %r", self.core.sid, exception_value)
        now = self._clock()
        self._emit(self.core.fail(f"internal error: {exception_value!r}", now), counted=self._counted)
        self._refuse_inbox(now)
        self._report_finished()

    def _refuse_inbox(self, now: float) -> None:
        """pykka drops what a dead actor's inbox still holds: answer those clients instead."""
        while True:
            try:
                envelope = self.actor_inbox.get_nowait()
            except queue.Empty:
                return
            message = envelope.message
            if isinstance(message, FromClient):
                self._emit(self.core.receive_from_client(message.msg, now), counted=message.counted)

    def on_stop(self) -> None:
        if self._passivated:
            return
        if not self.core.state.terminal:
            self._emit(self.core.fail("the daemon stopped the session", self._clock()))
        self._report_finished()

    def _closed(self, reason: str, message: str) -> None:
        observers = self._links.observers
        observers.metrics.sessions_closed.labels(reason).inc()
        if reason == "idle":
            observers.metrics.janitor_expired.labels("session").inc()
        if reason in CLOSE_EVENTS:
            self._event(CLOSE_EVENTS[reason], reason=reason, message=message)
        self._event("session.closed", reason=reason, message=message)

    def _request_done(self, method: str, seconds: float, outcome: str) -> None:
        metrics = self._links.observers.metrics
        if outcome == "timeout":
            metrics.count_timeout(method)
            metrics.janitor_expired.labels("request").inc()
        elif outcome in ("result", "error"):
            metrics.observe_latency(method, seconds)

    def _event(self, topic: str, **fields: Any) -> None:
        """Publish a lifecycle event and append it to the audit log."""
        core = self.core
        record = {"sid": core.sid, "server": core.server, "client": self._peers.client_label, **fields}
        self._links.observers.publish(topic, record)
        self._links.observers.audit({"event": topic, **record})

    def _report_finished(self) -> None:
        if not self._reported_finished:
            self._reported_finished = True
            self._links.outbox.call(partial(self._links.dispatcher.session_finished, self.core.sid))

    def _emit(self, outputs: list[Output], *, counted: bool = False) -> None:
        for out in outputs:
            self._carry(out)
        core = self.core
        pending = len(core.from_client)
        delta = pending - self._reported_pending - (1 if counted else 0)
        self._reported_pending = pending
        if delta:
            self._links.outbox.call(partial(self._links.dispatcher.pending_changed, core.sid, delta))

    def _carry(self, out: Output) -> None:
        sid, peers, outbox = self.core.sid, self._peers, self._links.outbox
        to_client = self._to_client
        match out:
            case ToClient(msg):
                self._seq += 1
                to_client(peers.client, encode("mcp", sid=sid, seq=self._seq, msg=msg))
            case ToServer(msg):
                outbox.send_back(peers.adapter, encode("mcp", sid=sid, msg=msg))
            case Schedule(at):
                self._links.dispatcher.wake_me_at(sid, at)
            case Refuse(code, message, request_id):
                frame = encode("error", code=str(code), message=message, sid=sid, id=request_id)
                to_client(peers.client, frame)
            case Opened(pid):
                opened = encode(
                    "opened", ref=peers.open_ref, sid=sid, server=self.core.server, token=peers.token or None
                )
                to_client(peers.client, opened)
                log.info("session %s opened on server %s (pid %s)", sid, self.core.server, pid)
                self._links.observers.metrics.sessions_opened.inc()
                self._event("session.opened", pid=pid)
            case OpenFailed(message):
                frame = encode("error", code=str(ErrorCode.SPAWN_FAILED), message=message, ref=peers.open_ref)
                to_client(peers.client, frame)
                log.warning("session %s: %s", sid, message)
                outbox.call(partial(self._links.dispatcher.session_closing, sid, "open_failed"))
            case SessionClosed(reason, message):
                frame = encode("closed", sid=sid, reason=reason, message=message, ref=self._close_ref)
                to_client(peers.client, frame)
                log.info("session %s closed: %s", sid, message)
                outbox.call(partial(self._links.dispatcher.session_closing, sid, reason))
                self._closed(reason, message)
            case StopServer(reason):
                outbox.send_back(peers.adapter, encode("close", sid=sid, reason=reason))
            case RequestDone(method, seconds, outcome):
                self._request_done(method, seconds, outcome)
            case RequestRefused(reason):
                self._links.observers.metrics.requests_refused.labels(reason).inc()
            case Finished():
                self._report_finished()  # the dispatcher answers Forgotten; then the actor stops
            case RespawnServer():
                outbox.call(partial(self._links.dispatcher.respawn, sid))
            case Passivate():
                self._passivate()
            case Warn(message):
                log.warning("session %s: %s", sid, message)
            case Dropped(source, reason):
                log.debug("session %s dropped a message from the %s: %s", sid, source, reason)


RECORD_CHANGES: frozenset[type] = frozenset({ServerStarted, ServerExited, Reattached, Rebound})
"""Messages that change what an active session's store record says (its process, restarts, client, adapter);
no other message does, so frames cost the store nothing."""


def _nowhere(peer: bytes, data: bytes) -> None:
    pass


CLOSE_EVENTS = {"evicted": "session.evicted", "idle": "session.expired", "failed": "session.failed"}
"""Closing reasons that also get an event of their own, before ``session.closed``."""
