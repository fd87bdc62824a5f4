"""The troupe client library: a small synchronous API for other processes.

    from mcp_troupe.transport.client import Client

    with Client() as client:                       # the daemon's default endpoint
        session = client.open("example")
        session.initialize()                       # MCP handshake (legacy era)
        tools = session.request("tools/list")
        result = session.request("tools/call", {"name": "add", "arguments": {"a": 2, "b": 3}})
        session.close()

One `Client` is one DEALER connection and is meant for one thread (ZMQ
sockets are not thread-safe); open as many sessions on it as you like. A
JSON-RPC error response raises `RequestError` with its code, message and
data; an envelope error from the daemon raises `FrameRefused` with its stable
code.

With ``reconnect`` (seconds), a client whose daemon went away waits that long for
it to come back and attaches every open session again with its resume token (a
daemon restarted after a kill keeps them: docs/persistence.rst). Each request in
flight when the connection was lost is answered once, with `DAEMON_LOST` (its
outcome is unknown: it may have run); what is sent meanwhile waits in the caller,
which blocks until the daemon is back or the window has passed.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Self

import zmq

from mcp_troupe.transport import dealer, discovery
from mcp_troupe.transport.dealer import DealerLink
from mcp_troupe.transport.keys import Credentials, KeyFileError
from mcp_troupe.transport.wire import jsonrpc
from mcp_troupe.transport.wire.frames import DAEMON_TO_CLIENT, FrameError, decode, encode

log = logging.getLogger("troupe.client")

DEFAULT_PROTOCOL_VERSION = "2025-11-25"
DAEMON_LOST = "daemon_lost"
"""``error.data.reason`` of the answer (code -32000) a request gets when the daemon went away while it was in
flight and the client reconnected: whether the server ran it is unknown."""
_ATTACH_RETRY = 0.1
"""Seconds between attempts to attach a session the restarted daemon is still restoring."""
CLIENT_INFO = {"name": "troupe-client", "version": "1"}


class TroupeError(Exception):
    """Base of every error this library raises."""


class DaemonUnavailable(TroupeError):
    """The daemon cannot be reached."""


class Timeout(TroupeError, TimeoutError):
    """No answer within the time allowed."""


class FrameRefused(TroupeError):
    """The daemon refused a frame (an envelope ``error`` frame)."""

    def __init__(self, code: str, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data or {}


class RequestError(TroupeError):
    """A JSON-RPC error response to a request."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code}: {message}" + (f" ({data})" if data is not None else ""))
        self.code = code
        self.message = message
        self.data = data


