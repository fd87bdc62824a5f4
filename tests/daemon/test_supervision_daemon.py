"""Supervisor restart tests against a running daemon, with clients in other processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon, finish, server_pids, start_daemon, wait_for

from mcp_troupe.transport.client import Client, RequestError, Session, SessionClosed
from mcp_troupe.transport.wire import jsonrpc

TROUPE = Path(sys.executable).parent / "troupe"


def child(daemon: RunningDaemon, child_id: str) -> dict[str, Any]:
    with daemon.client(timeout=5) as client:
        tree = client.control("status")["supervisor"]
    return next(c for c in tree["children"] if c["id"] == child_id)


def inject(daemon: RunningDaemon, target: str, when: str = "now", sid: str | None = None) -> None:
    with daemon.client(timeout=5) as client:
        client.control("inject_fault", {"target": target, "when": when, "sid": sid})


def sleep_call(session: Session, request_id: str, seconds: float = 30) -> None:
    session.send(jsonrpc.request(request_id, "tools/call", {"name": "sleep", "arguments": {"seconds": seconds}}))


def expect_timeout(session: Session, request_id: str) -> None:
    with pytest.raises(RequestError) as info:
        session.wait_result(request_id, timeout=15)
    assert info.value.code == jsonrpc.REQUEST_TIMEOUT


def closed_reason(session: Session, timeout: float = 15) -> str:
    with pytest.raises(SessionClosed) as info:
        session.receive(timeout=timeout)
    return info.value.reason


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_janitor_crash_is_restarted_and_still_expires_on_time() -> None:
    daemon = start_daemon(["--enable-fault-injection", "--method-timeout", "tools/call=2", "--idle-timeout", "4"])
    try:
        with daemon.client() as client:
            before = client.open("example")
            before.initialize()
            sleep_call(before, "pending-across-the-crash")
            inject(daemon, "janitor")
            wait_for(lambda: child(daemon, "janitor")["restarts"] == 1, 10, "the janitor's restart")
            janitor = child(daemon, "janitor")
            assert janitor["state"] == "running" and janitor["incarnation"] == 2
            assert "FaultInjected" in janitor["last_failure"]
            expect_timeout(before, "pending-across-the-crash")  # rescheduled with the new janitor

            after = client.open("example")
            after.initialize()
            started = time.monotonic()
            sleep_call(after, "after-the-crash")
            expect_timeout(after, "after-the-crash")
            assert 1.9 < time.monotonic() - started < 10  # 2 s plus a tick; loose for a loaded CI machine

            idle = client.open("example", expire_idle=True)
            idle.initialize()
            assert closed_reason(idle, timeout=20) == "idle"
            assert child(daemon, "evictor")["restarts"] == 0
    finally:
        finish(daemon)


@pytest.mark.timeout(120)
def test_evictor_crash_during_a_burst_of_openings_keeps_the_bound() -> None:
    # evict_after_idle 0: sessions just used may be evicted, so the burst exercises eviction (not refusal)
    daemon = start_daemon(["--enable-fault-injection", "--max-sessions", "3", "--evict-after-idle", "0"])
    try:
        with daemon.client() as first, daemon.client() as second:
            old = [first.open("example") for _ in range(3)]
            old[0].initialize()
            sleep_call(old[0], "cut-off")  # an evicted session's pending request gets an error
            inject(daemon, "evictor")
            burst = [second.open("example") for _ in range(4)]
            wait_for(lambda: child(daemon, "evictor")["restarts"] == 1, 10, "the evictor's restart")
            wait_for(lambda: daemon.health()["sessions"] <= 3, 20, "the session bound to hold again")
            evicted = []
            for session in old + burst:
                try:
                    session.request("ping", timeout=30)  # a server still starting on a loaded machine
                except SessionClosed as exc:
                    evicted.append((session, exc.reason))
            assert len(evicted) == 4
            assert {reason for _, reason in evicted} == {"evicted"}
            assert all(s in [e for e, _ in evicted] for s in old)  # least recently active first
            with pytest.raises(RequestError) as info:
                old[0].wait_result("cut-off", timeout=0)
            assert info.value.code == jsonrpc.CONNECTION_CLOSED and info.value.data["reason"] == "evicted"
            assert daemon.health()["sessions"] == 3
            wait_for(lambda: len(server_pids(daemon)) == 3, 15, "evicted sessions' servers to stop")
    finally:
        finish(daemon)


@pytest.mark.timeout(120)
def test_a_crash_in_on_start_of_the_next_incarnation_is_noticed() -> None:
    daemon = start_daemon(
        ["--enable-fault-injection", "--supervisor-intensity", "5", "--method-timeout", "tools/call=2"]
    )
    try:
        env = {**daemon.env, "PATH": f"{TROUPE.parent}{os.pathsep}{os.environ['PATH']}"}
        injected = subprocess.run(
            ["troupe", "inject-fault", "janitor", "--when", "both"], env=env, capture_output=True, timeout=30
        )
        assert injected.returncode == 0, injected.stderr.decode()
        wait_for(lambda: child(daemon, "janitor")["restarts"] == 2, 10, "two restarts (crash, then on_start)")
        janitor = child(daemon, "janitor")
        assert janitor["state"] == "running" and janitor["incarnation"] == 3
        assert "on_start" in janitor["last_failure"]
        status = subprocess.run(["troupe", "status"], env=env, capture_output=True, timeout=30)
        assert status.returncode == 0
        line = next(line for line in status.stdout.decode().splitlines() if line.strip().startswith("janitor"))
        assert line.split()[:4] == ["janitor", "running", "permanent", "2"]
        with Client(daemon.front, timeout=20) as client:  # and the third incarnation works
            session = client.open("example")
            session.initialize()
            sleep_call(session, "x")
            expect_timeout(session, "x")
    finally:
        finish(daemon)


@pytest.mark.timeout(120)
def test_exceeding_the_restart_intensity_shuts_the_daemon_down_and_tells_clients() -> None:
    daemon = start_daemon(["--enable-fault-injection"])  # OTP's default: 1 restart in 5 s
    with daemon.client() as client:
        session = client.open("example")
        session.initialize()
        sleep_call(session, "in-flight")
        inject(daemon, "janitor", when="both")
        assert daemon.process.wait(30) == 70, daemon.log()
        with pytest.raises(RequestError) as info:
            session.wait_result("in-flight", timeout=10)
        assert info.value.code == jsonrpc.CONNECTION_CLOSED and info.value.data["reason"] == "escalation"
        assert closed_reason(session, timeout=5) == "escalation"
    log = daemon.log()
    assert "restart intensity 1 in 5s was exceeded" in log and "supervisor escalated" in log
    wait_for(lambda: not server_pids(daemon), 10, "server processes to end")


@pytest.mark.timeout(120)
def test_a_crashed_session_fails_alone() -> None:
    daemon = start_daemon(["--enable-fault-injection"])
    try:
        with daemon.client() as client:
            sessions = [client.open("example") for _ in range(11)]
            for s in sessions:
                s.initialize()
            victim, others = sessions[0], sessions[1:]
            sleep_call(victim, "doomed")
            wait_for(lambda: len(server_pids(daemon)) == 11, 10, "11 server processes")
            inject(daemon, "session", sid=victim.sid)
            with pytest.raises(RequestError) as info:
                victim.wait_result("doomed", timeout=10)
            assert info.value.code == jsonrpc.CONNECTION_CLOSED and info.value.data["reason"] == "failed"
            assert closed_reason(victim, timeout=5) == "failed"
            assert "injected fault" in victim.close_message
            wait_for(lambda: len(server_pids(daemon)) == 10, 10, "the crashed session's server to stop")
            for i, s in enumerate(others):
                result = s.request("tools/call", {"name": "echo", "arguments": {"text": f"still {i}"}})
                assert result["content"][0]["text"] == f"still {i}"
            assert daemon.health()["sessions"] == 10
    finally:
        finish(daemon)


@pytest.mark.timeout(120)
def test_janitor_and_evictor_crashes_disturb_no_session() -> None:
    daemon = start_daemon(["--enable-fault-injection", "--supervisor-intensity", "100"])
    try:
        with daemon.client() as client:
            sessions = [client.open("example") for _ in range(3)]
            for s in sessions:
                s.initialize()
            for cycle in range(1, 6):
                for target in ("janitor", "evictor"):
                    inject(daemon, target)
                    wait_for(
                        lambda t=target, c=cycle: child(daemon, t)["restarts"] == c, 10, f"{target} restart {cycle}"
                    )
                for i, s in enumerate(sessions):
                    text = f"cycle {cycle} session {i}"
                    assert (
                        s.request("tools/call", {"name": "echo", "arguments": {"text": text}})["content"][0]["text"]
                        == text
                    )
            assert daemon.health()["sessions"] == 3 and not any(s.closed for s in sessions)
    finally:
        finish(daemon)
