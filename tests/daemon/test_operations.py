"""Operating troupe: control operations and their CLI, metrics, events, audit log."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, RunningDaemon, finish, start_daemon, wait_for

from mcp_troupe.transport.client import FrameRefused, RequestError, Session, SessionClosed
from mcp_troupe.transport.wire import jsonrpc

TROUPE = Path(sys.executable).parent / "troupe"


def troupe(daemon: RunningDaemon, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**daemon.env, "PATH": f"{TROUPE.parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(TROUPE), *args], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)


def as_json(daemon: RunningDaemon, *args: str) -> Any:
    result = troupe(daemon, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ops_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    audit = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    port = free_port()
    daemon = start_daemon(["--metrics-address", f"127.0.0.1:{port}", "--audit-log", str(audit)])
    daemon.extra.update(audit=audit, port=port)
    try:
        yield daemon
    finally:
        finish(daemon)


def opened(daemon: RunningDaemon, count: int = 1) -> tuple[Any, list[Session]]:
    client = daemon.client()
    sessions = [client.open("example") for _ in range(count)]
    for s in sessions:
        s.initialize()
    return client, sessions


@pytest.mark.timeout(90)
def test_sessions_list_show_close(ops_daemon: RunningDaemon) -> None:
    client, (a, b) = opened(ops_daemon, 2)
    try:
        a.send(jsonrpc.request("slow", "tools/call", {"name": "sleep", "arguments": {"seconds": 30}}))
        listed = as_json(ops_daemon, "sessions", "list")["sessions"]
        assert {a.sid, b.sid} <= {s["sid"] for s in listed}
        table = troupe(ops_daemon, "sessions", "list", "--server", "example")
        assert table.returncode == 0 and a.sid in table.stdout and "active" in table.stdout
        assert as_json(ops_daemon, "sessions", "list", "--server", "nope")["sessions"] == []
        assert as_json(ops_daemon, "sessions", "list", "--state", "shutting_down")["sessions"] == []
        shown = as_json(ops_daemon, "sessions", "show", a.sid)["session"]
        assert shown["era"] == "legacy" and shown["server_info"]["name"] == "troupe-example"
        assert [(p["method"], p["id"]) for p in shown["pending"]] == [("tools/call", "slow")]
        text = troupe(ops_daemon, "sessions", "show", a.sid).stdout
        assert "tools/call" in text and a.sid in text
        closed = troupe(ops_daemon, "sessions", "close", a.sid)
        assert closed.returncode == 0 and a.sid in closed.stdout
        with pytest.raises(SessionClosed) as info:
            a.receive(timeout=10)
        assert info.value.reason == "operator"
        missing = troupe(ops_daemon, "sessions", "show", "no-such-session")
        assert missing.returncode == 1 and "unknown_session" in missing.stderr
        assert not b.closed and b.request("ping") == {}
    finally:
        client.close()


REFUSED_DURATIONS = ["", "-5m", "abc", "10", "10x", "1e400d", "99999999999999999999d", "400d", "nan", "inf", "5 m"]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("duration", REFUSED_DURATIONS)
def test_cleanup_refuses_bad_durations_with_the_accepted_form(ops_daemon: RunningDaemon, duration: str) -> None:
    result = troupe(ops_daemon, "sessions", "cleanup", f"--older-than={duration}")
    assert result.returncode == 2
    assert "90s, 30m, 12h or 7d" in result.stderr


@pytest.mark.timeout(90)
def test_cleanup_closes_old_or_idle_sessions(ops_daemon: RunningDaemon) -> None:
    client, (old, fresh) = opened(ops_daemon, 2)
    try:
        wait_for(lambda: as_json(ops_daemon, "sessions", "show", old.sid)["session"]["idle_s"] >= 1.0, 10, "idle time")
        fresh.request("ping")
        idle = as_json(ops_daemon, "sessions", "cleanup", "--older-than", "1s", "--idle")["closed"]
        assert old.sid in idle and fresh.sid not in idle
        with pytest.raises(SessionClosed) as info:
            old.receive(timeout=10)
        assert info.value.reason == "cleanup"
        aged = as_json(ops_daemon, "sessions", "cleanup", "--older-than", "0s")["closed"]
        assert fresh.sid in aged
        nothing = as_json(ops_daemon, "sessions", "cleanup", "--older-than", "7d")["closed"]
        assert nothing == []
    finally:
        client.close()


@pytest.mark.timeout(60)
def test_stats_health_and_status(ops_daemon: RunningDaemon) -> None:
    stats = as_json(ops_daemon, "stats")
    assert stats["adapters"] == 1 and stats["uptime_s"] > 0
    assert set(stats) >= {"sessions", "pending", "requests", "refused", "errors", "frames"}
    text = troupe(ops_daemon, "stats")
    assert text.returncode == 0 and "sessions" in text.stdout and "requests" in text.stdout
    health = troupe(ops_daemon, "health")
    assert health.returncode == 0 and health.stdout.startswith("serving")
    status = troupe(ops_daemon, "status")
    assert status.returncode == 0 and "janitor" in status.stdout


@pytest.mark.timeout(30)
def test_health_is_non_zero_without_a_daemon(tmp_path: Path) -> None:
    env = {**os.environ, "TROUPE_RUNTIME_DIR": str(tmp_path)}
    result = subprocess.run([str(TROUPE), "health"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 3 and "troupe serve" in result.stderr


def scrape(daemon: RunningDaemon) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.extra['port']}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("troupe_"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


@pytest.mark.timeout(120)
def test_metrics_counters_are_exact_after_known_traffic(tmp_path: Path) -> None:
    port = free_port()
    daemon = start_daemon(
        ["--metrics-address", f"127.0.0.1:{port}", "--max-pending-per-session", "1", "--method-timeout", "tools/call=1"]
    )
    daemon.extra["port"] = port
    try:
        client, (a, b) = opened(daemon, 2)
        for text in ("one", "two", "three"):
            a.request("tools/call", {"name": "echo", "arguments": {"text": text}})
        for made_up in ("x/made-up-1", "x/made-up-2"):
            with pytest.raises(RequestError):
                a.request(made_up)  # the server answers "method not found"
        b.send(jsonrpc.request("slow", "tools/call", {"name": "sleep", "arguments": {"seconds": 30}}))
        with pytest.raises(RequestError):
            b.request("tools/list")  # over the session's pending limit of 1
        with pytest.raises(RequestError):
            b.wait_result("slow", timeout=10)  # times out after 1 s
        client._send(b"\xc1not msgpack")
        with pytest.raises(FrameRefused):
            client.open("nope")
        a.close()
        b.close()
        wait_for(lambda: daemon.health()["sessions"] == 0, 10, "sessions to finish")
        m = scrape(daemon)
        assert m["troupe_sessions_opened_total"] == 2
        assert m['troupe_sessions_closed_total{reason="client"}'] == 2
        assert m['troupe_requests_total{method="tools/call"}'] == 4
        assert m['troupe_requests_total{method="tools/list"}'] == 1
        assert m['troupe_requests_total{method="initialize"}'] == 2
        assert m['troupe_requests_total{method="other"}'] == 2  # client-chosen names share one label
        assert not any("made-up" in name for name in m)
        assert m['troupe_requests_refused_total{reason="session"}'] == 1
        assert m['troupe_request_timeouts_total{method="tools/call"}'] == 1
        assert m['troupe_janitor_expired_total{kind="request"}'] == 1
        assert m['troupe_request_duration_seconds_count{method="tools/call"}'] == 3
        assert m['troupe_request_duration_seconds_count{method="initialize"}'] == 2
        assert m['troupe_request_duration_seconds_count{method="other"}'] == 2
        assert m['troupe_bad_frames_total{code="bad_frame"}'] == 1
        assert m['troupe_bad_frames_total{code="unknown_server"}'] == 1
        assert m["troupe_pending_requests"] == 0 and m["troupe_sessions_open"] == 0
        assert m['troupe_frames_total{direction="in",socket="front"}'] >= 10
        assert m["troupe_janitor_passes_total"] > 0
        assert m.get("troupe_evictions_total", 0) == 0
        client.close()
    finally:
        finish(daemon)


@pytest.mark.timeout(120)
def test_events_of_a_session_opened_used_evicted_and_closed_in_order() -> None:
    daemon = start_daemon(["--max-sessions", "1", "--evict-after-idle", "0"])  # the used session may be evicted
    env = {**daemon.env, "PATH": f"{TROUPE.parent}{os.pathsep}{os.environ['PATH']}"}
    watcher = subprocess.Popen(
        [str(TROUPE), "events", "--topic", "session."], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        probe = daemon.client()
        wait_for(lambda: _subscribed(probe, watcher), 20, "the event subscriber to be connected")
        client, (first,) = opened(daemon, 1)
        first.request("tools/list")
        second = client.open("example")  # over max_sessions: the first is evicted
        with pytest.raises(SessionClosed):
            first.receive(timeout=10)
        second.close()
        events = _read_events(watcher, until=lambda e: e["topic"] == "session.closed" and e["sid"] == second.sid)
        mine = [(e["topic"], e["sid"]) for e in events if e["sid"] in (first.sid, second.sid)]
        assert mine == [
            ("session.opened", first.sid),
            ("session.active", first.sid),
            ("session.opened", second.sid),
            ("session.evicted", first.sid),
            ("session.closed", first.sid),
            ("session.closed", second.sid),
        ] or mine == [
            ("session.opened", first.sid),
            ("session.active", first.sid),
            ("session.evicted", first.sid),
            ("session.closed", first.sid),
            ("session.opened", second.sid),
            ("session.closed", second.sid),
        ]
        client.close()
        probe.close()
    finally:
        watcher.terminate()
        watcher.wait(10)
        finish(daemon)


def _subscribed(probe: Any, watcher: subprocess.Popen[str]) -> bool:
    """PUB/SUB joins late: open and close probe sessions until the watcher prints one."""
    import select

    session = probe.open("example")
    session.close()
    ready, _, _ = select.select([watcher.stdout], [], [], 1.0)
    if not ready:
        return False
    watcher.stdout.readline()  # type: ignore[union-attr]
    return True


def _read_events(watcher: subprocess.Popen[str], until: Any) -> list[dict[str, Any]]:
    events = []
    while True:
        line = watcher.stdout.readline()  # type: ignore[union-attr]
        assert line, "the event stream ended"
        event = json.loads(line)
        events.append(event)
        if until(event):
            return events


@pytest.mark.timeout(60)
def test_audit_log_records_lifecycle_and_control_actions(ops_daemon: RunningDaemon) -> None:
    client, (session,) = opened(ops_daemon, 1)
    troupe(ops_daemon, "sessions", "close", session.sid)
    audit = ops_daemon.extra["audit"]

    def records() -> list[dict[str, Any]]:
        return [json.loads(line) for line in audit.read_text().splitlines()]

    wait_for(
        lambda: any(r.get("event") == "session.closed" and r["sid"] == session.sid for r in records()), 10, "audit"
    )
    mine = [r for r in records() if r.get("sid") == session.sid]
    assert [r["event"] for r in mine] == ["session.opened", "session.active", "control", "session.closed"]
    control = mine[2]
    assert control["action"] == "sessions.close" and control["client"] and control["ts"] > 0
    client.close()


@pytest.mark.timeout(60)
def test_json_logs_carry_the_session_id() -> None:
    daemon = start_daemon(["--log-format", "json"])
    try:
        client, (session,) = opened(daemon, 1)
        session.close()
        client.close()
        assert daemon.stop() == 0
        log = daemon.log()
    finally:
        finish(daemon)
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert lines and all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    about = [line for line in lines if line.get("sid") == session.sid]
    loggers = {line["logger"] for line in about}
    assert {"troupe.session", "troupe.adapter"} <= loggers  # the daemon's lines and its adapter's
    assert not [line for line in log.splitlines() if line.strip() and not line.startswith("{")]