class SessionClosed(TroupeError):
    """The session ended (closed by either side, or failed)."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(f"session closed ({reason}){': ' + message if message else ''}")
        self.reason = reason
        self.message = message


class Client:
    """A connection to the troupe daemon's front socket.

    ``connect_timeout`` bounds how long a daemon that cannot be reached is
    waited for (a tcp endpoint nobody listens on); ``heartbeat_timeout``, off
    by default, drops the connection when the daemon sends nothing at all for
    that long (a frozen daemon, a lost network). A daemon that exits is
    noticed at once either way: whatever is being waited for raises
    `DaemonUnavailable`.

    On a tcp endpoint whose daemon uses CurveZMQ, ``server_key`` is the daemon's public key (or its
    ``.key`` file) and ``key_file`` this client's ``.key_secret`` file; either defaults to
    ``TROUPE_SERVER_KEY`` / ``TROUPE_KEY_FILE``. A key the daemon does not let in raises
    `DaemonUnavailable` saying so.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        heartbeat_timeout: float = 0.0,
        server_key: str | None = None,
        key_file: str | None = None,
        reconnect: float = 0.0,
    ) -> None:
        try:
            self.endpoint = endpoint or discovery.find()
        except discovery.NotFound as exc:
            raise DaemonUnavailable(str(exc)) from None
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        problem = dealer.unreachable(self.endpoint)
        if problem is not None:
            raise DaemonUnavailable(f"{problem}; start one with `troupe serve`, or give the endpoint it serves on")
        # The process's shared context: closing a Client closes its sockets, and no context of its own can
        # be left to a garbage collector that might terminate it before its sockets (which never returns).
        try:
            credentials = Credentials.resolve(server_key, key_file)
        except KeyFileError as exc:
            raise DaemonUnavailable(str(exc)) from None
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.reconnect = reconnect
        """Seconds a lost daemon is waited for, its sessions then attached again; 0: lost means `DaemonUnavailable`."""
        self._recovering = False
        self._new_link: Callable[[], DealerLink] = functools.partial(
            DealerLink, self._ctx, self.endpoint, timeout_ms=round(heartbeat_timeout * 1000), credentials=credentials
        )
        self._link = self._new_link()
        try:
            self._link.connect()
        except zmq.ZMQError as exc:
            self._close_sockets()
            raise DaemonUnavailable(
                f"cannot connect to {self.endpoint!r} ({exc}); an endpoint looks like "
                "ipc:///run/user/1000/troupe/front.sock or tcp://127.0.0.1:5555"
            ) from None
        self._started = time.monotonic()
        self._refs = itertools.count(1)
        self._replies: dict[int | str, dict[str, Any]] = {}
        self._sessions: dict[str, Session] = {}

    # -- public ----------------------------------------------------------------------

    def open(
        self,
        server: str,
        *,
        timeout: float | None = None,
        expire_idle: bool = False,
        env: dict[str, str] | None = None,
        stderr: bool = False,
    ) -> Session:
        """Open a session to the server named ``server``; its process starts now.

        The session lasts until it is closed or this connection ends; with ``expire_idle`` the daemon
        also closes it after its ``idle_timeout`` without traffic. ``env``: variables for this session's
        server process, among those its ``pass_env`` names (the daemon refuses others). ``stderr``: the
        lines the server writes to stderr arrive in `Session.stderr`.
        """
        ref = next(self._refs)
        fields = {"expire_idle": expire_idle or None, "env": env or None, "stderr": stderr or None}
        self._send(encode("open", ref=ref, server=server, **fields))
        reply = self._await_reply(ref, timeout, f"opening a session to {server!r}")
        if reply["t"] == "error":
            raise FrameRefused(reply["code"], reply["message"], reply.get("data"))
        session = Session(self, reply["sid"], reply["server"], reply.get("token", ""))
        self._sessions[session.sid] = session
        return session

    def attach(self, sid: str, token: str, *, timeout: float | None = None) -> Session:
        """Take over session ``sid`` on this connection, with the resume token it was opened with
        (`Session.token`): after a reconnect, or from another process. The connection that had it is
        told (``closed``, reason ``attached_elsewhere``); frames held while it had none follow."""
        ref = next(self._refs)
        self._send(encode("attach", ref=ref, sid=sid, token=token))
        reply = self._await_reply(ref, timeout, f"attaching session {sid}")
        if reply["t"] == "error":
            raise FrameRefused(reply["code"], reply["message"], reply.get("data"))
        session = Session(self, reply["sid"], reply["server"], token)
        session._seq = reply["seq"]
        self._sessions[session.sid] = session
        return session

    def control(self, op: str, args: dict[str, Any] | None = None, *, timeout: float | None = None) -> dict[str, Any]:
        """Run a control operation (see docs/control.rst) and return its result."""
        ref = next(self._refs)
        self._send(encode("ctl", ref=ref, op=op, args=args))
        reply = self._await_reply(ref, timeout, f"control op {op!r}")
        if reply["t"] == "error" or not reply.get("ok"):
            error = reply.get("error") or reply
            raise FrameRefused(error.get("code", "error"), error.get("message", "control op failed"))
        result: dict[str, Any] = reply.get("result", {})
        return result

    def health(self, *, timeout: float | None = None) -> dict[str, Any]:
        return self.control("health", timeout=timeout)

    def close(self) -> None:
        """Close the connection; the daemon closes the sessions still open on it."""
        self._close_sockets()

    def _close_sockets(self) -> None:
        self._link.close(linger_ms=1000 if self._link.connected and not self._lost else 0)

    @property
    def _connected(self) -> bool:
        return self._link.connected

    @property
    def _lost(self) -> bool:
        """The connection the daemon was reached on ended: the daemon is gone, and its sessions with it."""
        return self._link.connected and self._link.disconnected

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------

    @property
    def _may_recover(self) -> bool:
        return self.reconnect > 0 and not self._recovering

    def _recover(self, what: str) -> None:
        """The daemon went away: answer what was in flight, then reconnect and attach every session again."""
        log.warning("lost the troupe daemon at %s while %s; waiting %gs for it", self.endpoint, what, self.reconnect)
        for session in self._sessions.values():
            session._daemon_lost()
        deadline = time.monotonic() + self.reconnect
        self._recovering = True
        try:
            while True:
                self._link.close(linger_ms=0)
                self._link = self._new_link()
                self._link.connect()
                self._started = time.monotonic()
                try:
                    self._attach_all(deadline)
                    return
                except (DaemonUnavailable, Timeout) as exc:
                    if time.monotonic() >= deadline:
                        raise DaemonUnavailable(
                            f"the troupe daemon at {self.endpoint} did not come back within {self.reconnect:g}s "
                            f"(reconnect): {exc}"
                        ) from None
        finally:
            self._recovering = False

    def _attach_all(self, deadline: float) -> None:
        for session in [s for s in self._sessions.values() if not s.closed]:
            while True:
                ref = next(self._refs)
                self._send(encode("attach", ref=ref, sid=session.sid, token=session.token))
                remaining = max(0.1, deadline - time.monotonic())
                reply = self._await_reply(ref, remaining, f"attaching session {session.sid} again")
                if reply["t"] == "attached":
                    session._seq = reply["seq"]
                    log.info("session %s attached again after the daemon came back", session.sid)
                    break
                if (reply.get("data") or {}).get("reason") == "restoring" and time.monotonic() < deadline:
                    time.sleep(_ATTACH_RETRY)  # the daemon is waiting for the session's adapter
                    continue
                session._closed(DAEMON_LOST, f"{reply['code']}: {reply['message']}")
                break

    def _send(self, data: bytes) -> None:
        if self._lost and self._may_recover:
            self._recover("sending")
        if self._lost:
            raise DaemonUnavailable(f"the connection to the troupe daemon at {self.endpoint} was lost")
        self._link.socket.send(data)  # blocking: a caller waits for room, as for the answer

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _await_reply(self, ref: int, timeout: float | None, what: str) -> dict[str, Any]:
        deadline, link = self._deadline(timeout), self._link
        while ref not in self._replies:
            self._pump(deadline, what)
            if self._link is not link:
                raise DaemonUnavailable(f"the troupe daemon went away while {what}; it is back now: try again")
        return self._replies.pop(ref)

    def _pump(self, deadline: float, what: str) -> None:
        """Receive and file one frame; `Timeout` at the deadline, `DaemonUnavailable` if the daemon is gone
        (with ``reconnect``: back from reconnecting, having filed nothing)."""
        if self._lost and self._may_recover and not self._link.has_input():
            self._recover(what)
            return
        poller = zmq.Poller()
        self._link.register(poller)
        while True:
            self._check_connection(what)
            remaining = deadline - time.monotonic()
            if not self._connected:
                remaining = min(remaining, self._started + self.connect_timeout - time.monotonic())
            ready = dict(poller.poll(max(0, int(remaining * 1000)))) if remaining > 0 else {}
            if self._link.monitor in ready:
                self._link.events()
                if self._lost and self._may_recover and not self._link.has_input():
                    return
            if self._link.socket in ready:
                break
            if not ready:
                self._link.events()
                self._check_connection(what)
                if not self._connected:
                    raise DaemonUnavailable(
                        f"no troupe daemon answers at {self.endpoint} (not connected) while {what}; "
                        "is `troupe serve` running there?"
                    )
                raise Timeout(f"timed out while {what}")
        try:
            frame = decode(self._link.socket.recv(), DAEMON_TO_CLIENT)
        except FrameError as exc:
            log.warning("ignored a bad frame from the daemon: %s", exc)
            return
        self._file(frame)

    def _check_connection(self, what: str) -> None:
        if self._link.handshake_failure and not self._connected:
            raise DaemonUnavailable(f"{self._link.handshake_failure} (while {what})")
        if self._lost and not self._link.has_input():  # what arrived before the loss is read first
            raise DaemonUnavailable(f"lost the connection to the troupe daemon at {self.endpoint} while {what}")
        if not self._connected and time.monotonic() >= self._started + self.connect_timeout:
            self._link.events()
            if not self._connected:
                raise DaemonUnavailable(
                    f"no troupe daemon answers at {self.endpoint} (not connected after {self.connect_timeout:g}s) "
                    f"while {what}; is `troupe serve` running there?"
                )

    def _file(self, frame: dict[str, Any]) -> None:
        kind, sid = frame["t"], frame.get("sid")
        session = self._sessions.get(sid) if sid is not None else None
        if kind in ("opened", "attached", "ctl") or (kind == "error" and "ref" in frame):
            self._replies[frame["ref"]] = frame
        elif session is None:
            log.debug("ignored a %s frame for unknown session %s", kind, sid)
        elif kind == "mcp":
            session._deliver(frame["msg"], frame["seq"])
        elif kind == "closed":
            session._closed(frame["reason"], frame.get("message", ""))
        elif kind == "stderr":
            session.stderr.append(frame["line"])
        else:
            session._refused(FrameRefused(frame["code"], frame["message"], frame.get("data")), frame.get("id"))


