"""Hostile and careless peers against a running daemon: each attack is reproduced, then shown to fail.

Every test runs the daemon in its own process and the attacker in the test
process (or one of its own), with an innocent session working throughout
where the attack could hurt one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from conftest import (
    ROOT,
    RunningDaemon,
    finish,
    free_tcp_endpoint,
    process_status,
    reset_peak_rss,
    server_pids,
    start_daemon,
    wait_for,
)

from mcp_troupe.transport.client import Client, DaemonUnavailable, Session
from mcp_troupe.transport.wire import jsonrpc
from mcp_troupe.transport.wire.frames import encode

PROGRAMS = ROOT / "tests" / "programs"
MiB = 1024 * 1024


class Innocent:
    """A session that keeps calling ``add`` (or ``echo`` on other servers) in a thread, and counts."""

    def __init__(self, daemon: RunningDaemon, server: str = "example", period: float = 0.05) -> None:
        self.calls = 0
        self.failures: list[str] = []
        self.slowest = 0.0
        self._stop = threading.Event()
        self._client = Client(daemon.front, timeout=30)
        self.session = self._client.open(server)
        self.session.initialize()
        self._server, self._period = server, period
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(self._period):
            i += 1
            began = time.monotonic()
            try:
                if self._server == "example":
                    result = self.session.request("tools/call", {"name": "add", "arguments": {"a": i, "b": 1}})
                    ok = result["content"][0]["text"] == str(i + 1)
                else:
                    ok = self.session.request("ping") == {"echo": {}}
            except Exception as exc:  # noqa: BLE001 - every failure is recorded and asserted on
                self.failures.append(repr(exc))
                return
            self.slowest = max(self.slowest, time.monotonic() - began)
            if not ok:
                self.failures.append(f"wrong answer to call {i}")
            self.calls += 1

    def check(self, at_least: int = 5) -> None:
        # on a loaded machine the attack may end before the innocent client made its calls: it goes on until then
        wait_for(lambda: self.calls >= at_least or self.failures or not self._thread.is_alive(), 60, "innocent calls")
        self._stop.set()
        self._thread.join(30)
        assert not self.failures, self.failures
        assert self.calls >= at_least, f"only {self.calls} calls went through"
        assert self.session.request("ping", timeout=10) is not None, "the session still answers"
        self.session.close()
        self._client.close()


def rss_kb(daemon: RunningDaemon) -> int:
    return process_status(daemon.process.pid)["VmRSS"]


def dealer(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def receive(sock: zmq.Socket[bytes], timeout: float = 10.0) -> dict[str, Any]:
    assert sock.poll(int(timeout * 1000)), "no answer from the daemon"
    return msgpack.unpackb(sock.recv())


def open_raw(sock: zmq.Socket[bytes], ref: int = 1, server: str = "example") -> str:
    sock.send(encode("open", ref=ref, server=server))
    frame = receive(sock, 30)
    assert frame["t"] == "opened", frame
    return str(frame["sid"])


def echo_daemon(args: list[str] | None = None, **kw: Any) -> tuple[RunningDaemon, subprocess.Popen[bytes]]:
    """A daemon serving only the native echo adapter (no process per session: sessions are cheap)."""
    config = Path(os.environ.get("TMPDIR", "/tmp")) / f"trp-echo-{os.getpid()}-{time.monotonic_ns()}.toml"
    config.write_text("[daemon]\n")
    daemon = start_daemon(["--config", str(config), *(args or [])], servers=0, **kw)
    adapter = subprocess.Popen(
        [sys.executable, "-m", "bench.echo_adapter", "--endpoint", daemon.back, "--server", "echo"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: daemon.health()["servers"].get("echo") == 1, 20, "the echo adapter to register")
    return daemon, adapter


@contextmanager
def echo_served(args: list[str] | None = None, **kw: Any) -> Iterator[RunningDaemon]:
    daemon, adapter = echo_daemon(args, **kw)
    try:
        yield daemon
    finally:
        adapter.terminate()
        adapter.wait(10)
        finish(daemon)


# -- 1. the routing-id collision --------------------------------------------------


def test_the_collision_aborts_a_plain_router_with_this_libzmq() -> None:
    """The attack is real: the same sequence of connections kills a process that owns a plain ROUTER."""
    result = subprocess.run([sys.executable, str(PROGRAMS / "collide.py"), "bare"], capture_output=True, timeout=30)
    assert result.returncode == -signal.SIGABRT, result
    assert b"socket_base.cpp" in result.stderr


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_the_collision_leaves_the_daemon_serving_every_session(
    transport: str, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    daemon = start_daemon(front=free_tcp_endpoint() if transport == "tcp" else None)
    try:
        innocent = Innocent(daemon)
        attacker = dealer(ctx, daemon.front)
        sid = open_raw(attacker)
        attacker.send(encode("ctl", ref=2, op="sessions.list"))
        listing = receive(attacker)["result"]["sessions"]
        mine = next(s for s in listing if s["sid"] == sid)
        # What an attacker could read its routing id from is a label now: the connection's number and pid.
        label = r"#\d+ pid \d+" if transport == "ipc" else r"#\d+ 127\.0\.0\.1"
        assert all(re.fullmatch(label, s["client"]) for s in listing), [s["client"] for s in listing]
        if transport == "ipc":
            assert mine["client"].endswith(f" pid {os.getpid()}")
        report = subprocess.run(
            [sys.executable, str(PROGRAMS / "collide.py"), daemon.front],
            capture_output=True,
            timeout=60,
            cwd=ROOT,
            check=True,
        )
        answered = json.loads(report.stdout)
        assert answered == {"first": 1, "chosen": 64, "plain": 8}, "every connection was served, chosen id or not"
        troupe = subprocess.run(
            [sys.executable, "-m", "mcp_troupe.actors", "health", "--endpoint", daemon.front],
            capture_output=True,
            timeout=30,
        )
        assert troupe.returncode == 0, troupe.stderr
        assert daemon.process.poll() is None, daemon.log()[-3000:]
        attacker.send(encode("mcp", sid=sid, msg=jsonrpc.request(1, "ping")))
        assert receive(attacker)["msg"]["result"] == {}
        innocent.check()
    finally:
        finish(daemon)


# -- 2. client-chosen strings keyed in tables -------------------------------------


def _flood(sock: zmq.Socket[bytes], frames: Iterator[bytes], expect: int, window: int = 256) -> list[dict[str, Any]]:
    """Send frames with at most ``window`` unanswered; return the ``expect`` answers."""
    answers: list[dict[str, Any]] = []
    for sent, data in enumerate(frames, 1):
        sock.send(data)
        while sent - len(answers) >= window:
            answers.append(receive(sock, 30))
    while len(answers) < expect:
        answers.append(receive(sock, 30))
    return answers


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_unique_client_strings_leave_the_daemon_where_it_started(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    count, pad = 20_000, "x" * 10_000
    with echo_served(["--rate-per-session", "0"]) as daemon:
        sock = dealer(ctx, daemon.front)
        sid = open_raw(sock, server="echo")

        def requests(kind: str, n: int, start: int) -> Iterator[bytes]:
            for i in range(start, start + n):
                unique = f"{i}-{pad}"
                if kind == "method":  # refused before initialize, as in the report
                    msg = jsonrpc.request(i, f"tools/{unique}")
                elif kind == "id":
                    msg = jsonrpc.request(unique, "tools/call", {"name": "echo"})
                else:
                    msg = jsonrpc.request(i, "tools/call", {"name": "echo", "_meta": {"progressToken": unique}})
                yield encode("mcp", sid=sid, msg=msg)

        _flood(sock, requests("method", 2000, 0), 2000)  # warm-up: the working set of one such burst
        baseline = rss_kb(daemon)
        answers = _flood(sock, requests("method", count, 10**6), count)
        assert all(a["msg"]["error"]["code"] == jsonrpc.NOT_INITIALIZED for a in answers)
        after_methods = rss_kb(daemon)
        initialized = _flood(sock, iter([encode("mcp", sid=sid, msg=jsonrpc.request("init", "initialize", {}))]), 1)
        assert "result" in initialized[0]["msg"]
        sock.send(encode("mcp", sid=sid, msg=jsonrpc.notification("notifications/initialized")))
        for kind in ("id", "token"):
            answers = _flood(sock, requests(kind, count, 2 * 10**6), count)
            assert all("result" in a["msg"] for a in answers), answers[:1]
        after_all = rss_kb(daemon)
        for label, rss in (("method names", after_methods), ("ids and progress tokens", after_all)):
            assert rss - baseline < 10 * 1024, f"after unique {label}: RSS {baseline} kB -> {rss} kB"
        with daemon.client() as client:
            stats = client.control("stats")
        assert stats["pending"] == 0


# -- 3. amplification frames ------------------------------------------------------


@pytest.mark.timeout(180)
def test_amplification_frames_are_refused_cheaply(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    daemon = start_daemon()
    try:
        innocent = Innocent(daemon)
        attacker = dealer(ctx, daemon.front)
        sid = open_raw(attacker)
        near_limit = 4 * MiB - 4096

        def request(params: Any) -> bytes:
            return encode("mcp", sid=sid, msg={"jsonrpc": "2.0", "id": 5, "method": "x", "params": {"p": params}})

        frames = {
            "4 MiB of empty maps in one array": (request([{}] * (near_limit // 1)), "bad_frame"),
            "4 MiB of empty maps in small arrays": (request([[{}] * 1000] * (near_limit // 1003)), "bad_frame"),
            "16 MiB": (request("y" * (16 * MiB - 200)), "frame_too_large"),
        }
        for what, (data, code) in frames.items():
            assert len(data) <= 16 * MiB, what
            before = rss_kb(daemon)
            reset_peak_rss(daemon.process.pid)
            attacker.send(data, copy=False)
            answer = receive(attacker, 30)
            peak = process_status(daemon.process.pid)["VmHWM"]
            assert answer["t"] == "error" and answer["code"] == code, (what, answer)
            assert answer.get("sid") == sid and answer.get("id") == 5, (what, answer)
            assert peak - before < 64 * 1024, f"{what}: peak RSS {before} kB -> {peak} kB"
        with daemon.client() as client:
            stats = client.control("stats")
        # decoding a 4 MiB frame whole would stall the loop for far longer; 200 ms leaves room for a loaded machine
        assert stats["longest_turn_ms"] < 200, stats["longest_turn_ms"]

        # A message larger than 4 x max_frame_bytes is not read at all: libzmq cuts its connection.
        huge = bytes(1024 * MiB)  # calloc'd: neither this process nor the daemon touches most of it
        ended = stats["connections"].get("front_ended", 0)
        before = rss_kb(daemon)
        reset_peak_rss(daemon.process.pid)
        gigabyte = dealer(ctx, daemon.front)
        gigabyte.send(huge, copy=False)

        def cut() -> bool:
            with daemon.client() as client:
                return client.control("stats")["connections"].get("front_ended", 0) > ended

        wait_for(cut, 30, "the daemon to cut the connection that sent 1 GiB")
        assert process_status(daemon.process.pid)["VmHWM"] - before < 64 * 1024
        attacker.send(encode("mcp", sid=sid, msg=jsonrpc.request(6, "ping")))
        assert receive(attacker)["msg"]["result"] == {}
        innocent.check()
    finally:
        finish(daemon)


# -- 4. eviction as a weapon ------------------------------------------------------


class SessionCount:
    """Polls the daemon's own count of open sessions in a thread; keeps the largest seen."""

    def __init__(self, daemon: RunningDaemon) -> None:
        self.largest = 0
        self._daemon = daemon
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self._daemon.client(timeout=10) as client:
            while not self._stop.is_set():
                self.largest = max(self.largest, client.health()["open"])

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(15)
        return self.largest


