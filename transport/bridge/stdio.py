"""``troupe connect SERVER``: a stdio MCP server that is really a troupe session.

An MCP client (an IDE, an agent) launches ``troupe connect example`` as if it
were the MCP server: it writes newline-delimited JSON-RPC to our stdin and reads
it from our stdout. The bridge opens one session to SERVER on the daemon's front
socket, relays every stdin line as an ``mcp`` frame, and every ``mcp`` frame
back as one stdout line. MCP semantics stay end to end: the bridge answers only
what it cannot forward (lines that are not JSON, batches, values msgpack cannot
carry, requests the daemon refused with an ``error`` frame) and, when the
daemon connection is lost, the requests left without an answer.

One thread does everything. A single ``zmq.Poller`` waits on the DEALER socket,
that socket's monitor (to notice the daemon going away), stdin and a `Mailbox`
that signal handlers post to. stdin is read with one ``os.read`` per poll
wake-up, which cannot block on a readable fd, so the fd's ``O_NONBLOCK`` flag
(shared with every process holding the same pipe or terminal) is left alone.
Frames for the daemon go through an outbox sent with ``NOBLOCK``; while it is
long, stdin is not read, so a stalled daemon slows the client down instead of
stalling the loop or growing memory without bound.

stdout carries JSON-RPC lines only; every log line goes to stderr.

Exit status: 0 when the bridge ended the session (stdin EOF, SIGTERM, SIGINT,
stdout closed by the client); 1 when the daemon ended it (``closed`` with
reason ``evicted``, ``idle``, ``server_exited``, ``shutdown``, ..., or the
connection to the daemon was lost); 3 when no session could be opened (the
daemon is unreachable, or refused the ``open``).

With ``reconnect`` (``--reconnect SECONDS``), a lost connection is not the end:
the requests in flight are answered (``data.reason = "daemon_lost"``), stdin is
left unread (what the client writes waits in its pipe) and the bridge attaches
its session again with its resume token on a new connection, until the daemon
has it back or the window has passed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from types import FrameType
from typing import Any, BinaryIO, Final

import zmq

from mcp_troupe.transport import dealer, discovery
from mcp_troupe.transport.dealer import DealerLink
from mcp_troupe.transport.keys import Credentials
from mcp_troupe.transport.mailbox import Mailbox
from mcp_troupe.transport.runtime import RuntimeDirError
from mcp_troupe.transport.wire import frames, jsonrpc
from mcp_troupe.transport.wire.envelope import EnvelopeScan
from mcp_troupe.transport.wire.kinds import (
    AttachedFrame,
    ClosedFrame,
    DaemonMcpFrame,
    ErrorFrame,
    OpenedFrame,
    ToClientFrame,
    decode_for_client,
)

log = logging.getLogger("troupe.connect")

EXIT_OK: Final = 0
EXIT_SESSION_ENDED: Final = 1
EXIT_UNAVAILABLE: Final = 3

MAX_LINE_BYTES: Final = 64 * 1024 * 1024
"""Longest stdin line kept; a longer one is dropped as it arrives and its request answered with -32013."""
SERVER_ERROR: Final = -32000
"""JSON-RPC code for requests the daemon refused for a reason other than the message itself."""

_READ_CHUNK: Final = 1 << 16
_BATCH: Final = 512
"""Frames taken from the socket per wake-up, so stdin and signals are not starved."""
_BACKLOG: Final = 1000
"""Frames waiting (queued or in the outbox) at which stdin stops being read."""
_ATTACH_WAIT: Final = 2.0
"""Seconds an ``attach`` on a new connection is given before another connection is tried."""
_ATTACH_RETRY: Final = 0.1
"""Seconds before attaching again a session the restarted daemon is still restoring."""


class Phase(Enum):
    OPENING = "opening"
    OPEN = "open"
    REATTACHING = "reattaching"
    CLOSING = "closing"


class Rejected(Exception):
    """A stdin line that is not forwarded: the bridge answers it with ``response``, or only logs it (None)."""

    def __init__(self, reason: str, response: dict[str, Any] | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.response = response


@dataclass(frozen=True, slots=True)
class Overlong:
    """A line longer than `LineBuffer.max_line`, in place of its bytes: its size and `EnvelopeScan` envelope."""

    size: int
    envelope: dict[str, Any] | None


class LineBuffer:
    """Splits a byte stream into lines on ``\\n``, keeping a partial last line for the next chunk.

    A line longer than ``max_line`` bytes is not buffered: from the moment it passes the limit its
    bytes only feed an `EnvelopeScan`, and ``feed`` yields an `Overlong` in its place when it ends,
    so that its sender can still be answered by id.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self.max_line = max_line
        self._partial = bytearray()
        self._overlong: EnvelopeScan | None = None
        self._overlong_size = 0

    def feed(self, data: bytes) -> list[bytes | Overlong]:
        *complete, rest = data.split(b"\n")
        lines: list[bytes | Overlong] = []
        for piece in complete:
            self._add(piece)
            lines.append(self._take())
        self._add(rest)
        return lines

    def finish(self) -> list[bytes | Overlong]:
        """At end of input: the last line if it had no newline."""
        if self._overlong is None and not self._partial:
            return []
        return [self._take()]

    def _add(self, piece: bytes) -> None:
        if self._overlong is None:
            self._partial += piece
            if len(self._partial) <= self.max_line:
                return
            self._overlong = EnvelopeScan()
            piece = bytes(self._partial)
            self._partial.clear()
        self._overlong.feed(piece)
        self._overlong_size += len(piece)

    def _take(self) -> bytes | Overlong:
        if self._overlong is None:
            line = bytes(self._partial)
            self._partial.clear()
            return line
        taken = Overlong(self._overlong_size, self._overlong.envelope)
        self._overlong, self._overlong_size = None, 0
        return taken


