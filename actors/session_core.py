"""The MCP session logic, sans-IO.

`SessionCore` takes what happened (a message from the client or the server,
the server process starting or exiting, a close) plus the current time, and
returns what to do as a list of outputs. It owns no thread, socket or clock,
so it is tested directly; `actors.session.SessionActor` is the thin shell that
feeds it and carries its outputs to the hub.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from actors.pending import PendingTable
from actors.state import SessionStateMachine, State
from transport import jsonrpc
from transport.frames import ErrorCode
from transport.jsonrpc import InvalidMessage, Kind, Message, RequestId

MODERN_VERSION_KEY = "io.modelcontextprotocol/protocolVersion"


class Era(Enum):
    UNKNOWN = "unknown"
    LEGACY = "legacy"
    """Stateful: initialize handshake (2024-11-05 .. 2025-11-25)."""
    MODERN = "modern"
    """Stateless: per-request ``_meta`` protocol version (2026-07-28)."""


# -- outputs -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToClient:
    msg: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToServer:
    msg: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Refuse:
    """An envelope ``error`` frame to the client about a frame it sent."""

    code: ErrorCode
    message: str
    id: RequestId | None = None


@dataclass(frozen=True, slots=True)
class Opened:
    pid: int


@dataclass(frozen=True, slots=True)
class OpenFailed:
    message: str


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """Tell the client its session is over."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class StopServer:
    reason: str


@dataclass(frozen=True, slots=True)
class Finished:
    """Nothing of the session is left; the shell may stop and be forgotten."""


@dataclass(frozen=True, slots=True)
class Dropped:
    """A message nobody is waiting for; counted and logged, never forwarded."""

    source: str
    reason: str


Output = ToClient | ToServer | Refuse | Opened | OpenFailed | SessionClosed | StopServer | Finished | Dropped


