"""A native ZeroMQ echo server, in two shapes, for the benchmarks.

``--endpoint ENDPOINT`` (adapter mode): a minimal troupe adapter that speaks
the adapter protocol of ``docs/protocol.rst`` directly, with nothing from
``transport``: it connects a DEALER to the daemon's back socket, registers,
answers ``spawn`` with ``spawned`` at once (no process is started: a session
costs the adapter one set entry), answers every MCP request itself with a
result, and answers ``close`` with ``exited``. It sends a ``heartbeat`` when it
has been quiet for a second, so the daemon does not count it as lost.

``--bind ENDPOINT`` (plain mode): a ROUTER that answers an ``mcp`` frame
from a DEALER with the same reply the adapter would send, on the same peer.
This is the baseline "direct DEALER -> ROUTER echo between two processes": the
same per-message work (msgpack decode, `answer`, msgpack encode) without the
daemon in between.

The answer to ``initialize`` is a legacy-era result (so a session through the
daemon completes the handshake); the answer to any other request is
``{"echo": <params>}``. Notifications and responses are dropped.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

import msgpack
import zmq

VERSION = 1
SERVER_INFO = {"name": "troupe-bench-echo", "version": "1"}
_pack = msgpack.Packer(use_bin_type=True).pack


def answer(msg: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON-RPC response to ``msg``, or None when it is not a request."""
    method = msg.get("method")
    if method is None or "id" not in msg:
        return None
    params = msg.get("params") or {}
    if method == "initialize":
        result: dict[str, Any] = {
            "protocolVersion": params.get("protocolVersion", "2025-11-25"),
            "capabilities": {"tools": {}},
            "serverInfo": SERVER_INFO,
        }
    else:
        result = {"echo": params}
    return {"jsonrpc": "2.0", "id": msg["id"], "result": result}


def run_adapter(endpoint: str, server: str) -> int:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.connect(endpoint)
    send = sock.send
    unpack = msgpack.unpackb
    sessions: set[str] = set()
    pid = os.getpid()
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    send(_pack({"v": VERSION, "t": "register", "server": server, "capacity": 0, "adapter_id": f"bench-echo-{pid}"}))
    last_sent = time.monotonic()
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    while not stopping:
        if poller.poll(250):
            sent = False
            while True:
                try:
                    data = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                frame = unpack(data)
                kind = frame.get("t")
                if kind == "mcp":
                    reply = answer(frame["msg"])
                    if reply is not None and frame["sid"] in sessions:
                        sent = True
                        send(_pack({"v": VERSION, "t": "mcp", "sid": frame["sid"], "msg": reply, "checked": True}))
                elif kind == "spawn":
                    sessions.add(frame["sid"])
                    sent = True
                    send(_pack({"v": VERSION, "t": "spawned", "sid": frame["sid"], "pid": pid}))
                elif kind == "close":
                    if frame["sid"] in sessions:
                        sessions.discard(frame["sid"])
                        sent = True
                        send(_pack({"v": VERSION, "t": "exited", "sid": frame["sid"], "code": 0, "reason": "stopped"}))
                elif kind == "error" and frame.get("code") == "not_registered":
                    send(_pack({"v": VERSION, "t": "register", "server": server, "capacity": 0}))
            if sent:
                last_sent = time.monotonic()
        if time.monotonic() - last_sent >= 1.0:
            send(_pack({"v": VERSION, "t": "heartbeat"}))
            last_sent = time.monotonic()
    sock.close()
    ctx.term()
    return 0


def run_plain(endpoint: str) -> int:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.bind(endpoint)
    unpack = msgpack.unpackb
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    print("ready", flush=True)
    while not stopping:
        if not poller.poll(250):
            continue
        while True:
            try:
                peer, data = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            frame = unpack(data)
            reply = answer(frame["msg"])
            if reply is not None:
                sock.send_multipart(
                    (peer, _pack({"v": VERSION, "t": "mcp", "sid": frame["sid"], "msg": reply, "checked": True}))
                )
    sock.close()
    ctx.term()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--endpoint", help="adapter mode: the daemon's back endpoint")
    mode.add_argument("--bind", help="plain mode: the endpoint of the ROUTER to bind")
    parser.add_argument("--server", default="echo", help="adapter mode: the server name to register")
    args = parser.parse_args(argv)
    if args.endpoint:
        return run_adapter(args.endpoint, args.server)
    return run_plain(args.bind)


if __name__ == "__main__":
    sys.exit(main())
