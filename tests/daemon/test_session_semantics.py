"""Session semantics through a running daemon, its adapter and the example server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, RunningDaemon, finish, start_daemon, wait_for

from mcp_troupe.transport.client import FrameRefused, RequestError, Session, Timeout
from mcp_troupe.transport.wire import jsonrpc

CAPABILITIES = {"roots": {"listChanged": False}, "sampling": {}}


@pytest.fixture(scope="module")
def strict_daemon() -> Iterator[RunningDaemon]:
    """tools/call times out after 1.5 s; two pending requests per session at most."""
    daemon = start_daemon(["--method-timeout", "tools/call=1.5", "--max-pending-per-session", "2"])
    try:
        yield daemon
    finally:
        finish(daemon)


def call(session: Session, name: str, arguments: dict, request_id: str, token: str | None = None) -> None:
    params: dict = {"name": name, "arguments": arguments}
    if token is not None:
        params["_meta"] = {"progressToken": token}
    session.send(jsonrpc.request(request_id, "tools/call", params))


def cancelled_sleeps(session: Session) -> int:
    return session.request("tools/call", {"name": "cancelled_sleeps", "arguments": {}})["structuredContent"]["result"]


@pytest.mark.timeout(60)
def test_request_past_its_timeout_gets_32001_and_the_server_is_cancelled(strict_daemon: RunningDaemon) -> None:
    with strict_daemon.client() as client:
        session = client.open("example")
        session.initialize()
        started = time.monotonic()
        call(session, "sleep", {"seconds": 20}, "slow")
        with pytest.raises(RequestError) as info:
            session.wait_result("slow", timeout=10)
        assert 1.4 < time.monotonic() - started < 5
        assert info.value.code == jsonrpc.REQUEST_TIMEOUT and info.value.message == "Request timed out"
        assert info.value.data == {"method": "tools/call", "timeout_ms": 1500}
        wait_for(lambda: cancelled_sleeps(session) == 1, 10, "the server to see the cancellation")
        session.close()


@pytest.mark.timeout(60)
def test_cancelled_sleep_stops_early_and_is_never_answered(daemon: RunningDaemon) -> None:
    with daemon.client() as client:
        session = client.open("example")
        session.initialize()
        call(session, "sleep", {"seconds": 30}, "nap", token="nap")
        assert session.receive(timeout=15)["method"] == "notifications/progress"
        session.notify("notifications/cancelled", {"requestId": "nap", "reason": "changed my mind"})
        wait_for(lambda: cancelled_sleeps(session) == 1, 10, "the server to stop the sleep")
        assert daemon.health()["pending"] == 0
        with pytest.raises(Timeout):
            session.wait_result("nap", timeout=0.2)
        session.close()


@pytest.mark.timeout(60)
def test_progress_notifications_reach_the_client(daemon: RunningDaemon) -> None:
    with daemon.client() as client:
        session = client.open("example")
        session.initialize()
        call(session, "sleep", {"seconds": 2.5}, "p", token="tok")
        progress = [session.receive(timeout=10) for _ in range(3)]
        assert [m["params"]["progressToken"] for m in progress] == ["tok"] * 3
        assert [m["params"]["progress"] for m in progress] == [1.0, 2.0, 2.5]
        assert session.wait_result("p")["content"][0]["text"] == "slept 2.5s"
        session.close()


@pytest.mark.timeout(60)
def test_server_to_client_requests_are_answered_through_the_daemon(daemon: RunningDaemon) -> None:
    with daemon.client() as client:
        session = client.open("example")
        session.initialize(capabilities=CAPABILITIES)
        call(session, "list_roots", {}, "roots")
        ask = session.receive(timeout=10)
        assert ask["method"] == "roots/list"
        session.respond(ask["id"], {"roots": [{"uri": "file:///srv/a"}, {"uri": "file:///srv/b"}]})
        assert session.wait_result("roots")["content"][0]["text"] == "file:///srv/a\nfile:///srv/b"

        call(session, "ask_llm", {"prompt": "six times seven?"}, "llm")
        ask = session.receive(timeout=10)
        assert ask["method"] == "sampling/createMessage"
        assert ask["params"]["messages"][0]["content"]["text"] == "six times seven?"
        answer = {"role": "assistant", "content": {"type": "text", "text": "42"}, "model": "m", "stopReason": "endTurn"}
        session.respond(ask["id"], answer)
        assert session.wait_result("llm")["content"][0]["text"] == "42"
        session.close()


@pytest.mark.timeout(60)
def test_a_session_at_its_pending_limit_still_takes_ping_and_close(strict_daemon: RunningDaemon) -> None:
    with strict_daemon.client() as client:
        session = client.open("example")
        session.initialize()
        call(session, "sleep", {"seconds": 1}, "a")
        call(session, "sleep", {"seconds": 1}, "b")
        with pytest.raises(RequestError) as info:
            session.request("tools/list")
        assert info.value.code == jsonrpc.TOO_MANY_PENDING
        assert info.value.data == {"scope": "session", "current": 2, "limit": 2}
        assert session.request("ping") == {}
        assert session.close() == "client"
        for request_id in ("a", "b"):
            with pytest.raises(RequestError) as info:
                session.wait_result(request_id, timeout=0)
            assert info.value.code == jsonrpc.CONNECTION_CLOSED
    wait_for(lambda: strict_daemon.health()["pending"] == 0, 10, "the global pending count to return to 0")


@pytest.mark.timeout(60)
def test_requests_before_the_handshake_are_refused(daemon: RunningDaemon) -> None:
    with daemon.client() as client:
        session = client.open("example")
        with pytest.raises(RequestError) as info:
            session.request("tools/list")
        assert info.value.code == jsonrpc.NOT_INITIALIZED
        session.initialize()
        assert len(session.request("tools/list")["tools"]) > 0
        session.close()


@pytest.mark.timeout(90)
def test_troupe_call_with_a_one_second_request_timeout(tmp_path: Path) -> None:
    config = tmp_path / "troupe.toml"
    config.write_text(
        "[limits]\nrequest_timeout = 1.0\n\n[servers.example]\n"
        f'command = ["{sys.executable}", "-m", "mcp_troupe.examples.server"]\n'
    )
    daemon = start_daemon(["--config", str(config)])
    try:
        troupe = Path(sys.executable).parent / "troupe"
        params = '{"name": "sleep", "arguments": {"seconds": 5}}'
        started = time.monotonic()
        result = subprocess.run(
            [str(troupe), "call", "example", "tools/call", "--params", params],
            env={**daemon.env, "PATH": f"{troupe.parent}{os.pathsep}{os.environ['PATH']}"},
            capture_output=True,
            timeout=30,
            cwd=ROOT,
        )
        elapsed = time.monotonic() - started
        assert result.returncode == 1
        assert b"tools/call failed: error -32001: Request timed out" in result.stderr
        assert b'"timeout_ms": 1000' in result.stderr
        # start-up + handshake (server imports, ~1 s idle) + the 1 s timeout: ~3 s on an idle machine
        assert elapsed < 20.0, f"took {elapsed:.1f}s"
    finally:
        finish(daemon)


@pytest.mark.timeout(60)
def test_modern_stateless_requests_through_the_daemon(daemon: RunningDaemon) -> None:
    meta = {
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    }
    with daemon.client() as client:
        session = client.open("example")
        discovered = session.request("server/discover", meta)
        assert "2026-07-28" in discovered["supportedVersions"]
        tools = session.request("tools/list", meta)["tools"]
        assert "echo" in {t["name"] for t in tools}
        with pytest.raises(RequestError) as info:
            session.initialize()
        assert info.value.code == jsonrpc.UNSUPPORTED_PROTOCOL_VERSION
        assert info.value.data["supported"] == ["2026-07-28"]
        session.close()


@pytest.mark.timeout(90)
def test_global_limit_and_exact_count_after_mixed_traffic() -> None:
    daemon = start_daemon(["--max-pending-total", "3", "--method-timeout", "tools/call=2"])
    try:
        with daemon.client() as client:
            sessions = [client.open("example") for _ in range(3)]
            for s in sessions:
                s.initialize()
            a, b, c = sessions
            call(a, "sleep", {"seconds": 30}, "times-out")
            call(a, "sleep", {"seconds": 30}, "cancelled", token="c")
            call(b, "sleep", {"seconds": 30}, "closed")
            with pytest.raises(RequestError) as info:
                c.request("tools/list")
            assert info.value.code == jsonrpc.TOO_MANY_PENDING
            assert info.value.data == {"scope": "global", "current": 3, "limit": 3}
            assert c.request("ping") == {}  # priority: bypasses the global limit
            a.notify("notifications/cancelled", {"requestId": "cancelled"})
            b.close()
            with pytest.raises(RequestError) as info:
                a.wait_result("times-out", timeout=10)
            assert info.value.code == jsonrpc.REQUEST_TIMEOUT
            assert (
                c.request("tools/call", {"name": "echo", "arguments": {"text": "room again"}})["content"][0]["text"]
                == "room again"
            )
            wait_for(lambda: daemon.health()["pending"] == 0, 10, "the global count to return to 0")
            for s in (a, c):
                s.close()
    finally:
        finish(daemon)


@pytest.mark.timeout(60)
def test_open_rate_per_client_and_session_limit() -> None:
    daemon = start_daemon(
        ["--open-rate-per-client", "0.5", "--open-burst", "2", "--max-sessions", "3", "--on-session-limit", "refuse"]
    )
    try:
        with daemon.client() as first, daemon.client() as second:
            opened = [first.open("example"), first.open("example")]
            with pytest.raises(FrameRefused) as info:
                first.open("example")
            assert info.value.code == "rate_limited" and 1000 <= info.value.data["retry_after_ms"] <= 2000
            opened.append(second.open("example"))  # another client has its own bucket
            with pytest.raises(FrameRefused) as info:
                second.open("example")
            assert info.value.code == "too_many_sessions"
            assert info.value.data == {"scope": "global", "current": 3, "limit": 3}
            for s in opened:
                s.close()
    finally:
        finish(daemon)


@pytest.mark.timeout(60)
def test_mcp_frame_without_sid_goes_to_the_clients_only_session(daemon: RunningDaemon) -> None:
    import msgpack
    import zmq

    from mcp_troupe.transport.wire.frames import encode

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(daemon.front)

    def ask(data: bytes) -> dict:
        sock.send(data)
        assert sock.poll(20000)
        return msgpack.unpackb(sock.recv())

    try:
        none = ask(encode("mcp", msg=jsonrpc.request(1, "ping")))
        assert none["code"] == "bad_frame" and "0 open sessions" in none["message"] and none["id"] == 1
        sid = ask(encode("open", ref=1, server="example"))["sid"]
        routed = ask(encode("mcp", msg=jsonrpc.request(2, "ping")))
        assert (
            routed["t"] == "mcp" and routed["sid"] == sid and routed["msg"] == {"jsonrpc": "2.0", "id": 2, "result": {}}
        )
        ask(encode("open", ref=2, server="example"))
        several = ask(encode("mcp", msg=jsonrpc.request(3, "ping")))
        assert several["code"] == "bad_frame" and "2 open sessions" in several["message"]
    finally:
        sock.close()
        ctx.term()
