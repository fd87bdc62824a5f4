"""The server adapter: runs MCP server processes for the daemon.

One adapter serves one named server. It connects a DEALER socket to the
daemon's ``back`` endpoint, registers, and then starts one `ServerProcess` per
session the daemon asks for, relaying MCP messages both ways.

Everything runs on the thread that calls `Adapter.run`: it alone owns the socket
and the session table. Server threads report through a `Mailbox` the poller
wakes on, and so does `Adapter.request_stop`, which is why it is safe from a
signal handler or another thread.

The adapter registers on every connection the socket makes (a socket monitor,
attached before connecting, reports them), not just the first: after a daemon
restart it is back on the daemon's books even if idle. A daemon that forgot it
anyway answers ``error {code: not_registered}`` and the adapter registers again.

Its registration names its live sessions (sid and server pid), so a daemon that
restarted can restore the ones it stored. With ``orphan_grace``, an adapter whose
daemon is gone (its parent died, or the connection was lost) keeps its server
processes that long; an adapter whose parent daemon died is then *retiring*: the
next daemon takes back its sessions but gives it no new ones, and it exits once
the last of them ends. If no daemon takes it back within the grace, it stops its
servers the spec's way (and, retiring, exits).
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import zmq

from mcp_troupe.transport.adapter.server_process import (
    MAX_LINE_BYTES,
    MAX_LINE_CONTAINERS,
    ProcessEvent,
    ServerProcess,
    SpawnError,
)
from mcp_troupe.transport.dealer import DealerLink
from mcp_troupe.transport.keys import Credentials
from mcp_troupe.transport.mailbox import Mailbox
from mcp_troupe.transport.wire import frames
from mcp_troupe.transport.wire.kinds import ErrorFrame, decode_for_adapter

log = logging.getLogger("troupe.adapter")

if TYPE_CHECKING:  # the remote path (httpx: a tenth of a second to import) is loaded only by an adapter serving a url
    from mcp_troupe.transport.upstream.loop import Upstream
    from mcp_troupe.transport.upstream.session import FaultEvent, UpstreamSession

StopEvent = tuple[Literal["stop"], str]
_Item: TypeAlias = "ProcessEvent | StopEvent | FaultEvent"

_HOUSEKEEPING_MS: Final = 500
EXIT_REFUSED: Final = 3
"""Exit status when the daemon's handshake fails before the adapter could register (its key, or the daemon's)."""
_SHUTDOWN_GRACE: Final = 2.0
"""Seconds the shutdown waits beyond ``stop_timeout + term_timeout``."""
_BATCH: Final = 512
"""Frames taken from the socket per wake-up, so the mailbox is not starved."""
_OUTBOX_HIGH: Final = 2000
"""Frames waiting for the daemon at which every server's output stops being read."""
_OUTBOX_LOW: Final = 200
"""... and below which it is read again."""


