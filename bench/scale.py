"""Measurement 4, scale: the daemon's memory per open session and the time to open and close them.

For each size N a fresh daemon serves the native echo adapter (so no server
process is started: a session costs the adapter one set entry), with
``--max-sessions 20000 --open-rate-per-client 0 --on-session-limit refuse``.
Then, from one client connection:

1. the daemon's VmRSS (``/proc/<pid>/status``) with 0 sessions: the baseline;
2. ``open`` N sessions, at most 256 outstanding: the time until the last
   ``opened`` arrived gives the opening rate (also reported from 10 % to 20 %
   and from 80 % to 90 % of the sessions open, to show how it changes as they
   pile up);
3. after a 1 s pause, VmRSS again: (RSS_N - RSS_0) / N is the bytes per session;
4. ``close`` all of them, at most 256 outstanding: the time until every
   ``closed`` arrived, and until ``health`` reports 0 sessions (every actor
   stopped and forgotten). (Sending all 10,000 ``close`` frames at once loses
   ``closed`` answers: see ``docs/performance.rst``.)

Sessions are opened but not initialized (the MCP handshake is measured on the
other paths). Baseline figures for comparison: the memory and the start rate
of N bare pykka actors in a fresh process (``python -m bench.inproc actor-floor``).
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import zmq

from bench.common import PYTHON, ROOT, bench_env, start_echo_daemon, steady_rss, thread_count, wait_for
from bench.wire import WireClient


def _one_size(count: int) -> dict[str, Any]:
    daemon = start_echo_daemon()
    ctx = zmq.Context()
    try:
        client = WireClient(daemon.front, ctx)
        warm = client.open_many(10, "echo")  # the first sessions allocate what every later one reuses
        client.close_many(warm)
        wait_for(lambda: client.health()["sessions"] == 0, 30, "the warm-up sessions to finish", 0.05)
        time.sleep(0.5)
        base = steady_rss(daemon.pid)
        tenth = max(1, count // 10)
        marks = dict.fromkeys((tenth, 2 * tenth, count - 2 * tenth, count - tenth), 0.0)
        began = time.perf_counter()
        sids = client.open_many(count, "echo", window=256, timeout=300, marks=marks)
        opened = time.perf_counter() - began
        first_rate = tenth / (marks[2 * tenth] - marks[tenth])  # from 10 % to 20 % open
        last_rate = tenth / (marks[count - tenth] - marks[count - 2 * tenth])  # from 80 % to 90 % open
        time.sleep(1.0)
        held = steady_rss(daemon.pid)
        threads = thread_count(daemon.pid)
        health = client.health()
        if health["sessions"] != count:
            raise RuntimeError(f"health reports {health['sessions']} sessions, expected {count}")
        began = time.perf_counter()
        client.close_many(sids, window=256, timeout=300)
        closed = time.perf_counter() - began
        wait_for(lambda: client.health()["sessions"] == 0, 300, "every session to finish", 0.02)
        finished = time.perf_counter() - began
        client.close()
    finally:
        ctx.destroy(linger=0)
        daemon.stop()
    return {
        "sessions": count,
        "rss_baseline_mib": round(base / 2**20, 1),
        "rss_open_mib": round(held / 2**20, 1),
        "bytes_per_session": round((held - base) / count),
        "daemon_threads_open": threads,
        "open_s": round(opened, 3),
        "opens_per_s": round(count / opened),
        "opens_per_s_first_tenth": round(first_rate),
        "opens_per_s_last_tenth": round(last_rate),
        "close_all_s": round(closed, 3),
        "closes_per_s": round(count / closed),
        "close_until_forgotten_s": round(finished, 3),
    }


def run(quick: bool) -> dict[str, Any]:
    sizes = (100, 500) if quick else (1_000, 10_000)
    result: dict[str, Any] = {
        "what": "daemon VmRSS per open session (echo adapter, sessions opened not initialized), time to open and "
        "close them; baseline: bare pykka actors in a fresh process",
        "sizes": {str(n): _one_size(n) for n in sizes},
    }
    floor = subprocess.run(
        [PYTHON, "-m", "bench.inproc", "actor-floor", str(sizes[-1])],
        cwd=ROOT,
        env=bench_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result["bare_pykka_actor"] = json.loads(floor.stdout.strip().splitlines()[-1])
    large = result["sizes"][str(sizes[-1])]
    result["ratio_bytes_vs_bare_actor"] = round(
        large["bytes_per_session"] / result["bare_pykka_actor"]["bytes_per_actor"], 2
    )
    result["ratio_open_rate_vs_bare_actor"] = round(
        large["opens_per_s"] / result["bare_pykka_actor"]["starts_per_s"], 2
    )
    return result


if __name__ == "__main__":
    import sys

    json.dump(run("--quick" in sys.argv), sys.stdout, indent=1)
