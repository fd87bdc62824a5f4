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
counted window); ``pace WARMUP SECONDS RATE`` does the same as an open loop, sending RATE
requests/s whatever the answers do (round robin over the sessions, several in flight per session
when answers lag), each request's latency counted from when it was due; ``quit`` closes the
sessions and exits.
"""

from __future__ import annotations

import argparse
import json
import select
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


def _paced(client: WireClient, sids: list[str], warmup: float, seconds: float, rate: float) -> dict[str, object]:
    """Open loop: send at ``rate`` requests/s whatever the answers do, round robin over the sessions.

    A request's latency counts from when it was due to be sent, not from when it was, so time the
    sender itself fell behind counts as latency too. Between sends the process waits in ``select`` on
    the socket's descriptor (microsecond timeouts; ZeroMQ's own poll counts milliseconds, which would
    make the sender either spin or send a millisecond late)."""
    sock = client.sock
    clock = time.perf_counter_ns
    interval = 1e9 / rate
    due: dict[tuple[str, int], int] = {}
    next_id = dict.fromkeys(sids, 0)
    start = clock()
    measure_from, measure_to = start + int(warmup * 1e9), start + int((warmup + seconds) * 1e9)
    sent, turn = 0, 0
    counted: list[int] = [0]
    latencies: list[int] = []
    fd = sock.getsockopt(zmq.FD)

    def drain() -> bool:
        got = False
        while True:
            try:
                frame = unpack(sock.recv(zmq.NOBLOCK))
            except zmq.Again:
                return got
            arrived, got = clock(), True
            if frame.get("t") != "mcp" or "result" not in frame["msg"]:
                raise RuntimeError(f"unexpected frame {frame!r}")
            scheduled = due.pop((frame["sid"], frame["msg"]["id"]))
            if measure_from <= scheduled < measure_to:
                counted[0] += 1
                if len(latencies) < MAX_LATENCY_SAMPLES:
                    latencies.append(arrived - scheduled)

    while True:
        next_send = start + int(sent * interval)
        now = clock()
        while next_send <= now and next_send < measure_to:
            sid = sids[turn % len(sids)]
            turn += 1
            request_id = next_id[sid] = next_id[sid] + 1
            due[sid, request_id] = next_send
            sock.send(call_frame(sid, request_id))
            sent += 1
            next_send = start + int(sent * interval)
        if drain():
            continue
        if next_send >= measure_to and not due:
            break
        timeout = (next_send - clock()) / 1e9 if next_send < measure_to else 1.0
        idle = timeout > 0 and not select.select([fd], [], [], timeout)[0]
        if idle and next_send >= measure_to and not drain():
            raise RuntimeError(f"{len(due)} request(s) unanswered a second after the last was sent")
    return {"count": counted[0], "seconds": seconds, "latency_us": [round(x / 1000, 1) for x in latencies]}


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
        elif words[0] == "pace":
            result = _paced(client, sids, float(words[1]), float(words[2]), float(words[3]))
            print(json.dumps(result), flush=True)
    if not args.plain:
        client.close_many(sids)
    client.close()
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
