"""The front's side of troupe sessions: legacy HTTP sessions, and the pool of warm sessions for 2026-07-28.

Everything here runs on the front's one asyncio loop (no locks): `Sessions` owns the DEALER to
the daemon, reads its frames and hands each session's messages to that session, which routes
them to streams (`routing`) through its `EventLog`. HTTP handlers (`app`) only wait on a
session's `changed` signal and read the log.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import logging
import secrets
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from mcp_troupe.transport.dealer import HEARTBEAT_MS
from mcp_troupe.transport.http.replay import EventLog
from mcp_troupe.transport.http.routing import LegacyRoutes, Routed, SharedRoutes
from mcp_troupe.transport.keys import Credentials
from mcp_troupe.transport.wire import jsonrpc
from mcp_troupe.transport.wire.frames import FrameError, encode
from mcp_troupe.transport.wire.kinds import decode_for_client

log = logging.getLogger("troupe.http")


GONE = frozenset({"unknown_session", "session_closed", "not_owner"})
"""``error`` codes that say the daemon no longer holds a session for this front."""
REPORT_INTERVAL = 1.0
"""Seconds between the front's reports of its counters to the daemon."""
MAX_REPORTED = 200


class FrontBusy(Exception):
    """The daemon's socket has no room for another frame from this front now."""


