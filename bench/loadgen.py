"""One load-generating client process for the throughput measurement.

    python -m bench.loadgen --endpoint ENDPOINT --sessions K [--plain]

Through the daemon it opens K sessions to ``echo`` on one DEALER (one client
connection) and initializes them; with ``--plain`` it talks to a plain ROUTER
echo (`bench.echo_adapter --bind`) with K virtual sessions instead. Either
way it then keeps exactly one request in flight per session (a closed loop:
each response triggers that session's next request), so K requests are in
flight per process.

Commands on stdin, answers on stdout (JSON lines): after start-up it prints
``{"ready": true}``; ``go WARMUP SECONDS`` runs the loop for WARMUP seconds,
then counts the responses that arrive within the next SECONDS, then stops
sending, waits for what is still in flight and prints ``{"count": N,
"seconds": S, "latency_us": [...]}`` (a sample of round-trip times from the
counted window); ``quit`` closes the sessions and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import zmq

from bench.wire import WireClient, call_frame, unpack

MAX_LATENCY_SAMPLES = 20_000


def _go(client: WireClient, sids: list[str], warmup: float, seconds: float) -> dict[str, object]:
    sock = client.sock
    clock = time.perf_counter_ns
    sent_at: dict[str, int] = {}
    next_id = dict.fromkeys(sids, 1)
    start = clock()
    measure_from = start + int(warmup * 1e9)
    measure_to = measure_from + int(seconds * 1e9)
    for sid in sids:
        sent_at[sid] = clock()
        sock.send(call_frame(sid, 1))
    outstanding = len(sids)
    count = 0
    latencies: list[int] = []
    stride = 1
    while outstanding:
        frame = unpack(sock.recv())
        now = clock()
        sid = frame["sid"]
        if frame.get("t") != "mcp" or "result" not in frame["msg"]:
            raise RuntimeError(f"unexpected frame {frame!r}")
        if measure_from <= now < measure_to:
            count += 1
            if count % stride == 0:
                latencies.append(now - sent_at[sid])
                if len(latencies) >= MAX_LATENCY_SAMPLES:
                    latencies = latencies[::2]
                    stride *= 2
        if now < measure_to:
            request_id = next_id[sid] = next_id[sid] + 1
            sent_at[sid] = clock()
            sock.send(call_frame(sid, request_id))
        else:
            outstanding -= 1
    return {"count": count, "seconds": seconds, "latency_us": [round(x / 1000, 1) for x in latencies]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--plain", action="store_true")
    args = parser.parse_args()
    ctx = zmq.Context()
    client = WireClient(args.endpoint, ctx)
    client.sock.setsockopt(zmq.RCVTIMEO, 30_000)
    if args.plain:
        sids = [f"virtual-{i}" for i in range(args.sessions)]
    else:
        sids = client.open_many(args.sessions, "echo")
        client.initialize_many(sids)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        if words[0] == "go":
            print(json.dumps(_go(client, sids, float(words[1]), float(words[2]))), flush=True)
    if not args.plain:
        client.close_many(sids)
    client.close()
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