class Adapter:
    """The adapter's I/O loop; see the module docstring."""

    def __init__(
        self,
        server: str,
        command: list[str],
        endpoint: str,
        *,
        capacity: int = 0,
        stop_timeout: float = 2.0,
        term_timeout: float = 2.0,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        exit_with_parent: bool = False,
        orphan_grace: float = 0.0,
        heartbeat_ms: int = 1000,
        adapter_id: str | None = None,
        max_message_bytes: int = MAX_LINE_BYTES,
        max_message_items: int = MAX_LINE_CONTAINERS,
        credentials: Credentials | None = None,
        upstream: Callable[[Callable[[Any], object]], Upstream] | None = None,
    ) -> None:
        """``capacity`` 0 means unlimited; ``env`` replaces the servers' environment (None: the adapter's);
        either way troupe's own ``TROUPE_*`` variables are left out. ``credentials``: CurveZMQ keys for a
        tcp endpoint (`Credentials.resolve`). ``upstream``: serve a remote server instead of ``command``
        (called with the function its sessions report through, it makes the `Upstream`)."""
        if not command and upstream is None:
            raise ValueError("command must name a program to run")
        if capacity < 0:
            raise ValueError("capacity must be 0 (unlimited) or more")
        self.server = server
        self.endpoint = endpoint
        self.capacity = capacity
        self.exit_with_parent = exit_with_parent
        self.orphan_grace = orphan_grace
        """Seconds its servers outlive a lost daemon, waiting for the next one (0: they stop at once)."""
        self.heartbeat_ms = heartbeat_ms
        self.credentials = credentials
        self.exit_code = 0
        self._shutdown_timeout = stop_timeout + term_timeout + _SHUTDOWN_GRACE
        self._mailbox: Mailbox[_Item] = Mailbox()
        self._base_env = dict(os.environ if env is None else env)
        self._start_process: Callable[..., ServerProcess | UpstreamSession] = functools.partial(
            ServerProcess,
            command=list(command),
            report=self._mailbox.put,
            cwd=cwd,
            stop_timeout=stop_timeout,
            term_timeout=term_timeout,
            max_line=max_message_bytes,
            max_containers=max_message_items,
        )
        self._upstream = upstream(self._mailbox.put) if upstream is not None else None
        if self._upstream is not None:
            self._start_process = self._upstream.open
        self._sessions: dict[str, ServerProcess | UpstreamSession] = {}
        self._paused: set[str] = set()
        """Sessions whose client is not reading (the daemon said ``pause``): their output waits in the server."""
        self._choked = False
        """The outbox is long: no server's output is read until it drains."""
        self._link: DealerLink | None = None
        self._parent_pid = os.getppid()
        self.adapter_id = adapter_id or secrets.token_hex(8)
        """Stable across reconnects, so the daemon can tell a reconnect from a new adapter."""
        self._last_sent = 0.0
        self._stopping = False
        self._stop_reason = ""
        self._deadline = 0.0
        self._orphan_deadline: float | None = None
        """While no daemon has taken this adapter's sessions back: when its servers stop."""
        self._retiring = False

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask `run` to stop every server and return. Safe from signal handlers and any thread."""
        self._mailbox.put(("stop", reason))

    def run(self) -> int:
        """Serve until stopped; returns the exit status (0). Call once, from one thread."""
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            # The adapter drops a daemon silent for three heartbeats and reconnects (its sessions follow it).
            hb = self.heartbeat_ms
            link = self._link = DealerLink(
                context,
                self.endpoint,
                heartbeat_ms=hb,
                timeout_ms=3 * hb,
                # started before the daemon binds (`mcp_troupe.actors.daemon.launch`): retry soon, then every 0.1 s
                reconnect_ivl_ms=10,
                reconnect_ivl_max_ms=100,
                credentials=self.credentials,
            )
            link.connect()
            log.info("adapter for %r connecting to %s", self.server, self.endpoint)
            if self._upstream is not None:
                self._upstream.start()
            try:
                self._loop(link)
                self._report_abandoned()
                self._send("unregister", reason=self._stop_reason or "stopped")
                self._flush_outbox()
            finally:
                link.close()
                if self._upstream is not None:
                    self._upstream.close()
        finally:
            context.term()
        log.info("adapter for %r stopped", self.server)
        return self.exit_code

    def _loop(self, link: DealerLink) -> None:
        poller = zmq.Poller()
        poller.register(self._mailbox.fileno(), zmq.POLLIN)
        while not self._finished():
            link.register(poller)
            ready = dict(poller.poll(self._poll_timeout_ms()))
            if link.outbox and ready.get(link.socket, 0) & zmq.POLLOUT:
                self._flush_outbox()
            events = link.events() if link.monitor in ready else []
            if zmq.EVENT_DISCONNECTED in events:
                self._orphaned("the connection to the daemon was lost")
            if zmq.EVENT_HANDSHAKE_SUCCEEDED in events:
                self._register()
            if link.handshake_failure and not link.connected:
                log.error("cannot register: %s", link.handshake_failure)
                self.exit_code = EXIT_REFUSED
                return
            if link.socket in ready:
                for data in link.receive(_BATCH):
                    self._on_frame(data)
            if self._mailbox.fileno() in ready:
                for item in self._mailbox.drain():
                    self._on_item(item)
            self._check_parent()
            self._check_orphan_grace()
            self._heartbeat()

    def _finished(self) -> bool:
        return self._stopping and (not self._sessions or time.monotonic() >= self._deadline)

    def _poll_timeout_ms(self) -> int:
        if not self._stopping:
            return _HOUSEKEEPING_MS
        return max(0, min(_HOUSEKEEPING_MS, int((self._deadline - time.monotonic()) * 1000) + 1))

    def _heartbeat(self) -> None:
        """An application heartbeat: the daemon fails this adapter's sessions when it goes silent."""
        if time.monotonic() - self._last_sent >= self.heartbeat_ms / 1000:
            self._send("heartbeat")

    def _check_parent(self) -> None:
        if not self.exit_with_parent or self._stopping or os.getppid() == self._parent_pid:
            return
        self._parent_pid = os.getppid()
        if self.orphan_grace <= 0 or not self._sessions:
            self._begin_shutdown("parent process is gone")
            return
        self._retiring = True
        self._orphaned("its parent daemon is gone")

    def _orphaned(self, why: str) -> None:
        """No daemon holds this adapter's sessions now: they wait ``orphan_grace`` for the next one."""
        if self._stopping or self.orphan_grace <= 0 or not self._sessions:
            return
        if self._orphan_deadline is None:
            self._orphan_deadline = time.monotonic() + self.orphan_grace
            log.warning(
                "%s: keeping %d server(s) for %gs (orphan_grace) for a daemon to take them back",
                why,
                len(self._sessions),
                self.orphan_grace,
            )
        if self._retiring:
            self._register()  # the next daemon must hear that this one takes no new sessions

    def _check_orphan_grace(self) -> None:
        if self._orphan_deadline is None or time.monotonic() < self._orphan_deadline:
            return
        self._orphan_deadline = None
        reason = f"no daemon took its sessions back within orphan_grace ({self.orphan_grace:g}s)"
        if self._retiring:
            self._begin_shutdown(reason)
            return
        log.warning("%s: stopping %d server(s)", reason, len(self._sessions))
        for process in self._sessions.values():
            process.stop()

    def _adopted(self) -> None:
        """A daemon answered ``registered``: it holds the sessions it restored (and closes the rest)."""
        if self._orphan_deadline is not None:
            self._orphan_deadline = None
            log.info("a daemon took back this adapter's %d session(s)", len(self._sessions))
        self._retire_if_done()

    def _retire_if_done(self) -> None:
        if self._retiring and not self._sessions and not self._stopping:
            self._begin_shutdown("it outlived its daemon and its last session ended")

    # daemon -> adapter

    def _on_frame(self, data: bytes) -> None:
        try:
            frame = decode_for_adapter(data)
        except frames.FrameError as exc:
            log.warning("dropped a bad frame from the daemon: %s", exc)
            return
        if frame["t"] == "mcp":
            self._to_server(frame["sid"], frame["msg"])
        elif frame["t"] == "spawn":
            self._spawn(frame["sid"], frame.get("env"))
        elif frame["t"] == "close":
            self._close(frame["sid"], frame["reason"])
        elif frame["t"] == "pause":
            self._paused.add(frame["sid"])
            self._apply_reading(frame["sid"])
        elif frame["t"] == "resume":
            self._paused.discard(frame["sid"])
            self._apply_reading(frame["sid"])
        elif frame["t"] == "registered":
            log.info("registered with the daemon as %r", frame["server"])
            self._adopted()
        else:
            self._on_error(frame)

    def _spawn(self, sid: str, session_env: dict[str, Any] | None = None) -> None:
        if sid in self._sessions:
            log.warning("session %s: spawn repeated, the server is already running", sid)
            self._send("spawned", sid=sid, pid=self._sessions[sid].pid)
            return
        refusal = self._spawn_refusal()
        if refusal is not None:
            self._send_exited(sid, None, f"spawn refused: {refusal}")
            return
        try:
            process = self._start_process(sid, env=self._env_for(session_env))
        except SpawnError as exc:
            log.warning("session %s: %s", sid, exc)
            self._send_exited(sid, None, f"spawn failed: {exc}")
            return
        self._sessions[sid] = process
        self._apply_reading(sid)
        log.info("session %s: started server pid %d", sid, process.pid)
        self._send("spawned", sid=sid, pid=process.pid)

    def _env_for(self, session_env: dict[str, Any] | None) -> dict[str, str]:
        """A server's environment: the adapter's (or the one it was given) without troupe's own
        ``TROUPE_*`` variables, plus what the session brought (names the daemon let through: pass_env)."""
        env = {k: v for k, v in self._base_env.items() if not k.startswith("TROUPE_")}
        for name, value in (session_env or {}).items():
            if isinstance(name, str) and isinstance(value, str):
                env[name] = value
        return env

    def _spawn_refusal(self) -> str | None:
        if self._stopping:
            return "the adapter is shutting down"
        if self._retiring:
            return "the adapter outlived its daemon and takes no new sessions"
        if self.capacity and len(self._sessions) >= self.capacity:
            return f"the adapter is at capacity (capacity={self.capacity})"
        return None

    def _to_server(self, sid: str, msg: dict[str, Any]) -> None:
        if (process := self._sessions.get(sid)) is None:
            log.debug("session %s: no server process (ended?); dropped an mcp frame", sid)
            return
        try:
            process.send(msg)
        except (TypeError, ValueError) as exc:
            log.warning("session %s: message is not valid JSON, dropped: %s", sid, exc)

    def _close(self, sid: str, reason: str) -> None:
        if (process := self._sessions.get(sid)) is None:
            log.debug("session %s: close for a session with no server process", sid)
            return
        log.info("session %s: stopping server pid %d (%s)", sid, process.pid, reason)
        process.stop()

    def _on_error(self, frame: ErrorFrame) -> None:
        if frame["code"] == frames.ErrorCode.NOT_REGISTERED:
            log.info("the daemon does not know this adapter (restarted?); registering again")
            self._register()
        else:
            log.warning("daemon reported %s: %s (sid=%s)", frame["code"], frame["message"], frame.get("sid"))

    # mailbox -> daemon

    def _on_item(self, item: _Item) -> None:
        match item:
            case ("mcp", sid, msg, checked):
                if sid in self._sessions:
                    self._send("mcp", sid=sid, msg=msg, checked=checked or None)
                else:
                    log.debug("session %s: output after the session ended, dropped", sid)
            case ("stderr", sid, line):
                if sid in self._sessions:
                    self._send("stderr", sid=sid, line=line)
            case ("exited", sid, code, reason):
                self._sessions.pop(sid, None)
                self._paused.discard(sid)
                log.info("session %s: server %s", sid, reason)
                self._send_exited(sid, code, reason)
                self._retire_if_done()
            case ("fault", sid, kind, status):
                if sid in self._sessions:
                    self._send("fault", sid=sid, kind=kind, status=status)
            case ("stop", reason):
                self._begin_shutdown(reason)

    def _begin_shutdown(self, reason: str) -> None:
        if self._stopping:
            return
        self._stop_reason = reason
        log.info("adapter shutting down (%s): stopping %d server(s)", reason, len(self._sessions))
        self._stopping = True
        self._deadline = time.monotonic() + self._shutdown_timeout
        for process in self._sessions.values():
            process.stop()

    def _report_abandoned(self) -> None:
        for sid, process in self._sessions.items():
            log.error("session %s: server pid %d did not exit in time; abandoning it", sid, process.pid)
            self._send_exited(sid, None, f"adapter stopped; server pid {process.pid} did not exit in time")
        self._sessions.clear()

    # frames out

    def _register(self) -> None:
        """Ahead of every frame waiting: a new daemon must know the sessions before their output reaches it."""
        assert self._link is not None
        sessions = {sid: process.pid for sid, process in self._sessions.items()}
        data = frames.encode(
            "register",
            server=self.server,
            capacity=self.capacity,
            pid=os.getpid(),
            adapter_id=self.adapter_id,
            sessions=sessions or None,
            retiring=self._retiring or None,
        )
        self._last_sent = time.monotonic()
        self._link.outbox.appendleft(data)
        self._flush_outbox()

    def _send_exited(self, sid: str, code: int | None, reason: str) -> None:
        """``code`` is left out when there is none (spawn failed, process abandoned)."""
        self._send("exited", sid=sid, code=code, reason=reason)

    def _send(self, frame_type: str, **fields: Any) -> None:
        try:
            data = frames.encode(frame_type, **fields)
        except (TypeError, ValueError, OverflowError) as exc:
            log.warning("session %s: cannot encode a %r frame, dropped: %s", fields.get("sid"), frame_type, exc)
            return
        self._send_bytes(frame_type, data)

    def _send_bytes(self, frame_type: str, data: bytes) -> None:
        """Never block the loop (a daemon that stops reading must not freeze every session), never drop:
        what the socket does not take waits in the outbox, and while that is long no server output is read."""
        assert self._link is not None
        self._last_sent = time.monotonic()
        if frame_type == "heartbeat" and self._link.outbox:
            return  # the frames waiting already say we are alive once they go
        self._link.outbox.append(data)
        self._flush_outbox()

    def _flush_outbox(self) -> None:
        assert self._link is not None
        self._link.flush()
        outbox = self._link.outbox
        choked = len(outbox) >= _OUTBOX_HIGH or (self._choked and len(outbox) > _OUTBOX_LOW)
        if choked != self._choked:
            self._choked = choked
            log.log(
                logging.WARNING if choked else logging.INFO,
                "the daemon is %s; %s reading server output",
                "not taking frames (not connected, or slow)" if choked else "taking frames again",
                "stopped" if choked else "resumed",
            )
            for sid in self._sessions:
                self._apply_reading(sid)

    def _apply_reading(self, sid: str) -> None:
        process = self._sessions.get(sid)
        if process is not None:
            process.set_reading(not self._choked and sid not in self._paused)
