"""A lean client of troupe's front socket, written from ``docs/protocol.rst``.

The benchmarks drive the daemon with raw DEALER sockets and msgpack rather
than `mcp_troupe.transport.client`, so that the client's own Python overhead is the same
on the path through the daemon and on the baseline without it (the baselines
send the very same frames to a plain ROUTER echo). `mcp_troupe.transport.client` is
measured separately on the real-server path.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import msgpack
import zmq

_pack = msgpack.Packer(use_bin_type=True).pack
unpack = msgpack.unpackb

INITIALIZE_PARAMS = {
    "protocolVersion": "2025-11-25",
    "capabilities": {},
    "clientInfo": {"name": "troupe-bench", "version": "1"},
}
CALL_PARAMS = {"name": "echo", "arguments": {"text": "hi"}}
"""The small request of every latency and throughput measurement (a ``tools/call``,
so it takes the daemon's ordinary path: pending tables, limits, deadlines)."""


def mcp_frame(sid: str, msg: dict[str, Any]) -> bytes:
    return _pack({"v": 1, "t": "mcp", "sid": sid, "msg": msg})


def call_frame(sid: str, request_id: int) -> bytes:
    return _pack(
        {
            "v": 1,
            "t": "mcp",
            "sid": sid,
            "msg": {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": CALL_PARAMS},
        }
    )


class WireError(RuntimeError):
    pass


class WireClient:
    """One DEALER connection to a daemon's front socket (or to a plain echo ROUTER)."""

    def __init__(self, endpoint: str, ctx: zmq.Context | None = None) -> None:
        self.ctx = ctx or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 100_000)
        self.sock.setsockopt(zmq.RCVHWM, 100_000)
        self.sock.connect(endpoint)
        self._refs = itertools.count(1)

    def close(self) -> None:
        self.sock.close(linger=0)

    def recv(self, timeout: float = 30.0) -> dict[str, Any]:
        if not self.sock.poll(timeout * 1000):
            raise WireError(f"no frame within {timeout}s")
        return unpack(self.sock.recv())

    # -- sessions, many at a time ---------------------------------------------------

    def open_many(
        self, count: int, server: str, window: int = 256, timeout: float = 120.0, marks: dict[int, float] | None = None
    ) -> list[str]:
        """Open ``count`` sessions with at most ``window`` ``open`` frames outstanding.

        ``marks``, if given, maps session counts to the ``time.perf_counter()`` at which
        that many sessions were open (filled in for each key present).
        """
        sids: list[str] = []
        outstanding = 0
        sent = 0
        deadline = time.monotonic() + timeout
        while len(sids) < count:
            while outstanding < window and sent < count:
                self.sock.send(_pack({"v": 1, "t": "open", "ref": next(self._refs), "server": server}))
                sent += 1
                outstanding += 1
            frame = self.recv(max(0.1, deadline - time.monotonic()))
            if frame["t"] == "opened":
                sids.append(frame["sid"])
                outstanding -= 1
                if marks is not None and len(sids) in marks:
                    marks[len(sids)] = time.perf_counter()
            elif frame["t"] == "error":
                raise WireError(f"open refused: {frame['code']}: {frame['message']}")
        return sids

    def initialize_many(self, sids: list[str], timeout: float = 60.0) -> None:
        """The legacy handshake on every session, pipelined."""
        for sid in sids:
            self.sock.send(
                mcp_frame(sid, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INITIALIZE_PARAMS})
            )
        waiting = set(sids)
        deadline = time.monotonic() + timeout
        while waiting:
            frame = self.recv(max(0.1, deadline - time.monotonic()))
            if frame["t"] == "mcp" and frame["msg"].get("id") == 0:
                if "result" not in frame["msg"]:
                    raise WireError(f"initialize failed: {frame['msg']}")
                waiting.discard(frame["sid"])
            elif frame["t"] in ("error", "closed"):
                raise WireError(f"initialize: {frame}")
        for sid in sids:
            self.sock.send(mcp_frame(sid, {"jsonrpc": "2.0", "method": "notifications/initialized"}))

    def close_many(self, sids: list[str], window: int = 256, timeout: float = 120.0) -> None:
        """Close every session, at most ``window`` ``close`` frames outstanding; returns once each
        ``closed`` (or ``error``) has arrived."""
        refs: dict[int, str] = {}
        todo = iter(sids)
        remaining = len(sids)
        deadline = time.monotonic() + timeout
        while remaining:
            while len(refs) < window:
                sid = next(todo, None)
                if sid is None:
                    break
                ref = next(self._refs)
                refs[ref] = sid
                self.sock.send(_pack({"v": 1, "t": "close", "sid": sid, "ref": ref}))
            frame = self.recv(max(0.1, deadline - time.monotonic()))
            if frame["t"] in ("closed", "error") and frame.get("ref") in refs:
                del refs[frame["ref"]]
                remaining -= 1

    def health(self, timeout: float = 10.0) -> dict[str, Any]:
        ref = next(self._refs)
        self.sock.send(_pack({"v": 1, "t": "ctl", "ref": ref, "op": "health"}))
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv(max(0.1, deadline - time.monotonic()))
            if frame["t"] == "ctl" and frame.get("ref") == ref:
                return frame["result"]