def _json_code(code: str, data: dict[str, Any]) -> int:
    """The JSON-RPC error code for a request the daemon refused with envelope error ``code``."""
    if code == frames.ErrorCode.INVALID_MESSAGE:
        return jsonrpc.INVALID_REQUEST
    if code == frames.ErrorCode.FRAME_TOO_LARGE or (code == frames.ErrorCode.BAD_FRAME and "limit" in data):
        return jsonrpc.MESSAGE_TOO_LARGE
    return SERVER_ERROR


def parse_line(line: bytes) -> dict[str, Any]:
    """One stdin line as a JSON-RPC message, valid by the daemon's own rules; else `Rejected`."""
    try:
        body = json.loads(line.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        reason = f"not valid JSON ({type(exc).__name__}: {exc})"
        raise Rejected(reason, jsonrpc.error(None, jsonrpc.PARSE_ERROR, f"Parse error: {reason}")) from None
    if isinstance(body, list):
        message = "JSON-RPC batches are not supported (MCP removed them in 2025-06-18); send one message per line"
        raise Rejected("a JSON array (batch)", jsonrpc.error(None, jsonrpc.INVALID_REQUEST, message))
    if not isinstance(body, dict):
        message = f"Invalid Request: a JSON-RPC message must be a JSON object, got {type(body).__name__}"
        raise Rejected(f"a JSON {type(body).__name__}", jsonrpc.error(None, jsonrpc.INVALID_REQUEST, message))
    try:
        jsonrpc.classify(body)
    except jsonrpc.InvalidMessage as exc:
        raise Rejected(exc.reason, _refusal(body, exc.id, f"Invalid Request: {exc.reason}")) from None
    return body


def encode_mcp(sid: str, msg: dict[str, Any]) -> bytes:
    """The ``mcp`` frame for ``msg`` (as JSON text when msgpack cannot carry it); `Rejected` if neither can."""
    try:
        return frames.encode("mcp", sid=sid, msg=msg)
    except (OverflowError, ValueError, TypeError) as exc:
        reason = f"the message cannot be carried ({type(exc).__name__}: {exc})"
        raise Rejected(reason, _refusal(msg, _request_id(msg), f"Invalid Request: {reason}")) from None


def render(msg: dict[str, Any]) -> bytes:
    """One stdout line: compact JSON, UTF-8, newline-terminated."""
    try:
        text = json.dumps(msg, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: valid JSON only as its \udXXX escape
        return (json.dumps(msg, separators=(",", ":"), allow_nan=False) + "\n").encode("ascii")


def _describe(msg: dict[str, Any]) -> str:
    """A short account of a message for debug logs (never its params or result)."""
    kind = "error" if "error" in msg else "result" if "result" in msg else "message"
    what = msg.get("method", kind)
    if msg.get("method") == "notifications/cancelled" and isinstance(params := msg.get("params"), dict):
        what += f" requestId={params.get('requestId')!r} reason={params.get('reason')!r}"
    return f"{what} id={msg['id']!r}" if "id" in msg else what


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _request_id(msg: dict[str, Any]) -> jsonrpc.RequestId | None:
    value = msg.get("id")
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


def _refusal(msg: dict[str, Any], request_id: jsonrpc.RequestId | None, message: str) -> dict[str, Any] | None:
    """The error response for a refused message that asks for an answer; None for notifications and responses."""
    if "id" not in msg or "result" in msg or "error" in msg:
        return None
    return jsonrpc.error(request_id, jsonrpc.INVALID_REQUEST, message)


class StdioBridge:
    """Relay between one MCP client on stdio and one troupe session; see the module docstring."""

    def __init__(
        self,
        server: str,
        endpoint: str | None = None,
        *,
        stdin_fd: int = 0,
        stdout: BinaryIO | None = None,
        open_timeout: float = 10.0,
        close_timeout: float = 5.0,
        server_stderr: bool = True,
        max_line_bytes: int = MAX_LINE_BYTES,
        credentials: Credentials | None = None,
        reconnect: float = 0.0,
    ) -> None:
        """``endpoint`` None means the daemon's default; ``stdout`` None means ``sys.stdout.buffer``;
        ``credentials``: CurveZMQ keys for a tcp endpoint (`Credentials.resolve`); ``reconnect``: seconds a
        lost daemon is waited for, the session then attached again (0: a lost connection ends the bridge)."""
        self.reconnect = reconnect
        self.server = server
        self.credentials = credentials
        self.endpoint = endpoint
        self.stdin_fd = stdin_fd
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.server_stderr = server_stderr
        """Ask for the server's stderr lines and write them to this process's stderr (``[server] ...``)."""
        self._stdout = stdout if stdout is not None else sys.stdout.buffer
        self._stdout_open = True
        self._mailbox: Mailbox[str] = Mailbox()
        self._refs = itertools.count(1)
        self._servers_ref = next(self._refs)
        self._open_ref = next(self._refs)
        self._close_ref: int | None = None
        self._phase = Phase.OPENING
        self._sid: str | None = None
        self._seq = 0
        self._deadline: float | None = None
        self._lines = LineBuffer(max_line_bytes)
        self._stdin_open = True
        self._stopping = False
        self._queued: deque[bytes] = deque()
        """stdin lines read before the session opened."""
        self._pending: set[jsonrpc.RequestId] = set()
        """Ids of the client's requests that have had no response yet."""
        self._exit: int | None = None
        self._link: DealerLink | None = None
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._token = ""
        self._attach_ref: int | None = None
        self._reattach_until = 0.0
        self._answered_lost: set[jsonrpc.RequestId] = set()
        """Requests answered with ``daemon_lost``: a response that still comes for one is dropped."""

    def request_stop(self, reason: str = "stop requested") -> None:
        """Close the session and return from `run`. Safe from signal handlers and any thread."""
        self._mailbox.put(reason)

    def run(self) -> int:
        """Bridge until the session ends; returns the exit status. Call once, from one thread."""
        endpoint = self._resolve_endpoint()
        if endpoint is None:
            return EXIT_UNAVAILABLE
        context = self._context = zmq.Context()
        try:
            # No heartbeat timeout of its own: a client not reading stdout must not cut the session.
            link = self._link = DealerLink(context, endpoint, credentials=self.credentials)
            link.connect()
            log.info("opening a session to %r at %s", self.server, endpoint)
            try:
                with self._signal_handlers():
                    code = self._loop()
            finally:
                self._link.close(linger_ms=self._linger_ms())
        finally:
            context.term()
            self._mailbox.close()
        return code

    def _linger_ms(self) -> int:
        """Time the last frames (a ``close`` sent just before exiting) get to leave, if anyone can take them."""
        return 0 if (self._link is not None and self._link.disconnected) or self._exit == EXIT_UNAVAILABLE else 1000

    # -- setup ---------------------------------------------------------------------

    def _resolve_endpoint(self) -> str | None:
        try:
            endpoint = self.endpoint = self.endpoint or discovery.find()
        except RuntimeDirError as exc:  # NotFound among them: it lists where it looked
            log.error("%s", exc)
            return None
        problem = dealer.unreachable(endpoint)
        if problem is not None:
            log.error("%s; start one with `troupe serve`, or pass the endpoint it serves on with --endpoint", problem)
            return None
        return endpoint

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        """SIGTERM and SIGINT close the session; Python only lets the main thread install handlers."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {signum: signal.signal(signum, self._on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.request_stop(signal.Signals(signum).name)

    # -- the loop ------------------------------------------------------------------

    def _loop(self) -> int:
        poller = zmq.Poller()
        poller.register(self._mailbox.fileno(), zmq.POLLIN)
        # Which variables the server takes from its sessions (pass_env): asked first, sent with the open.
        self._send(frames.encode("ctl", ref=self._servers_ref, op="servers"))
        self._deadline = time.monotonic() + self.open_timeout
        while self._exit is None:
            link = self._link
            assert link is not None
            link.register(poller)
            poller.register(self.stdin_fd, zmq.POLLIN if self._reading_stdin() else 0)
            ready = dict(poller.poll(self._poll_timeout_ms()))
            if link.socket in ready:
                self._drain_socket(link)
            if link.monitor in ready:
                link.events()
                if link.handshake_failure and not link.connected and self._phase is not Phase.REATTACHING:
                    log.error("%s", link.handshake_failure)
                    self._exit = EXIT_UNAVAILABLE
                    break
            if link.disconnected and self._exit is None and not link.has_input():
                self._lost_connection()  # only once the frames that arrived before it are handled
            if self._mailbox.fileno() in ready:
                for reason in self._mailbox.drain():
                    self._stop(reason)
            if self.stdin_fd in ready and self._reading_stdin():
                self._read_stdin()
            if self._link is not link:
                poller.unregister(link.socket)
                poller.unregister(link.monitor)
            self._flush_outbox()
            self._check_deadline()
        return self._exit

    def _reading_stdin(self) -> bool:
        return (
            self._stdin_open
            and not self._stopping
            and self._phase in (Phase.OPENING, Phase.OPEN)
            and len(self._queued) + (len(self._link.outbox) if self._link is not None else 0) < _BACKLOG
        )

    def _poll_timeout_ms(self) -> int | None:
        if self._deadline is None:
            return None
        return max(0, math.ceil((self._deadline - time.monotonic()) * 1000))

    def _check_deadline(self) -> None:
        if self._exit is not None or self._deadline is None or time.monotonic() < self._deadline:
            return
        if self._phase is Phase.OPENING:
            self._open_timed_out()
        elif self._phase is Phase.REATTACHING:
            self._attach_again()
        else:
            log.warning("session %s: no answer to close within %gs; exiting anyway", self._sid, self.close_timeout)
            self._exit = EXIT_OK

    def _open_timed_out(self) -> None:
        if self._stopping:
            log.warning("stopped before the daemon at %s opened a session to %r", self.endpoint, self.server)
            self._exit = EXIT_OK
        elif self._link is not None and self._link.connected:
            log.error(
                "the troupe daemon at %s did not open a session to %r within %gs "
                "(the server may be slow to start; raise --open-timeout)",
                self.endpoint,
                self.server,
                self.open_timeout,
            )
            self._exit = EXIT_UNAVAILABLE
        else:
            log.error(
                "no answer from a troupe daemon at %s within %gs; is `troupe serve` running?",
                self.endpoint,
                self.open_timeout,
            )
            self._exit = EXIT_UNAVAILABLE

    # -- the daemon's side ---------------------------------------------------------

    def _send(self, data: bytes) -> None:
        assert self._link is not None
        self._link.send(data)

    def _flush_outbox(self) -> None:
        """Send what the socket takes now; the rest waits for POLLOUT (a DEALER blocks when full)."""
        assert self._link is not None
        self._link.flush()

    def _lost_connection(self) -> None:
        """The daemon went away: its sessions died with it, and a reconnect would not own ours."""
        if self._phase is Phase.OPENING:
            log.error("lost the connection to the troupe daemon at %s before the session opened", self.endpoint)
            self._exit = EXIT_OK if self._stopping else EXIT_UNAVAILABLE
            return
        if self.reconnect > 0 and self._token and self._phase is not Phase.CLOSING:
            self._begin_reattach()
            return
        log.error("lost the connection to the troupe daemon at %s; session %s is gone", self.endpoint, self._sid)
        self._exit = EXIT_OK if self._phase is Phase.CLOSING else EXIT_SESSION_ENDED
        self._fail_pending("Connection closed: lost the connection to the troupe daemon", {"reason": "disconnected"})

    # -- reconnecting --------------------------------------------------------------

    def _begin_reattach(self) -> None:
        if self._phase is Phase.OPEN:
            log.warning(
                "lost the troupe daemon at %s; waiting %gs for it to take session %s back",
                self.endpoint,
                self.reconnect,
                self._sid,
            )
            self._reattach_until = time.monotonic() + self.reconnect
            self._answered_lost |= self._pending
            self._fail_pending(
                "Connection closed: the troupe daemon went away while this request was in flight; it may have run",
                {"reason": "daemon_lost"},
            )
        self._phase = Phase.REATTACHING
        self._attach_again()

    def _attach_again(self) -> None:
        """A new connection and an ``attach``: answered ``attached``, or an error that says to wait, or not."""
        now = time.monotonic()
        if now >= self._reattach_until:
            log.error(
                "the troupe daemon did not take session %s back within %gs (--reconnect)", self._sid, self.reconnect
            )
            self._exit = EXIT_SESSION_ENDED
            return
        assert self._link is not None and self._context is not None and self._sid is not None
        self._link.close(linger_ms=0)
        self._link = DealerLink(self._context, self.endpoint or "", credentials=self.credentials)
        self._link.connect()
        self._attach_ref = next(self._refs)
        self._send(frames.encode("attach", ref=self._attach_ref, sid=self._sid, token=self._token))
        self._deadline = min(self._reattach_until, now + _ATTACH_WAIT)

    def _on_attached(self, frame: AttachedFrame) -> None:
        if frame["ref"] != self._attach_ref or self._phase is not Phase.REATTACHING:
            log.warning("ignored an unexpected attached frame (ref %r)", frame["ref"])
            return
        self._phase, self._deadline, self._seq = Phase.OPEN, None, frame["seq"]
        log.warning("session %s is back: the daemon took it again", self._sid)
        if self._stopping or not self._stdin_open:
            self._begin_close()

    def _attach_refused(self, code: str, message: str, data: Mapping[str, Any]) -> None:
        if data.get("reason") == "restoring":
            self._deadline = min(self._reattach_until, time.monotonic() + _ATTACH_RETRY)
            return
        log.error("the troupe daemon did not take session %s back: %s: %s", self._sid, code, message)
        self._exit = EXIT_SESSION_ENDED

    def _drain_socket(self, link: DealerLink) -> None:
        """What arrived, up to a batch, until a frame decides the bridge's exit."""
        if self._exiting():
            return
        for data in link.receive(_BATCH):
            try:
                frame = decode_for_client(data)
            except frames.FrameError as exc:
                log.warning("ignored a bad frame from the daemon: %s", exc)
                continue
            self._on_frame(frame)
            if self._exiting():
                return

    def _exiting(self) -> bool:
        return self._exit is not None

    def _on_frame(self, frame: ToClientFrame) -> None:
        if frame["t"] == "mcp":
            self._on_mcp(frame)
        elif frame["t"] == "ctl" and frame["ref"] == self._servers_ref:
            self._send_open(frame)
        elif frame["t"] == "stderr" and frame["sid"] == self._sid:
            self._server_stderr(frame["line"])
        elif frame["t"] == "opened":
            self._on_opened(frame)
        elif frame["t"] == "attached":
            self._on_attached(frame)
        elif frame["t"] == "closed":
            self._on_closed(frame)
        elif frame["t"] == "error":
            self._on_error(frame)
        else:
            log.debug("ignored a %s frame from the daemon", frame["t"])

    def _send_open(self, servers: Mapping[str, Any]) -> None:
        """Open the session, bringing this process's values of the variables the server takes (never logged)."""
        described = (servers.get("result") or {}).get("servers", {}).get(self.server) if servers.get("ok") else None
        names = described.get("pass_env", []) if isinstance(described, dict) else []
        env = {name: os.environ[name] for name in names if isinstance(name, str) and name in os.environ}
        if env:
            log.info("bringing %d variable(s) for the server: %s", len(env), ", ".join(sorted(env)))
        self._send(
            frames.encode(
                "open", ref=self._open_ref, server=self.server, env=env or None, stderr=self.server_stderr or None
            )
        )

    def _on_opened(self, frame: OpenedFrame) -> None:
        if frame["ref"] != self._open_ref or self._phase is not Phase.OPENING:
            log.warning("ignored an unexpected opened frame (ref %r, sid %s)", frame["ref"], frame["sid"])
            return
        self._sid, self._phase, self._deadline = frame["sid"], Phase.OPEN, None
        self._token = frame.get("token", "")
        log.info("session %s to %r is open", self._sid, self.server)
        if self._stopping:
            self._queued.clear()
        while self._queued and self._phase is Phase.OPEN:
            self._relay(self._queued.popleft())
        if self._phase is Phase.OPEN and (self._stopping or not self._stdin_open):
            self._begin_close()

    def _on_mcp(self, frame: DaemonMcpFrame) -> None:
        if frame["sid"] != self._sid:
            log.debug("ignored an mcp frame for session %s", frame["sid"])
            return
        if frame["seq"] != self._seq + 1:
            log.warning("session %s: frame seq %d after %d; frames were lost", self._sid, frame["seq"], self._seq)
        self._seq = frame["seq"]
        msg = frame["msg"]
        if "method" not in msg and (request_id := _request_id(msg)) is not None:
            if request_id in self._answered_lost and request_id not in self._pending:
                self._answered_lost.discard(request_id)
                log.info(
                    "session %s: dropped a late response to %r (answered when the daemon was lost)",
                    self._sid,
                    request_id,
                )
                return
            self._pending.discard(request_id)
        log.debug("session %s: <- %s", self._sid, _describe(msg))
        self._write(msg)

    def _on_closed(self, frame: ClosedFrame) -> None:
        if frame["sid"] != self._sid:
            log.debug("ignored a closed frame for session %s", frame["sid"])
            return
        message = frame.get("message", "")
        if self._phase is Phase.CLOSING:
            log.info("session %s closed (%s)", self._sid, frame["reason"])
            self._exit = EXIT_OK
        else:
            log.error("the daemon ended session %s: %s (%s)", self._sid, frame["reason"], message)
            self._exit = EXIT_SESSION_ENDED
        self._fail_pending(f"Connection closed: {message or frame['reason']}", {"reason": frame["reason"]})

    def _server_stderr(self, line: str) -> None:
        """The server's stderr line, as the client would have seen it from the server itself."""
        try:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    def _on_error(self, frame: ErrorFrame) -> None:
        code, message, ref = frame["code"], frame["message"], frame.get("ref")
        if ref is not None and ref == self._servers_ref:
            self._send_open({"ok": False})  # a daemon that cannot say: open without variables
            return
        if ref is not None and ref == self._open_ref and self._phase is Phase.OPENING:
            log.error(
                "the troupe daemon at %s refused to open a session to %r: %s: %s",
                self.endpoint,
                self.server,
                code,
                message,
            )
            self._exit = EXIT_UNAVAILABLE
        elif ref is not None and ref == self._attach_ref and self._phase is Phase.REATTACHING:
            self._attach_refused(code, message, frame.get("data") or {})
        elif ref is not None and ref == self._close_ref:
            log.info("session %s: close answered with %s (%s)", self._sid, code, message)
            self._exit = EXIT_OK
        elif frame.get("sid", self._sid) == self._sid:
            self._on_session_error(frame)
        else:
            log.debug("ignored an error frame for session %s: %s", frame.get("sid"), code)

    def _on_session_error(self, frame: ErrorFrame) -> None:
        """A frame of ours was refused: answer its request, if it was one, so the client is not left waiting."""
        code, message, request_id, data = frame["code"], frame["message"], frame.get("id"), frame.get("data") or {}
        if data.get("response"):
            log.warning(
                "the daemon refused the client's response %r to a request of the server (%s: %s); the server was "
                "answered with an error in its place",
                request_id,
                code,
                message,
            )
            return
        if request_id in self._pending:
            self._pending.discard(request_id)
            self._write(jsonrpc.error(request_id, _json_code(code, data), message, {"troupe_code": code, **data}))
        log.warning("the daemon refused a message of session %s (id %r): %s: %s", self._sid, request_id, code, message)
        if code in (frames.ErrorCode.UNKNOWN_SESSION, frames.ErrorCode.NOT_OWNER) and self._phase is Phase.OPEN:
            log.error("session %s is no longer ours (%s); exiting", self._sid, code)
            self._exit = EXIT_SESSION_ENDED
            self._fail_pending(f"Connection closed: {message}", {"reason": code})

    def _fail_pending(self, message: str, data: dict[str, Any]) -> None:
        """Answer the requests nobody else will; the daemon normally answers them all before ``closed``."""
        for request_id in sorted(self._pending, key=str):
            self._write(jsonrpc.error(request_id, jsonrpc.CONNECTION_CLOSED, message, data))
        self._pending.clear()

    # -- the client's side ---------------------------------------------------------

    def _read_stdin(self) -> None:
        try:
            data = os.read(self.stdin_fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            log.warning("cannot read stdin (%s); treating it as closed", exc)
            data = b""
        lines = self._lines.feed(data) if data else self._lines.finish()
        for line in lines:
            self._on_line(line)
        if not data:
            self._on_stdin_eof()

    def _on_line(self, line: bytes | Overlong) -> None:
        if isinstance(line, Overlong):
            self._answer_overlong(line)
            return
        line = line.strip()
        if not line:
            return
        if self._phase is Phase.OPENING:
            self._queued.append(line)
        elif self._phase is Phase.OPEN:
            self._relay(line)

    def _answer_overlong(self, line: Overlong) -> None:
        """Answer a request too long to carry by its id; one without a readable envelope with id null.

        A notification or a response that is too long has nobody to answer: it is logged only.
        """
        limit = self._lines.max_line
        log.warning("stdin: dropped a %d-byte line, over the limit of %d bytes", line.size, limit)
        envelope = line.envelope
        if envelope is not None and not ("method" in envelope and jsonrpc.is_id(envelope.get("id"))):
            return
        request_id = None if envelope is None else envelope["id"]
        message = f"troupe connect: the message is {line.size} bytes, over the limit of {limit} bytes; send less"
        self._write(jsonrpc.error(request_id, jsonrpc.MESSAGE_TOO_LARGE, message, {"limit": limit, "size": line.size}))

    def _on_stdin_eof(self) -> None:
        log.info("stdin closed; closing the session")
        self._stdin_open = False
        if self._phase is Phase.OPEN:
            self._begin_close()

    def _relay(self, line: bytes) -> None:
        assert self._sid is not None
        try:
            msg = parse_line(line)
            data = encode_mcp(self._sid, msg)
        except Rejected as exc:
            log.warning("stdin: not forwarded: %s", exc.reason)
            if exc.response is not None:
                self._write(exc.response)
            return
        self._track(msg)
        log.debug("session %s: -> %s", self._sid, _describe(msg))
        self._send(data)

    def _track(self, msg: dict[str, Any]) -> None:
        """Keep `_pending` up to date with a message going to the server."""
        request_id = _request_id(msg)
        if "method" in msg and request_id is not None:
            self._pending.add(request_id)
        elif msg.get("method") == "notifications/cancelled" and isinstance(params := msg.get("params"), dict):
            cancelled = params.get("requestId")
            if isinstance(cancelled, str | int):
                self._pending.discard(cancelled)  # the daemon forgets it: no response will come

    def _write(self, msg: dict[str, Any]) -> None:
        if not self._stdout_open:
            return
        try:
            line = render(msg)
        except (ValueError, TypeError) as exc:
            log.warning("could not write a message as JSON, dropped: %s", exc)
            return
        try:
            self._stdout.write(line)
            self._stdout.flush()
        except (OSError, ValueError) as exc:  # BrokenPipeError, or a closed file: the client is gone
            log.info("stdout closed (%s); closing the session", exc)
            self._stdout_open = False
            self._stop("stdout closed")

    def _stop(self, reason: str) -> None:
        if self._exit is not None:
            return
        if self._phase is Phase.CLOSING:
            if reason != "stdout closed":
                log.warning("%s while closing; exiting now", reason)
                self._exit = EXIT_OK
            return
        log.info("%s: closing the session", reason)
        self._stopping = True
        if self._phase is Phase.OPEN:
            self._begin_close()
        elif self._deadline is not None:
            self._deadline = min(self._deadline, time.monotonic() + self.close_timeout)

    def _begin_close(self) -> None:
        self._phase = Phase.CLOSING
        self._close_ref = next(self._refs)
        self._send(frames.encode("close", sid=self._sid, ref=self._close_ref))
        self._deadline = time.monotonic() + self.close_timeout
