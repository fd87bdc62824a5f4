"""Measurement 1, hop cost: one small request's round trip through the daemon.

Path A (troupe): a DEALER sends a ``tools/call`` in an ``mcp`` frame to the
daemon's front ROUTER; the session actor forwards it through the back ROUTER to
the native echo adapter (`bench.echo_adapter`), whose answer comes back the
same way: four socket crossings.

Path B (baseline): the same DEALER code sends the same frame to a plain
ROUTER echo process that does the same per-message work as the adapter: two
socket crossings. The floor of the ratio A/B is therefore about 2.

Both paths run in this process, alternating in blocks, so that load from
other work on the machine falls on both alike.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

from bench.common import module_process, ratio, start_echo_daemon, summary
from bench.wire import WireClient, call_frame, unpack


def _round_trips(client: WireClient, sid: str, start_id: int, count: int, out: list[int]) -> None:
    sock = client.sock
    clock = time.perf_counter_ns
    for request_id in range(start_id, start_id + count):
        frame = call_frame(sid, request_id)
        began = clock()
        sock.send(frame)
        reply = unpack(sock.recv())
        out.append(clock() - began)
        if reply["msg"].get("id") != request_id:
            raise RuntimeError(f"unexpected reply {reply!r}")


def run(quick: bool) -> dict[str, Any]:
    iterations = 600 if quick else 20_000
    block = 100 if quick else 250
    warmup = 200 if quick else 2_000
    tmp = Path(tempfile.mkdtemp(prefix="trb-hop-", dir="/tmp"))
    plain_endpoint = f"ipc://{tmp / 'plain.sock'}"
    plain = module_process("bench.echo_adapter", ["--bind", plain_endpoint], stdout=subprocess.PIPE)
    daemon = start_echo_daemon()
    ctx = zmq.Context()
    try:
        assert plain.stdout is not None
        if plain.stdout.readline().strip() != b"ready":
            raise RuntimeError("the plain echo server did not start")
        through = WireClient(daemon.front, ctx)
        (sid,) = through.open_many(1, "echo")
        through.initialize_many([sid])
        direct = WireClient(plain_endpoint, ctx)
        for client in (through, direct):
            client.sock.setsockopt(zmq.RCVTIMEO, 10_000)
        samples: dict[str, list[int]] = {"daemon": [], "direct": []}
        scratch: list[int] = []
        _round_trips(through, sid, 1, warmup, scratch)
        _round_trips(direct, "direct", 1, warmup, scratch)
        next_id = warmup + 1
        for i in range(iterations // block):
            order = (("daemon", through, sid), ("direct", direct, "direct"))
            for name, client, session in order if i % 2 == 0 else reversed(order):
                _round_trips(client, session, next_id, block, samples[name])
            next_id += block
        through.close()
        direct.close()
    finally:
        ctx.destroy(linger=0)
        daemon.stop()
        plain.terminate()
        plain.wait(10)
    us = 1e-3
    daemon_s, direct_s = summary(samples["daemon"], us), summary(samples["direct"], us)
    return {
        "what": "round trip of a tools/call (DEALER, msgpack) through the daemon to the native echo adapter, "
        "vs the same frame to a plain ROUTER echo process; microseconds",
        "iterations_per_path": len(samples["daemon"]),
        "daemon_us": daemon_s,
        "direct_us": direct_s,
        "ratio_p50": ratio(daemon_s["p50"], direct_s["p50"]),
        "ratio_p99": ratio(daemon_s["p99"], direct_s["p99"]),
        "added_p50_us": round(daemon_s["p50"] - direct_s["p50"], 1),
    }
