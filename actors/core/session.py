"""The MCP session logic, sans-IO.

`SessionCore` takes what happened (a message from the client or the server,
the server process starting or exiting, a wake-up, a close) plus the current
time, and returns what to do as a list of outputs. It owns no thread, socket
or clock, so it is tested directly; `mcp_troupe.actors.shells.session.SessionActor` is the thin
shell that feeds it and carries its outputs to the hub.

What it enforces: the state machine, both eras (see `mcp_troupe.actors.core.era`),
correlation in both directions, cancellation, progress, request timeouts,
the per-session pending limit, the global limit (decided by the dispatcher and
passed in), the per-session rate limit and idle expiry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mcp_troupe.actors.core.answers import (
    cancel_notice,
    cancelled_id,
    duplicate_id,
    id_of,
    progress_token,
    timed_out,
    timeout_cancel,
)
from mcp_troupe.actors.core.era import (
    CLIENT_NOTIFICATIONS_BEFORE_READY,
    CLIENT_REQUESTS_BEFORE_READY,
    SERVER_NOTIFICATIONS_BEFORE_READY,
    SERVER_REQUESTS_BEFORE_READY,
    Era,
    params_of,
    request_era,
)
from mcp_troupe.actors.core.handshake import Handshake, SessionInfo
from mcp_troupe.actors.core.options import PRIORITY_METHODS, Limits, ServerPolicy
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
from mcp_troupe.actors.core.pending import PendingTable
from mcp_troupe.actors.core.records import SessionRecord
from mcp_troupe.actors.core.request_limits import RequestLimits
from mcp_troupe.actors.core.state import SessionStateMachine, State
from mcp_troupe.transport.wire import jsonrpc
from mcp_troupe.transport.wire.frames import ErrorCode
from mcp_troupe.transport.wire.jsonrpc import InvalidMessage, Kind, Message, RequestId


class SessionCore:
    """One MCP session: state machine, eras, correlation both ways, limits, clean endings."""

    def __init__(
        self,
        sid: str,
        server: str,
        now: float,
        limits: Limits | None = None,
        policy: ServerPolicy | None = None,
        *,
        expire_idle: bool = True,
    ) -> None:
        """``expire_idle``: close the session after ``idle_timeout`` without traffic. The daemon sets it
        only for sessions whose client asked (``open`` ``expire_idle``): a client that is connected and
        alive keeps its sessions however long they are idle."""
        self.sid = sid
        self.expire_idle = expire_idle
        self.server = server
        self.limits = limits = limits or Limits()
        self.policy = policy or ServerPolicy()
        self.restarts = 0
        self.machine = SessionStateMachine()
        self.info = SessionInfo()
        self.handshake = Handshake(self.info)
        self.from_client = PendingTable()
        """Requests the client sent, waiting for the server's response."""
        self.from_server = PendingTable()
        """Requests the server sent, waiting for the client's response."""
        self.created_at = now
        self.last_activity = now
        self.dropped = 0
        self.end_reason: str | None = None
        self._request_limits = RequestLimits(limits, now)
        self._started = False
        self._wake_at: float | None = None
        self._respawn: _Respawn | None = None
        self._passivate_not_before = 0.0
        self._pipelined: list[object] = []
        """What the client sent after ``initialize`` and before its result (a fast client does not wait):
        held in order and handled once the result has passed, as a server reading them in turn would."""

    @classmethod
    def restored(
        cls, record: SessionRecord, now: float, limits: Limits | None = None, policy: ServerPolicy | None = None
    ) -> SessionCore:
        """A stored session whose server process outlived the daemon: Active at once, its handshake known (a
        later restart replays it), nothing pending, its limits and deadlines fresh. `RecordError` if the
        record is not one of an active session."""
        core = cls(record.sid, record.server, now, limits, policy, expire_idle=False)
        core.handshake.restore(record)
        core.restarts = record.restarts
        core._started = True
        core.machine.transition(State.ACTIVE)
        return core

    @classmethod
    def reactivated(
        cls, record: SessionRecord, now: float, limits: Limits | None = None, policy: ServerPolicy | None = None
    ) -> SessionCore:
        """A passivated session brought back by a message: Active, its server process to be started anew and its
        handshake replayed (as a restart does); what its client sends meanwhile is held."""
        core = cls.restored(record, now, limits, policy)
        core.info.pid = None
        core._respawn = _Respawn()
        return core

    @property
    def state(self) -> State:
        return self.machine.state

    @property
    def ready(self) -> bool:
        return self.state is State.ACTIVE

    @property
    def started(self) -> bool:
        """The server process started and the client was told ``opened``."""
        return self._started

    # -- server process ------------------------------------------------------------

    def server_started(self, pid: int, now: float) -> list[Output]:
        if self._respawn is not None and self.state in (State.INITIALIZING, State.ACTIVE):
            self.info.pid = pid
            return self._replay(now)
        if self._started or self.state is not State.INITIALIZING:
            return []
        self._started = True
        self.info.pid = pid
        self.last_activity = now
        return self._scheduled([Opened(pid)])

    def server_exited(self, code: int | None, reason: str, now: float, *, restartable: bool = True) -> list[Output]:
        self.last_activity = now
        if self.state is State.SHUTTING_DOWN:
            self.machine.transition(State.CLOSED)
            return [Finished()]
        if self.state.terminal:
            return []
        if not self._started:
            self.end_reason = "server_exited"
            self.machine.transition(State.FAILED, f"server did not start: {reason}")
            return [OpenFailed(f"server {self.server!r} did not start: {reason}"), Finished()]
        data = {"exit_code": code, "detail": reason}
        if restartable and self.policy.on_exit == "restart" and self.restarts < self.policy.max_restarts:
            return self._restart_server(reason, data, now)
        self.end_reason = "server_exited"
        message = f"server process ended: {reason}"
        self.machine.transition(State.FAILED, message)
        outputs = self._fail_pending(message, {"reason": "server_exited", **data})
        return [*outputs, SessionClosed("server_exited", message), Finished()]

    # -- restarting the server process ---------------------------------------------

    def _restart_server(self, reason: str, data: dict[str, Any], now: float) -> list[Output]:
        """Fail what was pending (never re-sent: a tool call may not be idempotent), then respawn."""
        self.restarts += 1
        message = f"server process ended ({reason}); a new one takes over"
        outputs: list[Output] = [
            ToClient(
                jsonrpc.error(
                    p.id,
                    jsonrpc.CONNECTION_CLOSED,
                    f"Connection closed: {message}",
                    {"reason": "server_restarted", "method": p.method, **data},
                )
            )
            for p in self.from_client.drain()
        ]
        outputs += [ToClient(cancel_notice(p.id, "the server process ended")) for p in self.from_server.drain()]
        self._respawn = _Respawn(held=self._respawn.held if self._respawn is not None else [])
        note = f"{message} (restart {self.restarts} of {self.policy.max_restarts})"
        return [*outputs, Warn(note), RespawnServer()]

    def _replay(self, now: float) -> list[Output]:
        """The new process is up: replay the legacy handshake, else resume at once."""
        respawn = self._respawn
        assert respawn is not None
        replay = self.handshake.replay(f"troupe-replay-{self.restarts}")
        if replay is None:
            return self._resume(now)
        respawn.replay_id = replay["id"]
        return [ToServer(replay)]

    def _replayed(self, msg: Message, now: float) -> list[Output]:
        if msg.kind is Kind.ERROR:
            return self.fail(f"the new server process refused the replayed initialize: {msg.body['error']}", now)
        return [ToServer(jsonrpc.notification("notifications/initialized")), *self._resume(now, initialized_sent=True)]

    def _resume(self, now: float, *, initialized_sent: bool = False) -> list[Output]:
        """Feed what the client sent while the server was restarting, in order."""
        held = self._respawn.held if self._respawn else []
        self._respawn = None
        if initialized_sent:  # the replay sent it already; the new process must not get it twice
            held = [b for b in held if not (isinstance(b, dict) and b.get("method") == "notifications/initialized")]
        outputs: list[Output] = []
        for body in held:
            outputs += self.receive_from_client(body, now)
        return outputs

    # -- closing -------------------------------------------------------------------

    def close(self, reason: str, now: float, *, repeat: bool = False) -> list[Output]:
        """End the session: fail what is pending, tell the client, stop the server.

        The session stays SHUTTING_DOWN until the server process has exited.
        Closing an ended session does nothing, unless ``repeat`` (the client
        asked, and should hear back) repeats the ``closed`` it was sent.
        """
        if self.state is State.SHUTTING_DOWN or self.state.terminal:
            if not repeat or not self._started:  # never opened: its client hears of its open, not of a sid
                return []
            return [SessionClosed(self.end_reason or "closed", f"session already {self.state.value}")]
        self.last_activity = now
        self.end_reason = reason
        self.machine.transition(State.SHUTTING_DOWN)
        message = f"session closed ({reason})"
        outputs = self._fail_pending(message, {"reason": reason})
        return [*outputs, self._closed_or_open_failed(reason, message), StopServer(reason)]

    def _closed_or_open_failed(self, reason: str, message: str) -> Output:
        """A client that never got ``opened`` must hear about its ``open``, not a stranger's sid."""
        if self._started:
            return SessionClosed(reason, message)
        return OpenFailed(f"the session ended before server {self.server!r} started: {message}")

    def fail(self, reason: str, now: float) -> list[Output]:
        """The session cannot go on (an internal error): fail it and finish at once."""
        if self.state.terminal:
            return []
        self.last_activity = now
        was_closing = self.state is State.SHUTTING_DOWN
        self.end_reason = self.end_reason if was_closing else "failed"
        self.machine.transition(State.FAILED, reason)
        outputs = self._fail_pending(f"session failed: {reason}", {"reason": "failed"})
        if not was_closing:
            outputs.append(self._closed_or_open_failed("failed", f"session failed: {reason}"))
        return [*outputs, StopServer("failed"), Finished()]

    def _fail_pending(self, message: str, data: dict[str, Any]) -> list[Output]:
        """Answer every pending request in both directions, and requests held (for a restart, or behind a
        pending ``initialize``): never silence."""
        text = f"Connection closed: {message}"
        code = jsonrpc.CONNECTION_CLOSED
        held = [*(self._respawn.held if self._respawn is not None else []), *self._pipelined]
        self._respawn = None
        self._pipelined = []
        held_answers: list[Output] = [
            ToClient(jsonrpc.error(request_id, code, text, {**data, "method": body.get("method")}))
            for body in held
            if isinstance(body, dict) and "method" in body and (request_id := id_of(body)) is not None
        ]
        outputs: list[Output] = [
            ToClient(jsonrpc.error(p.id, code, text, {**data, "method": p.method})) for p in self.from_client.drain()
        ]
        outputs += [
            ToServer(jsonrpc.error(p.id, code, text, {**data, "method": p.method})) for p in self.from_server.drain()
        ]
        return held_answers + outputs

    # -- time ----------------------------------------------------------------------

    def wake(self, now: float) -> list[Output]:
        """Expire what is due: requests past their deadline, the session if idle."""
        self._wake_at = None
        if self.state is not State.INITIALIZING and self.state is not State.ACTIVE:
            return []
        outputs: list[Output] = []
        for p in self.from_client.expire(now):
            outputs += [ToClient(timed_out(p)), RequestDone(p.method, now - p.sent_at, "timeout")]
            if p.method != "initialize":  # MCP: initialize must not be cancelled
                outputs.append(ToServer(timeout_cancel(p)))
        for p in self.from_server.expire(now):
            outputs += [ToServer(timed_out(p)), ToClient(timeout_cancel(p))]
        if self._pipelined and not self.handshake.pending(self.from_client):  # initialize timed out: the rest goes on
            outputs += self._release_pipelined(now)
        if self._idle_deadline() is not None and now >= self._idle_deadline():  # type: ignore[operator]
            return outputs + self.close("idle", now)
        passivate_at = self._passivate_deadline()
        if passivate_at is not None and now >= passivate_at:
            return [*outputs, Passivate()]
        return self._scheduled(outputs)

    def next_wake(self) -> float | None:
        """When this session next needs `wake` (earliest deadline or idle expiry)."""
        if self.state is not State.INITIALIZING and self.state is not State.ACTIVE:
            return None
        earliest: float | None = None
        for at in (
            self.from_client.next_deadline(),
            self.from_server.next_deadline(),
            self._idle_deadline(),
            self._passivate_deadline(),
        ):
            if at is not None and (earliest is None or at < earliest):
                earliest = at
        return earliest

    def idle_deadline(self) -> float | None:
        """When the session closes for being idle, if it does (``expire_idle``) and nothing is pending."""
        return self._idle_deadline()

    def _idle_deadline(self) -> float | None:
        if not (self.expire_idle and self._started) or self.limits.idle_timeout <= 0:
            return None
        if self.from_client or self.from_server:
            return None
        return self.last_activity + self.limits.idle_timeout

    def _passivate_deadline(self) -> float | None:
        """When an idle Active session may be passivated: its server opted in and nothing is under way."""
        after = self.limits.passivate_after
        if after <= 0 or not self.policy.passivate or self.state is not State.ACTIVE:
            return None
        if self.from_client or self.from_server or self._respawn is not None or self._pipelined:
            return None
        return max(self.last_activity + after, self._passivate_not_before)

    def passivation_declined(self, now: float) -> list[Output]:
        """The daemon keeps no more passivated sessions now: try again after another ``passivate_after``."""
        self._passivate_not_before = now + self.limits.passivate_after
        return self._scheduled([])

    def _scheduled(self, outputs: list[Output]) -> list[Output]:
        """Ask for a wake-up if the next one needed is earlier than the one asked for."""
        if self.state.terminal or self.state is State.SHUTTING_DOWN:
            return outputs
        at = self.next_wake()
        if at is not None and (self._wake_at is None or at < self._wake_at):
            self._wake_at = at
            outputs.append(Schedule(at))
        return outputs

    # -- messages from the client ----------------------------------------------------

    def receive_from_client(self, body: object, now: float, over_global: tuple[int, int] | None = None) -> list[Output]:
        """A message from the client. ``over_global`` is set when the dispatcher found
        the daemon-wide pending limit reached, as ``(current, limit)``."""
        if self.state is State.SHUTTING_DOWN or self.state.terminal:
            message = f"session {self.sid} is {self.state.value}; open a new session"
            return [Refuse(ErrorCode.SESSION_CLOSED, message, id_of(body))]
        if self._respawn is not None:
            return self._hold(body, self._respawn.held)
        if self.handshake.pending(self.from_client) and not self.handshake.cancels_initialize(body):
            return self._hold(body, self._pipelined)
        try:
            msg = jsonrpc.classify(body)
        except InvalidMessage as exc:
            return [Refuse(ErrorCode.INVALID_MESSAGE, f"not a valid JSON-RPC 2.0 message: {exc.reason}", exc.id)]
        self.last_activity = now
        self.info.frames["client_to_server"] += 1
        if msg.kind is Kind.REQUEST:
            return self._scheduled(self._client_request(msg, now, over_global))
        if msg.kind is Kind.NOTIFICATION:
            return self._client_notification(msg, now)
        if self.from_server.pop(msg.id) is None:  # type: ignore[arg-type]
            return self._drop("client", f"response to unknown or finished server request id {msg.id!r}")
        return self._scheduled([ToServer(msg.body)])

    def client_response_refused(self, request_id: RequestId, answer: dict[str, Any], now: float) -> list[Output]:
        """The client's message ``request_id`` never arrived (refused for its size). When the server waits for a
        response with that id, ``answer`` (an error response) goes to it in its place: the server hears now, not
        never. Otherwise it was one of the client's own requests, already answered by the refusal."""
        if self.state.terminal or self.from_server.pop(request_id) is None:
            return []
        self.last_activity = now
        return self._scheduled([ToServer(answer)])

    def _hold(self, body: object, held: list[object]) -> list[Output]:
        """Keep a client message until the server is ready for it (its handshake, or its restart)."""
        if len(held) >= self.limits.max_pending_per_session:
            what = "the server is restarting" if held is not self._pipelined else "initialize is still pending"
            return [
                Refuse(
                    ErrorCode.SERVER_BUSY,
                    f"{what} and this session holds too many messages already; retry shortly",
                    id_of(body),
                )
            ]
        held.append(body)
        return []

    def _release_pipelined(self, now: float) -> list[Output]:
        """The handshake's result has passed: handle what the client sent meanwhile, in order."""
        held, self._pipelined = self._pipelined, []
        outputs: list[Output] = []
        for body in held:
            outputs += self.receive_from_client(body, now)
        return outputs

    def _client_request(self, msg: Message, now: float, over_global: tuple[int, int] | None) -> list[Output]:
        assert msg.id is not None and msg.method is not None
        refusal = self.handshake.era_refusal(msg) or self._readiness_refusal(msg)
        if refusal is not None:
            return [ToClient(refusal)]
        if msg.id in self.from_client:
            return [ToClient(duplicate_id(msg.id))]
        if msg.method not in PRIORITY_METHODS:
            limited = self._request_limits.refusal(msg.id, len(self.from_client), now, over_global)
            if limited is not None:
                return [ToClient(limited[0]), RequestRefused(limited[1])]
        token = progress_token(msg)
        self.from_client.add(msg.id, msg.method, now, self.limits.timeout_for(msg.method), token)
        self.handshake.note(msg)
        outputs: list[Output] = [ToServer(msg.body)]
        if (warning := self._request_limits.warning(len(self.from_client))) is not None:
            outputs.append(Warn(warning))
        return outputs

    def _readiness_refusal(self, msg: Message) -> dict[str, Any] | None:
        if self.ready or msg.method in CLIENT_REQUESTS_BEFORE_READY or request_era(msg) is Era.MODERN:
            return None
        return jsonrpc.error(
            msg.id,
            jsonrpc.NOT_INITIALIZED,
            f"{msg.method} is not allowed before the session is initialized: send initialize, wait for its "
            "result, then send notifications/initialized (or use the 2026-07-28 protocol)",
            {"state": self.state.value, "era": self.info.era.value},
        )

    def _client_notification(self, msg: Message, now: float) -> list[Output]:
        method = msg.method
        if method == "notifications/cancelled":
            request_id = cancelled_id(msg)
            if request_id is not None and request_id == self.handshake.initialize_id and request_id in self.from_client:
                return [
                    Refuse(
                        ErrorCode.INVALID_MESSAGE,
                        "initialize cannot be cancelled (MCP spec); close the session instead",
                    )
                ]
            if request_id is not None:
                self.from_client.pop(request_id)
            return self._scheduled([ToServer(msg.body)])
        if method == "notifications/progress":
            self._progress(self.from_server, msg, now)
            return [ToServer(msg.body)]
        if method == "notifications/initialized":
            if not self.handshake.initialized_result:
                return [Refuse(ErrorCode.NOT_INITIALIZED, "notifications/initialized before the initialize result")]
            if self.state is State.INITIALIZING:
                self.machine.transition(State.ACTIVE)
            return self._scheduled([ToServer(msg.body)])  # Active now: it may be passivated one day
        if not self.ready and method not in CLIENT_NOTIFICATIONS_BEFORE_READY:
            return [
                Refuse(
                    ErrorCode.NOT_INITIALIZED, f"{method} before the session is initialized; finish the handshake first"
                )
            ]
        return [ToServer(msg.body)]

    # -- messages from the server ----------------------------------------------------

    def receive_from_server(self, body: object, now: float, *, checked: bool = False) -> list[Output]:
        """A message from the server; ``checked``: its adapter vouched that it is plain JSON (`jsonrpc.classify`)."""
        if self.state is State.SHUTTING_DOWN or self.state.terminal:
            return self._drop("server", f"message after the session ended ({self.state.value})")
        try:
            msg = jsonrpc.classify(body, values_checked=checked)
        except InvalidMessage as exc:
            return self._invalid_from_server(body, exc, now)
        self.last_activity = now
        self.info.frames["server_to_client"] += 1
        if msg.kind is Kind.REQUEST:
            return self._scheduled(self._server_request(msg, now))
        if msg.kind is Kind.NOTIFICATION:
            return self._server_notification(msg, now)
        if self._respawn is not None and msg.id == self._respawn.replay_id:
            return self._replayed(msg, now)
        pending = self.from_client.pop(msg.id)  # type: ignore[arg-type]
        if pending is None:
            return self._drop("server", f"response to unknown or finished client request id {msg.id!r}")
        if self.handshake.answered(msg) and self.state is State.INITIALIZING:
            self.machine.transition(State.ACTIVE)
        outcome = "error" if msg.kind is Kind.ERROR else "result"
        outputs: list[Output] = [ToClient(msg.body), RequestDone(pending.method, now - pending.sent_at, outcome)]
        if self._pipelined and not self.handshake.pending(self.from_client):
            outputs += self._release_pipelined(now)
        return self._scheduled(outputs)

    def _invalid_from_server(self, body: object, exc: InvalidMessage, now: float) -> list[Output]:
        """Not valid JSON-RPC: dropped, but a client request it was the response to is answered, not left."""
        outputs = self._drop("server", f"invalid JSON-RPC from server: {exc.reason}")
        is_call = isinstance(body, dict) and "method" in body
        pending = self.from_client.pop(exc.id) if exc.id is not None and not is_call else None
        if pending is None:
            return outputs
        text = f"troupe: the server's response is not valid JSON-RPC ({exc.reason}); it was not forwarded"
        answer = jsonrpc.error(pending.id, jsonrpc.INTERNAL_ERROR, text, {"method": pending.method})
        return self._scheduled(
            [*outputs, ToClient(answer), RequestDone(pending.method, now - pending.sent_at, "error")]
        )

    def _server_request(self, msg: Message, now: float) -> list[Output]:
        assert msg.id is not None and msg.method is not None
        if not self.ready and msg.method not in SERVER_REQUESTS_BEFORE_READY:
            text = f"{msg.method} is not allowed before the client sent notifications/initialized"
            data = {"state": self.state.value, "era": self.info.era.value}
            return [ToServer(jsonrpc.error(msg.id, jsonrpc.NOT_INITIALIZED, text, data))]
        if msg.id in self.from_server:
            return [ToServer(duplicate_id(msg.id))]
        self.from_server.add(msg.id, msg.method, now, self.limits.timeout_for(msg.method), progress_token(msg))
        return [ToClient(msg.body)]

    def _server_notification(self, msg: Message, now: float) -> list[Output]:
        if not self.ready and msg.method not in SERVER_NOTIFICATIONS_BEFORE_READY:
            return self._drop("server", f"{msg.method} before the client sent notifications/initialized")
        if msg.method == "notifications/cancelled":
            request_id = cancelled_id(msg)
            if request_id is not None:
                self.from_server.pop(request_id)
        elif msg.method == "notifications/progress":
            self._progress(self.from_client, msg, now)
        return self._scheduled([ToClient(msg.body)])

    def _progress(self, table: PendingTable, msg: Message, now: float) -> None:
        token = id_of({"id": params_of(msg).get("progressToken")})
        if token is not None:
            table.progress(token, now, self.limits.progress_resets_timeout)

    def describe(self, now: float) -> dict[str, Any]:
        """A JSON-friendly snapshot: the session's metadata, pending requests and tags."""
        info, limits = self.info, self.limits
        frames = info.frames["client_to_server"] + info.frames["server_to_client"]
        tags = [
            tag
            for tag, on in (
                ("long-running", now - self.created_at >= limits.long_running_after),
                ("high-volume", frames >= limits.high_volume_frames),
            )
            if on
        ]
        return {
            "sid": self.sid,
            "server": self.server,
            "state": self.state.value,
            "failure": self.machine.failure,
            "era": info.era.value,
            "era_confirmed": info.era_confirmed,
            "protocol_version": info.protocol_version,
            "client_info": info.client_info,
            "server_info": info.server_info,
            "pid": info.pid,
            "age_s": round(now - self.created_at, 3),
            "idle_s": round(now - self.last_activity, 3),
            "frames": dict(info.frames),
            "dropped": self.dropped,
            "pending_count": {"client_to_server": len(self.from_client), "server_to_client": len(self.from_server)},
            "pending": [
                {"direction": direction, "id": p.id, "method": p.method, "age_s": round(now - p.sent_at, 3)}
                for direction, table in (("client_to_server", self.from_client), ("server_to_client", self.from_server))
                for p in table
            ],
            "tags": tags,
        }

    def _drop(self, source: str, reason: str) -> list[Output]:
        self.dropped += 1
        return [Dropped(source, reason)]


@dataclass
class _Respawn:
    """A server restart in progress: the replayed initialize's id, and what the client sent meanwhile."""

    replay_id: str | None = None
    held: list[object] = field(default_factory=list)