class OpenRefused(Exception):
    """The daemon refused to open a session (its ``error`` frame's code, message and data)."""

    def __init__(self, code: str, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data or {}


@dataclass(frozen=True)
class FrontOptions:
    replay_events: int = 1000
    replay_bytes: int = 4 * 1024 * 1024
    pool_size: int = 8
    """Most warm sessions per server for 2026-07-28 requests."""
    pool_queue: int = 256
    """Requests that may wait for a free pooled session, per server; beyond, 503."""
    open_timeout: float = 30.0


class Stream(ABC):
    """A session's event log and the signal that wakes its readers; base of both kinds of session."""

    def __init__(self, sid: str, server: str, options: FrontOptions, counts: Counter[str]) -> None:
        self.sid = sid
        self.server = server
        self.log = EventLog(options.replay_events, options.replay_bytes)
        self.finished: dict[int, int] = {}
        """stream -> seq of its final event"""
        self.closed: str | None = None
        self._changed = asyncio.Event()
        self._counts = counts

    def push(self, routed: Routed) -> None:
        if routed.stream is None:
            self._counts["unrouted"] += 1
            log.debug("session %s: no stream for %s; dropped", self.sid, routed.message.get("method"))
            return
        before = self.log.dropped
        event = self.log.append(routed.stream, json.dumps(routed.message, separators=(",", ":")))
        if self.log.dropped > before:
            self._counts["replay_dropped"] += self.log.dropped - before
            log.warning(
                "session %s: %d event(s) fell out of the replay buffer ([http] replay_events/replay_bytes)",
                self.sid,
                self.log.dropped - before,
            )
        if routed.final:
            self.finished[routed.stream] = event.seq
        if self.finished and self.log.dropped > before:  # finished streams whose end fell out: no one can resume them
            oldest = self.log.first_seq
            self.finished = {s: seq for s, seq in self.finished.items() if seq >= oldest}
        self.wake()

    def wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def change(self) -> asyncio.Event:
        """The event the next change sets: take it before reading the log, wait on it after."""
        return self._changed

    @abstractmethod
    def live(self, stream: int) -> bool:
        """The stream's request is still waiting for its answer."""

    @abstractmethod
    def deliver(self, message: dict[str, Any]) -> None:
        """A message of the server's, to route to its stream."""

    def close(self, reason: str) -> None:
        self.closed = reason
        self.wake()


class LegacySession(Stream):
    """One ``Mcp-Session-Id`` session: a troupe session of its own.

    Its ``Mcp-Session-Id`` is ``<troupe sid>.<nonce>``. The troupe session's resume token is derived
    from the nonce and the bearer token's name with the front's secret (`resume_token`), so a front
    started by the next daemon attaches it again from the id alone, and only for the same bearer token;
    the nonce alone gives nothing, and the token is stored nowhere."""

    def __init__(
        self,
        sid: str,
        server: str,
        token_name: str | None,
        options: FrontOptions,
        counts: Counter[str],
        nonce: str = "",
    ) -> None:
        super().__init__(sid, server, options, counts)
        self.token_name = token_name
        self.nonce = nonce
        self.routes = LegacyRoutes()
        self.standalone_cursor = 0
        self.standalone_open = False

    @property
    def http_id(self) -> str:
        return f"{self.sid}.{self.nonce}"

    def deliver(self, message: dict[str, Any]) -> None:
        self.push(self.routes.route(message))

    def live(self, stream: int) -> bool:
        return stream in self.routes.pending.values()


class PooledSession(Stream):
    """A warm 2026-07-28 session shared by many HTTP requests, one ordinary request at a time."""

    def __init__(self, sid: str, server: str, options: FrontOptions, counts: Counter[str], pool_key: str = "") -> None:
        super().__init__(sid, server, options, counts)
        self.pool_key = pool_key
        self.routes = SharedRoutes()
        self._streams = itertools.count(1)
        self.on_free: Callable[[], None] = lambda: None

    def new_stream(self) -> int:
        return next(self._streams)

    def live(self, stream: int) -> bool:
        return any(call.stream == stream for call in self.routes.calls.values())

    def deliver(self, message: dict[str, Any]) -> None:
        routed = self.routes.route(message)
        self.push(routed)
        if routed.final and not self.routes.busy:
            self.on_free()


@dataclass
class _Pool:
    sessions: list[PooledSession] = field(default_factory=list)
    opening: int = 0
    waiting: int = 0
    freed: asyncio.Event = field(default_factory=asyncio.Event)
    affinity: dict[str, PooledSession] = field(default_factory=dict)


class Sessions:
    """The front's connection to the daemon and every session on it."""

    def __init__(
        self,
        endpoint: str,
        options: FrontOptions,
        credentials: Credentials | None = None,
        secret: bytes | None = None,
    ) -> None:
        """``secret``: the key of the resume tokens (the daemon's, kept across its restarts); None: one of its
        own, so that no other front can attach its sessions."""
        self.endpoint = endpoint
        self._secret = secret or secrets.token_bytes(32)
        self.options = options
        self.counts: Counter[str] = Counter()
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.linger = 0
        self._sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_MS)
        if credentials is not None and endpoint.startswith("tcp://"):
            credentials.apply(self._sock)
        self._refs = itertools.count(1)
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.legacy: dict[str, LegacySession] = {}
        self._pooled: dict[str, PooledSession] = {}
        self._pools: dict[str, _Pool] = {}
        self._reader: asyncio.Task[None] | None = None
        self._reporter: asyncio.Task[None] | None = None
        self.on_lost: Callable[[], None] = lambda: None

    async def start(self) -> None:
        self._sock.connect(self.endpoint)
        self._reader = asyncio.create_task(self._read())
        self._reporter = asyncio.create_task(self._report())

    async def stop(self) -> None:
        for task in (self._reader, self._reporter):
            if task is not None:
                task.cancel()
        self._sock.close(0)
        self._ctx.term()

    def send(self, kind: str, **fields: Any) -> None:
        """Hand a frame to the socket now, or raise `FrontBusy`: what the daemon has not taken is never queued
        here without bound (libzmq holds up to its high-water mark)."""
        # With DONTWAIT pyzmq sends at once and hands back a finished future; it also re-arms its waiting recv
        # (a send can consume the edge of the socket's edge-triggered descriptor: a plain socket's send here
        # once left the reader asleep with answers waiting).
        sent = self._sock.send(encode(kind, **fields), zmq.DONTWAIT, copy=False)
        failure = sent.exception() if isinstance(sent, asyncio.Future) and sent.done() else None
        if isinstance(failure, zmq.Again):
            self.counts["busy"] += 1
            raise FrontBusy("the daemon is not taking frames from this front fast enough; retry shortly")
        if failure is not None:
            raise failure

    async def _report(self) -> None:
        """The counters go to the daemon (``http.report``), which shows them in its metrics and stats."""
        sent: dict[str, int] = {}
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            counts = dict(self.counts.most_common(MAX_REPORTED))
            if counts != sent:
                try:
                    self.send("ctl", op="http.report", ref=f"report-{next(self._refs)}", args={"counts": counts})
                    sent = counts
                except FrontBusy:
                    pass  # the next round sends them

    # -- frames from the daemon ----------------------------------------------------------

    async def _read(self) -> None:
        try:
            while True:
                data = await self._sock.recv()
                try:
                    frame: dict[str, Any] = dict(decode_for_client(data))
                except FrameError as exc:
                    log.error("refused a frame from the daemon: %s", exc)
                    continue
                try:
                    self._on_frame(frame)
                except Exception:
                    self.counts["frame_errors"] += 1
                    log.exception("a frame from the daemon could not be handled: %.200r", frame)
        except asyncio.CancelledError:
            raise
        except BaseException:
            log.critical("the front's link to the daemon failed; stopping so that it is restarted", exc_info=True)
            self.on_lost()
            raise

    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame["t"]
        ref = frame.get("ref")
        if ref is not None and kind in ("opened", "attached", "ctl", "error") and ref in self._replies:
            future = self._replies.pop(ref)
            if not future.done():
                future.set_result(frame)
            elif kind == "opened":
                self._close_quietly(frame["sid"])  # opened after its waiter gave up: nobody will use it
            return
        if kind == "opened":
            self._close_quietly(frame["sid"])
            return
        sid = frame.get("sid")
        session: Stream | None = (self.legacy.get(sid) or self._pooled.get(sid)) if isinstance(sid, str) else None
        if session is None:
            return
        if kind == "mcp":
            message = frame["msg"]
            if isinstance(session, PooledSession) and "method" in message and jsonrpc.is_id(message.get("id")):
                self._refuse_server_request(session, message)
                return
            session.deliver(message)
        elif kind == "closed":
            self._closed(session, frame.get("reason", "closed"))
        elif kind == "error" and frame["code"] in GONE:
            self._closed(session, frame["code"])  # the daemon no longer has it
        elif kind == "error" and jsonrpc.is_id(frame.get("id")):
            data = {"code": frame["code"], **(frame.get("data") or {})}
            session.deliver(jsonrpc.error(frame["id"], jsonrpc.CONNECTION_CLOSED, frame["message"], data))

    def _close_quietly(self, sid: str) -> None:
        try:
            self.send("close", sid=sid)
        except FrontBusy:
            log.warning("session %s is left to the daemon's idle expiry: the daemon is not taking frames", sid)

    def _refuse_server_request(self, session: PooledSession, message: dict[str, Any]) -> None:
        """A 2026-07-28 server has no back channel (it returns InputRequiredResult instead): its request is
        answered here, so the call it belongs to is not left waiting for an answer no client can send."""
        self.counts["server_request_refused"] += 1
        answer = jsonrpc.error(
            message["id"],
            jsonrpc.METHOD_NOT_FOUND,
            f"{message['method']}: a 2026-07-28 server cannot send requests to its client; return "
            "InputRequiredResult instead",
        )
        try:
            self.send("mcp", sid=session.sid, msg=answer)
        except FrontBusy:
            log.warning("session %s: could not refuse the server's %s", session.sid, message["method"])

    def _closed(self, session: Stream, reason: str) -> None:
        session.close(reason)
        self.legacy.pop(session.sid, None)
        if isinstance(session, PooledSession) and self._pooled.pop(session.sid, None) is not None:
            pool = self._pools.get(session.pool_key)
            if pool is not None and session in pool.sessions:
                pool.sessions.remove(session)
                pool.affinity = {k: s for k, s in pool.affinity.items() if s is not session}
                self.release(session)

    # -- opening and closing -------------------------------------------------------------

    async def _ask(self, kind: str, what: str, **fields: Any) -> dict[str, Any]:
        """Send a frame with a fresh ``ref`` and wait for its answer; `OpenRefused` for an error or no answer."""
        ref = next(self._refs)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[ref] = future
        try:
            self.send(kind, ref=ref, **fields)
        except FrontBusy:
            self._replies.pop(ref, None)
            raise
        try:
            reply = await asyncio.wait_for(future, self.options.open_timeout)
        except TimeoutError:
            self._replies.pop(ref, None)
            message = f"the daemon did not {what} within {self.options.open_timeout}s"
            raise OpenRefused("timeout", message) from None
        if reply["t"] == "error":
            raise OpenRefused(reply["code"], reply["message"], reply.get("data"))
        return reply

    async def _open(self, server: str, via: str, token: str | None = None) -> tuple[str, str]:
        reply = await self._ask("open", "open a session", server=server, expire_idle=True, via=via[:200], token=token)
        return reply["sid"], reply["server"]

    def resume_token(self, nonce: str, token_name: str | None) -> str:
        digest = hmac.new(self._secret, f"{nonce}\0{token_name or ''}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    async def open_legacy(self, server: str, via: str, token_name: str | None) -> LegacySession:
        nonce = secrets.token_urlsafe(16)
        sid, server = await self._open(server, via, self.resume_token(nonce, token_name))
        session = LegacySession(sid, server, token_name, self.options, self.counts, nonce)
        self.legacy[sid] = session
        return session

    async def reattach(self, sid: str, nonce: str, token_name: str | None) -> LegacySession:
        """A session this front does not hold but its client names (the daemon restarted, and this front
        with it): attach it with the token its id and bearer token derive. `OpenRefused` if the daemon has
        no such session for that token (``data.reason = "restoring"``: not yet)."""
        reply = await self._ask("attach", "attach the session", sid=sid, token=self.resume_token(nonce, token_name))
        if reply["t"] != "attached":
            raise OpenRefused("bad_frame", f"the daemon answered attach with {reply['t']!r}")
        session = self.legacy.get(sid)
        if session is None:
            session = self.legacy[sid] = LegacySession(
                sid, reply["server"], token_name, self.options, self.counts, nonce
            )
            self.counts["reattached"] += 1
            log.info("session %s attached again (its client came back after a restart of the daemon)", sid)
        return session

    def end(self, session: Stream) -> None:
        """DELETE: the daemon closes the session; it is gone from the front at once."""
        self.send("close", sid=session.sid)
        self._closed(session, "deleted")

    # -- the pool ------------------------------------------------------------------------

    async def pooled(self, server: str, via: str, affinity: str | None) -> PooledSession:
        """Pools are kept per server and bearer token: a session a token's request ran on never carries
        another token's, so a late message of a cancelled call cannot reach another principal."""
        key = f"{server}\0{affinity or ''}"
        pool = self._pools.setdefault(key, _Pool())
        try:
            return await self._from_pool(pool, server, via, affinity)
        except OpenRefused:
            if not pool.sessions and not pool.opening and not pool.waiting:
                self._pools.pop(key, None)  # a name from a URL: no pool stays for one that failed
            raise

    async def _from_pool(self, pool: _Pool, server: str, via: str, affinity: str | None) -> PooledSession:
        """A warm session of ``server`` with no ordinary request in progress: the affine one when it is
        free, else any free one, else a new one while the pool has room, else the next one freed."""
        while True:
            session = self._free(pool, affinity)
            if session is not None:
                return session
            if len(pool.sessions) + pool.opening < self.options.pool_size:
                pool.opening += 1
                try:
                    sid, name = await self._open(server, f"{via} (pool)")
                finally:
                    pool.opening -= 1
                session = PooledSession(sid, name, self.options, self.counts, pool_key=f"{server}\0{affinity or ''}")
                session.on_free = lambda s=session: self.release(s)  # type: ignore[misc]
                self._pooled[sid] = session
                pool.sessions.append(session)
                if affinity is not None:
                    pool.affinity[affinity] = session
                continue
            if pool.waiting >= self.options.pool_queue:
                raise OpenRefused(
                    "server_busy", f"all {self.options.pool_size} pooled sessions of {server!r} are busy", {}
                )
            pool.waiting += 1
            try:
                freed = pool.freed
                await asyncio.wait_for(freed.wait(), self.options.open_timeout)
            except TimeoutError:
                raise OpenRefused("server_busy", f"no pooled session of {server!r} became free in time", {}) from None
            finally:
                pool.waiting -= 1

    def _free(self, pool: _Pool, affinity: str | None) -> PooledSession | None:
        preferred = pool.affinity.get(affinity) if affinity is not None else None
        if preferred is not None and not preferred.routes.busy and preferred.closed is None:
            return preferred
        for session in pool.sessions:
            if not session.routes.busy and session.closed is None:
                if affinity is not None:
                    pool.affinity[affinity] = session
                return session
        return None

    def release(self, session: PooledSession) -> None:
        """A pooled session's request ended (answered, or its client left): wake one waiter."""
        pool = self._pools.get(session.pool_key)
        if pool is not None:
            pool.freed.set()
            pool.freed = asyncio.Event()