class Session:
    """One MCP session through the daemon."""

    def __init__(self, client: Client, sid: str, server: str, token: str = "") -> None:
        self.client = client
        self.sid = sid
        self.server = server
        self.token = token
        """The resume token: with it, `Client.attach` takes the session over from another connection.
        A secret: whoever holds it (and, on CurveZMQ, the key that opened the session) can drive it."""
        self.close_reason: str | None = None
        self.close_message = ""
        self.refusals: list[FrameRefused] = []
        """Envelope errors about frames of this session that named no request of this client (among them a
        response of this client refused for its size: the server was told in its place)."""
        self._ids = itertools.count(1)
        self._responses: dict[jsonrpc.RequestId, dict[str, Any] | FrameRefused] = {}
        self._inbox: deque[dict[str, Any]] = deque()
        self._in_flight: dict[jsonrpc.RequestId, str] = {}
        """Requests sent and not answered yet, with their method: answered by `_daemon_lost` if the daemon goes."""
        self._answered_lost: set[jsonrpc.RequestId] = set()
        self.late_dropped = 0
        """Responses that came after their request had been answered with `DAEMON_LOST` (dropped: one answer each)."""
        self._seq = 0
        self.stderr: deque[str] = deque(maxlen=1000)
        """What the server wrote to stderr, when the session was opened with ``stderr=True`` (the last 1000 lines)."""

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    def send(self, msg: dict[str, Any]) -> None:
        """Send one raw JSON-RPC message."""
        if self.closed:
            raise SessionClosed(self.close_reason or "closed", self.close_message)
        self.client._send(encode("mcp", sid=self.sid, msg=msg))
        if isinstance(msg.get("method"), str) and isinstance(msg.get("id"), int | str):
            self._in_flight[msg["id"]] = msg["method"]
            self._answered_lost.discard(msg["id"])

    def request(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """Send a request and wait for its result; a JSON-RPC error raises `RequestError`."""
        request_id = next(self._ids)
        self.send(jsonrpc.request(request_id, method, params))
        return self.wait_result(request_id, timeout=timeout, what=f"waiting for {method}")

    def wait_result(self, request_id: jsonrpc.RequestId, *, timeout: float | None = None, what: str = "") -> Any:
        """Wait for the response to a request sent with `send`."""
        deadline = self.client._deadline(timeout)
        what = what or f"waiting for the response to request {request_id!r}"
        while request_id not in self._responses:
            if self.closed:
                raise SessionClosed(self.close_reason or "closed", self.close_message)
            try:
                self.client._pump(deadline, what)
            except Timeout:
                self.notify("notifications/cancelled", {"requestId": request_id, "reason": "client timed out"})
                raise
        response = self._responses.pop(request_id)
        if isinstance(response, FrameRefused):
            raise response
        if "error" in response:
            err = response["error"]
            raise RequestError(err.get("code", 0), err.get("message", ""), err.get("data"))
        return response.get("result")

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        self.send(jsonrpc.notification(method, params))

    def respond(self, request_id: jsonrpc.RequestId, result: dict[str, Any]) -> None:
        """Answer a request the server sent (sampling, roots, elicitation, ping)."""
        self.send(jsonrpc.result(request_id, result))

    def respond_error(self, request_id: jsonrpc.RequestId, code: int, message: str, data: Any = None) -> None:
        self.send(jsonrpc.error(request_id, code, message, data))

    def receive(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The next server-to-client request or notification; raises `Timeout` if none comes."""
        deadline = self.client._deadline(timeout)
        while not self._inbox:
            if self.closed:
                raise SessionClosed(self.close_reason or "closed", self.close_message)
            self.client._pump(deadline, "waiting for a message from the server")
        return self._inbox.popleft()

    def initialize(
        self,
        protocol_version: str = DEFAULT_PROTOCOL_VERSION,
        capabilities: dict[str, Any] | None = None,
        client_info: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """The legacy MCP handshake: ``initialize`` then ``notifications/initialized``."""
        params = {
            "protocolVersion": protocol_version,
            "capabilities": capabilities or {},
            "clientInfo": client_info or CLIENT_INFO,
        }
        result: dict[str, Any] = self.request("initialize", params, timeout=timeout)
        self.notify("notifications/initialized")
        return result

    def close(self, *, timeout: float | None = None) -> str:
        """Close the session; returns the reason the daemon gives."""
        if not self.closed:
            client, link = self.client, None
            deadline = client._deadline(timeout)
            ref = 0
            while not self.closed and ref not in client._replies:
                if client._link is not link:  # first, or the daemon came back: the close goes (again) to it
                    ref = next(client._refs)
                    client._send(encode("close", sid=self.sid, ref=ref))
                    link = client._link
                client._pump(deadline, f"closing session {self.sid}")
            refusal = self.client._replies.pop(ref, None)
            if refusal is not None:
                self._closed(refusal["code"], refusal["message"])
        self.client._sessions.pop(self.sid, None)
        return self.close_reason or "closed"

    # -- called by Client._file ----------------------------------------------------

    def _deliver(self, msg: dict[str, Any], seq: int) -> None:
        if seq != self._seq + 1:
            log.warning("session %s: frame seq %d after %d; frames were lost", self.sid, seq, self._seq)
        self._seq = seq
        if "method" not in msg and "id" in msg:
            if msg["id"] in self._answered_lost:  # answered already, by _daemon_lost: never twice
                self._answered_lost.discard(msg["id"])
                self.late_dropped += 1
                log.info(
                    "session %s: dropped a late response to request %r (answered at the loss)", self.sid, msg["id"]
                )
                return
            self._responses[msg["id"]] = msg
            self._in_flight.pop(msg["id"], None)
        else:
            self._inbox.append(msg)

    def _daemon_lost(self) -> None:
        """Each request in flight gets its one answer now: the daemon that had it is gone."""
        for request_id, method in self._in_flight.items():
            text = "Connection closed: the troupe daemon went away while this request was in flight; it may have run"
            data = {"reason": DAEMON_LOST, "method": method}
            self._responses[request_id] = jsonrpc.error(request_id, jsonrpc.CONNECTION_CLOSED, text, data)
        self._answered_lost.update(self._in_flight)
        self._in_flight.clear()

    def _closed(self, reason: str, message: str) -> None:
        self.close_reason = reason
        self.close_message = message

    def _refused(self, error: FrameRefused, request_id: jsonrpc.RequestId | None) -> None:
        """An ``id`` names one of this client's requests, unless the refused message was a response
        (``data.response``): the server's request it answered is answered by the daemon instead."""
        if request_id is not None and not (error.data or {}).get("response"):
            self._responses[request_id] = error
            self._in_flight.pop(request_id, None)
        else:
            self.refusals.append(error)
