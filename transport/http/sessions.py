"""The front's side of troupe sessions: legacy HTTP sessions, and the pool of warm sessions for 2026-07-28.

Everything here runs on the front's one asyncio loop (no locks): `Sessions` owns the DEALER to
the daemon, reads its frames and hands each session's messages to that session, which routes
them to streams (`routing`) through its `EventLog`. HTTP handlers (`app`) only wait on a
session's `changed` signal and read the log.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

import zmq
import zmq.asyncio

from mcp_troupe.transport.dealer import HEARTBEAT_MS
from mcp_troupe.transport.http.replay import EventLog
from mcp_troupe.transport.http.routing import STANDALONE, LegacyRoutes, Routed, SharedRoutes
from mcp_troupe.transport.keys import Credentials
from mcp_troupe.transport.wire import jsonrpc
from mcp_troupe.transport.wire.frames import FrameError, encode
from mcp_troupe.transport.wire.kinds import decode_for_client

log = logging.getLogger("troupe.http")


REPORT_INTERVAL = 1.0
"""Seconds between the front's reports of its counters to the daemon."""
MAX_REPORTED = 200


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


class Stream:
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
        self.wake()

    def wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def changed(self) -> Coroutine[Any, Any, Literal[True]]:
        """Waits for the next change; the event is taken now, so a change between this call and the first
        await still wakes the waiter."""
        return self._changed.wait()

    def close(self, reason: str) -> None:
        self.closed = reason
        self.wake()


class LegacySession(Stream):
    """One ``Mcp-Session-Id`` session: a troupe session of its own."""

    def __init__(
        self, sid: str, server: str, token_name: str | None, options: FrontOptions, counts: Counter[str]
    ) -> None:
        super().__init__(sid, server, options, counts)
        self.token_name = token_name
        self.routes = LegacyRoutes()
        self.standalone_cursor = 0
        self.standalone_open = False
        self.version: str | None = None

    def deliver(self, message: dict[str, Any]) -> None:
        self.push(self.routes.route(message))


class PooledSession(Stream):
    """A warm 2026-07-28 session shared by many HTTP requests, one ordinary request at a time."""

    def __init__(self, sid: str, server: str, options: FrontOptions, counts: Counter[str]) -> None:
        super().__init__(sid, server, options, counts)
        self.routes = SharedRoutes()
        self._streams = itertools.count(1)
        self.on_free: Callable[[], None] = lambda: None

    def new_stream(self) -> int:
        return next(self._streams)

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

    def __init__(self, endpoint: str, options: FrontOptions, credentials: Credentials | None = None) -> None:
        self.endpoint = endpoint
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
        self._sock.send(encode(kind, **fields), copy=False)

    async def _report(self) -> None:
        """The counters go to the daemon (``http.report``), which shows them in its metrics and stats."""
        sent: dict[str, int] = {}
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            counts = dict(self.counts.most_common(MAX_REPORTED))
            if counts != sent:
                self.send("ctl", op="http.report", ref=f"report-{next(self._refs)}", args={"counts": counts})
                sent = counts

    # -- frames from the daemon ----------------------------------------------------------

    async def _read(self) -> None:
        while True:
            data = await self._sock.recv()
            try:
                frame: dict[str, Any] = dict(decode_for_client(data))
            except FrameError as exc:
                log.error("refused a frame from the daemon: %s", exc)
                continue
            self._on_frame(frame)

    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame["t"]
        ref = frame.get("ref")
        if ref is not None and kind in ("opened", "attached", "ctl", "error") and ref in self._replies:
            future = self._replies.pop(ref)
            if not future.done():
                future.set_result(frame)
            return
        sid = frame.get("sid")
        session: Stream | None = self.legacy.get(sid) or self._pooled.get(sid)  # type: ignore[arg-type]
        if session is None:
            return
        if kind == "mcp":
            session.deliver(frame["msg"])  # type: ignore[attr-defined]
        elif kind == "closed":
            self._closed(session, frame.get("reason", "closed"))
        elif kind == "error" and jsonrpc.is_id(frame.get("id")):
            data = {"code": frame["code"], **(frame.get("data") or {})}
            session.deliver(jsonrpc.error(frame["id"], jsonrpc.CONNECTION_CLOSED, frame["message"], data))  # type: ignore[attr-defined]

    def _closed(self, session: Stream, reason: str) -> None:
        session.close(reason)
        self.legacy.pop(session.sid, None)
        if self._pooled.pop(session.sid, None) is not None:
            pool = self._pools.get(session.server)
            if pool is not None and session in pool.sessions:
                pool.sessions.remove(session)
                pool.affinity = {k: s for k, s in pool.affinity.items() if s is not session}
                pool.freed.set()

    # -- opening and closing -------------------------------------------------------------

    async def _open(self, server: str, via: str) -> tuple[str, str]:
        ref = next(self._refs)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[ref] = future
        self.send("open", ref=ref, server=server, expire_idle=True, via=via[:200])
        try:
            reply = await asyncio.wait_for(future, self.options.open_timeout)
        except TimeoutError:
            self._replies.pop(ref, None)
            message = f"the daemon did not open a session within {self.options.open_timeout}s"
            raise OpenRefused("timeout", message) from None
        if reply["t"] == "error":
            raise OpenRefused(reply["code"], reply["message"], reply.get("data"))
        return reply["sid"], reply["server"]

    async def open_legacy(self, server: str, via: str, token_name: str | None) -> LegacySession:
        sid, server = await self._open(server, via)
        session = LegacySession(sid, server, token_name, self.options, self.counts)
        self.legacy[sid] = session
        return session

    def end(self, session: Stream) -> None:
        """DELETE: the daemon closes the session; it is gone from the front at once."""
        self.send("close", sid=session.sid)
        self._closed(session, "deleted")

    # -- the pool ------------------------------------------------------------------------

    async def pooled(self, server: str, via: str, affinity: str | None) -> PooledSession:
        """A warm session of ``server`` with no ordinary request in progress: the affine one when it is
        free, else any free one, else a new one while the pool has room, else the next one freed."""
        pool = self._pools.setdefault(server, _Pool())
        while True:
            session = self._free(pool, affinity)
            if session is not None:
                return session
            if len(pool.sessions) + pool.opening < self.options.pool_size:
                pool.opening += 1
                try:
                    sid, name = await self._open(server, f"{via} (pool)")
                except OpenRefused:
                    if not pool.sessions and not pool.opening - 1 and not pool.waiting:
                        self._pools.pop(server, None)  # a name from a URL: no pool stays for one that failed
                    raise
                finally:
                    pool.opening -= 1
                session = PooledSession(sid, name, self.options, self.counts)
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
        pool = self._pools.get(session.server)
        if pool is not None:
            pool.freed.set()
            pool.freed = asyncio.Event()

    def snapshot(self) -> dict[str, Any]:
        return {
            "legacy_sessions": len(self.legacy),
            "pooled_sessions": {name: len(p.sessions) for name, p in self._pools.items()},
            "counts": dict(self.counts),
        }


STANDALONE_STREAM = STANDALONE