@dataclass
class SessionInfo:
    """What the session learned about its peers."""

    era: Era = Era.UNKNOWN
    protocol_version: str | None = None
    client_info: dict[str, Any] | None = None
    server_info: dict[str, Any] | None = None
    client_capabilities: dict[str, Any] | None = None
    server_capabilities: dict[str, Any] | None = None
    pid: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class SessionCore:
    """One MCP session: state machine, correlation both ways, clean endings."""

    def __init__(self, sid: str, server: str, now: float) -> None:
        self.sid = sid
        self.server = server
        self.machine = SessionStateMachine()
        self.info = SessionInfo()
        self.from_client = PendingTable()
        """Requests the client sent, waiting for the server's response."""
        self.from_server = PendingTable()
        """Requests the server sent, waiting for the client's response."""
        self.created_at = now
        self.last_activity = now
        self.dropped = 0
        self.end_reason: str | None = None
        self._started = False
        self._initialize_id: RequestId | None = None

    @property
    def state(self) -> State:
        return self.machine.state

    # -- server process ------------------------------------------------------------

    def server_started(self, pid: int, now: float) -> list[Output]:
        if self._started or self.state is not State.INITIALIZING:
            return []
        self._started = True
        self.info.pid = pid
        self.last_activity = now
        return [Opened(pid)]

    def server_exited(self, code: int | None, reason: str, now: float) -> list[Output]:
        self.last_activity = now
        if self.state is State.SHUTTING_DOWN:
            self.machine.transition(State.CLOSED)
            return [Finished()]
        if self.state.terminal:
            return []
        if not self._started:
            self.machine.transition(State.FAILED, f"server did not start: {reason}")
            return [OpenFailed(f"server {self.server!r} did not start: {reason}"), Finished()]
        message = f"server process ended: {reason}"
        self.machine.transition(State.FAILED, message)
        outputs = self._fail_pending(message, {"reason": "server_exited", "exit_code": code, "detail": reason})
        outputs += [SessionClosed("server_exited", message), Finished()]
        return outputs

    # -- closing -------------------------------------------------------------------

    def close(self, reason: str, now: float) -> list[Output]:
        """End the session: fail what is pending, tell the client, stop the server.

        The session stays SHUTTING_DOWN until the server process has exited.
        """
        if self.state is State.SHUTTING_DOWN or self.state.terminal:
            return [SessionClosed(self.end_reason or "closed", f"session already {self.state.value}")]
        self.last_activity = now
        self.end_reason = reason
        self.machine.transition(State.SHUTTING_DOWN)
        message = f"session closed ({reason})"
        outputs = self._fail_pending(message, {"reason": reason})
        outputs += [SessionClosed(reason, message), StopServer(reason)]
        return outputs

    def fail(self, reason: str, now: float) -> list[Output]:
        """The session cannot go on (an internal error): fail it and finish at once."""
        if self.state.terminal:
            return []
        self.last_activity = now
        was_closing = self.state is State.SHUTTING_DOWN
        self.machine.transition(State.FAILED, reason)
        outputs = self._fail_pending(f"session failed: {reason}", {"reason": "failed"})
        if not was_closing:
            outputs.append(SessionClosed("failed", f"session failed: {reason}"))
        outputs += [StopServer("failed"), Finished()]
        return outputs

    def _fail_pending(self, message: str, data: dict[str, Any]) -> list[Output]:
        """Answer every pending request in both directions: never silence."""
        text = f"Connection closed: {message}"
        outputs: list[Output] = [
            ToClient(jsonrpc.error(p.id, jsonrpc.CONNECTION_CLOSED, text, {**data, "method": p.method}))
            for p in self.from_client.drain()
        ]
        outputs += [
            ToServer(jsonrpc.error(p.id, jsonrpc.CONNECTION_CLOSED, text, {**data, "method": p.method}))
            for p in self.from_server.drain()
        ]
        return outputs

    # -- messages ------------------------------------------------------------------

    def receive_from_client(self, body: object, now: float) -> list[Output]:
        if self.state is State.SHUTTING_DOWN or self.state.terminal:
            return [
                Refuse(
                    ErrorCode.SESSION_CLOSED,
                    f"session {self.sid} is {self.state.value}; open a new session",
                    _id_of(body),
                )
            ]
        try:
            msg = jsonrpc.classify(body)
        except InvalidMessage as exc:
            return [Refuse(ErrorCode.INVALID_MESSAGE, f"not a valid JSON-RPC 2.0 message: {exc.reason}", exc.id)]
        self.last_activity = now
        if msg.kind is Kind.REQUEST:
            return self._client_request(msg, now)
        if msg.kind is Kind.NOTIFICATION:
            self._client_notification(msg)
            return [ToServer(msg.body)]
        if self.from_server.pop(msg.id) is None:  # type: ignore[arg-type]
            return self._drop("client", f"response to unknown server request id {msg.id!r}")
        return [ToServer(msg.body)]

    def receive_from_server(self, body: object, now: float) -> list[Output]:
        if self.state is State.SHUTTING_DOWN or self.state.terminal:
            return self._drop("server", f"message after the session ended ({self.state.value})")
        try:
            msg = jsonrpc.classify(body)
        except InvalidMessage as exc:
            return self._drop("server", f"invalid JSON-RPC from server: {exc.reason}")
        self.last_activity = now
        if msg.kind is Kind.REQUEST:
            if msg.id in self.from_server:
                return [ToServer(_duplicate_id_error(msg.id))]  # type: ignore[arg-type]
            self.from_server.add(msg.id, msg.method, now)  # type: ignore[arg-type]
            return [ToClient(msg.body)]
        if msg.kind is Kind.NOTIFICATION:
            if msg.method == "notifications/cancelled":
                self._cancel(self.from_server, msg)
            return [ToClient(msg.body)]
        pending = self.from_client.pop(msg.id)  # type: ignore[arg-type]
        if pending is None:
            return self._drop("server", f"response to unknown or finished client request id {msg.id!r}")
        if msg.id == self._initialize_id and msg.kind is Kind.RESULT:
            self._record_initialize_result(msg.body["result"])
        return [ToClient(msg.body)]

    def _client_request(self, msg: Message, now: float) -> list[Output]:
        assert msg.id is not None and msg.method is not None
        if msg.id in self.from_client:
            return [ToClient(_duplicate_id_error(msg.id))]
        self.from_client.add(msg.id, msg.method, now)
        params = msg.body.get("params") or {}
        if msg.method == "initialize":
            self._initialize_id = msg.id
            self.info.era = Era.LEGACY
            self.info.client_info = _map(params.get("clientInfo"))
            self.info.client_capabilities = _map(params.get("capabilities"))
            self.info.protocol_version = _str(params.get("protocolVersion"))
        else:
            meta = _map(params.get("_meta")) or {}
            version = meta.get(MODERN_VERSION_KEY)
            if isinstance(version, str):
                self.info.era = Era.MODERN
                self.info.protocol_version = version
                if self.state is State.INITIALIZING:
                    self.machine.transition(State.ACTIVE)
        return [ToServer(msg.body)]

    def _client_notification(self, msg: Message) -> None:
        if msg.method == "notifications/initialized" and self.state is State.INITIALIZING:
            self.machine.transition(State.ACTIVE)
        elif msg.method == "notifications/cancelled":
            self._cancel(self.from_client, msg)

    @staticmethod
    def _cancel(table: PendingTable, msg: Message) -> None:
        request_id = _cancelled_id(msg)
        if request_id is not None:
            table.pop(request_id)

    def _record_initialize_result(self, result: object) -> None:
        result = _map(result) or {}
        self.info.protocol_version = _str(result.get("protocolVersion")) or self.info.protocol_version
        self.info.server_info = _map(result.get("serverInfo"))
        self.info.server_capabilities = _map(result.get("capabilities"))

    def _drop(self, source: str, reason: str) -> list[Output]:
        self.dropped += 1
        return [Dropped(source, reason)]


def _duplicate_id_error(request_id: RequestId) -> dict[str, Any]:
    return jsonrpc.error(
        request_id,
        jsonrpc.INVALID_REQUEST,
        f"request id {request_id!r} is already pending in this session; use a new id for each request",
    )


def _cancelled_id(msg: Message) -> RequestId | None:
    params = msg.body.get("params")
    return _id_of({"id": params.get("requestId")}) if isinstance(params, dict) else None


def _id_of(body: object) -> RequestId | None:
    value = body.get("id") if isinstance(body, dict) else None
    return value if isinstance(value, (str, int)) and not isinstance(value, bool) else None


def _map(value: object) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