def _burst(daemon: RunningDaemon, ctx: zmq.Context[zmq.Socket[bytes]], connections: int, each: int) -> dict[str, int]:
    """``connections`` raw clients opening ``each`` sessions at once; the answers by frame type or code.

    The connections stay open until ``ctx`` is destroyed: a client's sessions end with its connection.
    """
    new = [dealer(ctx, daemon.front) for _ in range(connections)]
    for sock in new:
        for ref in range(each):
            sock.send(encode("open", ref=ref, server="echo"))
    outcome: dict[str, int] = {}
    for sock in new:
        for _ in range(each):
            frame = receive(sock, 30)
            key = frame["code"] if frame["t"] == "error" else frame["t"]
            outcome[key] = outcome.get(key, 0) + 1
    return outcome, new


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "args",
    [
        ["--open-rate-per-client", "0", "--open-rate-total", "0"],  # only max_sessions and eviction stand
        [],  # the defaults, opening rates included
    ],
    ids=["rates-off", "defaults"],
)
def test_a_burst_of_openings_evicts_no_active_session_and_the_cap_holds(
    args: list[str], ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    with echo_served(["--max-sessions", "100", *args]) as daemon:
        innocent = Innocent(daemon, server="echo", period=0.1)
        count = SessionCount(daemon)
        outcome, _clients = _burst(
            daemon, ctx, connections=60, each=50
        )  # 3000 opens, as in the report (scaled to the cap)
        largest = count.stop()
        assert largest <= 100, f"{largest} sessions open at once against max_sessions 100"
        assert outcome.get("opened", 0) <= 99, outcome
        assert outcome.get("too_many_sessions", 0) + outcome.get("rate_limited", 0) >= 2900, outcome
        innocent.check(at_least=1)  # the burst is over in a moment
        with daemon.client() as client:
            assert client.control("stats")["sessions"]["evicted"] == 0


@pytest.mark.timeout(180)
def test_sessions_idle_long_enough_are_evicted_and_active_ones_never(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    args = ["--max-sessions", "40", "--open-rate-per-client", "0", "--open-rate-total", "0"]
    with echo_served([*args, "--evict-after-idle", "1"]) as daemon:
        innocent = Innocent(daemon, server="echo", period=0.1)
        count = SessionCount(daemon)
        first, _first_clients = _burst(daemon, ctx, connections=3, each=13)  # 39 sessions, then they idle
        assert first == {"opened": 39}, first

        def evictable() -> bool:
            with daemon.client() as client:
                listing = client.control("sessions.list")["sessions"]
            return sum(1 for s in listing if s["idle_s"] >= 1.2 and s["sid"] != innocent.session.sid) >= 39

        wait_for(evictable, 20, "the burst's sessions to be idle past evict_after_idle")
        second, _second_clients = _burst(daemon, ctx, connections=10, each=10)
        largest = count.stop()
        assert largest <= 40, largest
        assert second.get("opened", 0) >= 39, second  # room made by evicting the idle ones
        innocent.check(at_least=1)


# -- 5. slow consumers ------------------------------------------------------------


FLOOD_CONFIG = """
[servers.flood]
command = ["{python}", "{program}"]
"""


@contextmanager
def flood_daemon(daemon_table: str = "") -> Iterator[RunningDaemon]:
    config = Path(f"/tmp/trp-flood-{os.getpid()}-{time.monotonic_ns()}.toml")
    text = FLOOD_CONFIG.format(python=sys.executable, program=PROGRAMS / "plain_server.py")
    config.write_text(f"[daemon]\n{daemon_table}\n{text}" if daemon_table else text)
    daemon = start_daemon(["--config", str(config), "--rate-per-session", "0", "--request-timeout", "300"])
    try:
        yield daemon
    finally:
        finish(daemon)
        config.unlink()


def _start_flood(session: Session, count: int) -> None:
    session.send(jsonrpc.request("flood", "tools/call", {"name": "flood", "arguments": {"count": count}}))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_paused_clients_get_every_notification_and_their_result() -> None:
    """One client pauses 25 s while its server floods 200,000 notifications; two more pause beside it
    (with floods that fill their queues as well), so the daemon's bound is tested with three at once."""
    counts, pause = (200_000, 30_000, 30_000), 25.0
    with flood_daemon() as daemon:
        baseline = rss_kb(daemon)
        clients = [Client(daemon.front, timeout=120) for _ in counts]
        sessions = [client.open("flood") for client in clients]
        for session, count in zip(sessions, counts, strict=True):
            session.initialize()
            _start_flood(session, count)
        largest, paused, resume = baseline, threading.Event(), time.monotonic() + pause
        while time.monotonic() < resume:  # nobody reads for `pause` seconds: the scenario itself
            largest = max(largest, rss_kb(daemon))
            paused.wait(0.2)
        with daemon.client() as client:
            stats = client.control("stats")
        assert stats["frames"]["held"].get("front", 0) > 0, "the clients' queues filled up"
        for session, count in zip(sessions, counts, strict=True):
            for n in range(count):
                msg = session.receive(timeout=120)
                assert msg["method"] == "notifications/message" and msg["params"]["data"] == n, msg
            assert session.wait_result("flood", timeout=60)["content"][0]["text"] == f"flooded {count}"
            largest = max(largest, rss_kb(daemon))
        for client in clients:
            client.close()
        with daemon.client() as client:
            stats = client.control("stats")
        assert not stats["frames"]["dropped"], stats["frames"]["dropped"]
        assert (largest - baseline) < 96 * 1024, f"daemon RSS {baseline} kB -> {largest} kB with 3 paused clients"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_client_over_its_share_of_the_backlog_is_given_up_and_told_why(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    with flood_daemon("send_backlog_bytes = 8192\nmax_server_frame_bytes = 8192") as daemon:
        innocent = Client(daemon.front, timeout=30)
        calm = innocent.open("flood")
        calm.initialize()
        greedy = ctx.socket(zmq.DEALER)
        greedy.setsockopt(zmq.RCVHWM, 10)
        greedy.setsockopt(zmq.HEARTBEAT_IVL, 1000)  # alive, but not reading
        greedy.setsockopt(zmq.HEARTBEAT_TIMEOUT, 0)  # never its own timeout (docs/protocol.rst, "Liveness")
        greedy.connect(daemon.front)
        sid = open_raw(greedy, server="flood")
        greedy.send(encode("mcp", sid=sid, msg=jsonrpc.request(0, "initialize", {"protocolVersion": "2025-11-25"})))
        assert "result" in receive(greedy)["msg"]
        greedy.send(encode("mcp", sid=sid, msg=jsonrpc.notification("notifications/initialized")))
        # Frames of 3 KB: the few that are on their way when the server is paused overflow an 8 KB share.
        count = 20_000
        flood = {"name": "flood", "arguments": {"count": count, "pad": 3000}}
        greedy.send(encode("mcp", sid=sid, msg=jsonrpc.request(1, "tools/call", flood)))

        def given_up() -> bool:
            with daemon.client() as client:
                return client.control("stats")["sessions"]["closed"].get("client_not_reading", 0) == 1

        wait_for(given_up, 60, "the daemon to give up on the client that does not read")
        with daemon.client() as client:
            stats = client.control("stats")
        assert stats["frames"]["dropped"].get("front_not_reading", 0) > 0, stats["frames"]
        assert stats["backlog_bytes"] <= 8192
        echo = calm.request("tools/call", {"name": "echo", "arguments": {"text": "still here"}})
        assert echo["content"][0]["text"] == "still here", "the other client carries on"
        frames, seq = [], 0
        while greedy.poll(2000):  # what it reads now: the frames before the give-up, then the end
            frames.append(msgpack.unpackb(greedy.recv()))
        assert frames[-1]["t"] == "closed" and frames[-1]["reason"] == "client_not_reading", frames[-1]
        seqs = [f["seq"] for f in frames if f["t"] == "mcp"]
        seq = seqs[-1] if seqs else 0
        assert seq < count and seqs == sorted(seqs), "frames were dropped, and the gap shows in seq"
        innocent.close()


# -- 6. vanished clients ----------------------------------------------------------


KILLED_CLIENT = """
import sys
from mcp_troupe.transport.client import Client
client = Client(sys.argv[1], timeout=60)
idle, pending, chatty = (client.open("example") for _ in range(3))
for s in (idle, pending, chatty):
    s.initialize()
sleep = {"name": "sleep", "arguments": {"seconds": 60}}
pending.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": sleep})
chatty.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {**sleep, "_meta": {"progressToken": "p"}}})
chatty.receive(timeout=30)  # a progress notification: the server is sending
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.mark.timeout(120)
def test_a_killed_client_has_its_sessions_closed_within_seconds() -> None:
    daemon = start_daemon()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_CLIENT, daemon.front],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=daemon.env,
        )
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        assert daemon.health()["sessions"] == 3 and len(server_pids(daemon)) == 3
        proc.kill()
        killed = time.monotonic()
        proc.wait()
        wait_for(lambda: daemon.health()["sessions"] == 0, 5, "the sessions to be closed and forgotten")
        wait_for(lambda: not server_pids(daemon), 5 - (time.monotonic() - killed), "their servers to stop")
        assert time.monotonic() - killed < 5
        with daemon.client() as client:
            closed = client.control("stats")["sessions"]["closed"]
        assert closed.get("client_gone") == 3, closed
    finally:
        finish(daemon)


@pytest.mark.timeout(180)
def test_closed_sessions_leave_nothing_behind(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    """Sessions closed long before their idle deadline must not be kept until it (the report: ~5 KB each)."""
    with echo_served(["--open-rate-per-client", "0", "--open-rate-total", "0"]) as daemon:
        sock = dealer(ctx, daemon.front)

        def open_and_close(count: int) -> None:
            for start in range(0, count, 200):
                refs = range(start, min(count, start + 200))
                for ref in refs:
                    sock.send(encode("open", ref=ref, server="echo"))
                sids = [receive(sock, 30)["sid"] for _ in refs]
                for sid in sids:
                    sock.send(encode("close", sid=sid, ref=f"c-{sid}"))
                closed = [receive(sock, 30) for _ in refs]
                assert all(frame["t"] == "closed" for frame in closed), closed[:1]
            wait_for(lambda: daemon.health()["sessions"] == 0, 30, "every session to be forgotten")

        open_and_close(2000)  # warm-up: the working set of this traffic
        baseline, count = rss_kb(daemon), 20_000
        open_and_close(count)
        grown = rss_kb(daemon) - baseline
        # Kept until their idle deadline they cost ~5 KB each (100 MB here); the allocator's noise is a few MB.
        assert grown * 1024 / count < 1000, f"RSS grew {grown} kB after {count} sessions opened and closed"


# -- 7. a daemon that dies under a client -----------------------------------------


@pytest.mark.timeout(120)
def test_a_killed_daemon_fails_the_request_in_flight_at_once_and_leaves_no_wait() -> None:
    daemon = start_daemon()
    try:
        client = Client(daemon.front, timeout=60)
        session = client.open("example")
        session.initialize()
        session.send(jsonrpc.request(9, "tools/call", {"name": "sleep", "arguments": {"seconds": 30}}))
        threading.Timer(0.5, daemon.process.kill).start()
        began = time.monotonic()
        with pytest.raises(DaemonUnavailable, match="lost the connection"):
            session.wait_result(9)
        assert time.monotonic() - began < 0.5 + 1.5
        client.close()
        daemon.process.wait()
        assert (daemon.runtime_dir / "front.sock").exists(), "the killed daemon left its socket file"
        began = time.monotonic()
        with pytest.raises(DaemonUnavailable, match="left from one that is gone"):
            Client(daemon.front)
        connect = subprocess.run(
            [sys.executable, "-m", "mcp_troupe.actors", "connect", "example"],
            env=daemon.env,
            cwd=ROOT,
            input=b"",
            capture_output=True,
            timeout=30,
        )
        assert connect.returncode == 3 and b"left from one that is gone" in connect.stderr, connect.stderr
        assert time.monotonic() - began < 3
    finally:
        daemon.process.kill()
        daemon.process.wait()
        shutil.rmtree(daemon.runtime_dir, ignore_errors=True)


# -- 8. logs -------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_flood_of_bad_frames_does_not_flood_the_log(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    daemon = start_daemon()
    try:
        sock = dealer(ctx, daemon.front)
        before = len(daemon.log())
        count = 20_000
        answers = _flood(sock, (b"\xc1not msgpack" for _ in range(count)), count)
        assert all(a["code"] == "bad_frame" for a in answers)
        grown = len(daemon.log()) - before
        assert grown < 5_000, f"{grown} bytes of log for {count} refused frames"
        with daemon.client() as client:
            assert client.control("stats")["errors"]["bad_frame"] == count
    finally:
        finish(daemon)


def test_call_into_a_closed_pipe_exits_quietly(daemon: RunningDaemon) -> None:
    reader = subprocess.Popen(
        ["head", "-c", "1"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    call = subprocess.run(
        [sys.executable, "-m", "mcp_troupe.actors", "call", "example", "tools/list"],
        env=daemon.env,
        cwd=ROOT,
        stdout=reader.stdin,
        stderr=subprocess.PIPE,
        timeout=60,
    )
    reader.wait(10)
    assert call.returncode == 0 and b"Traceback" not in call.stderr, call.stderr
