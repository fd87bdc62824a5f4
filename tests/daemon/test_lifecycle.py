"""Server processes and adapters dying, freezing and restarting, through a running daemon."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT, RunningDaemon, finish, server_pids, start_daemon, wait_for

from mcp_troupe.transport.client import FrameRefused, RequestError, Session, SessionClosed
from mcp_troupe.transport.keys import generate
from mcp_troupe.transport.wire import jsonrpc

SERVER = f'command = ["{sys.executable}", "-m", "mcp_troupe.examples.server"]'


def config(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "troupe.toml"
    path.write_text(text)
    return ["--config", str(path)]


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def sleeping(session: Session, request_id: str) -> None:
    session.send(jsonrpc.request(request_id, "tools/call", {"name": "sleep", "arguments": {"seconds": 30}}))


def echo(session: Session, text: str) -> str:
    return session.request("tools/call", {"name": "echo", "arguments": {"text": text}})["content"][0]["text"]


def only_server_pid(daemon: RunningDaemon) -> int:
    return wait_for(lambda: len(pids := server_pids(daemon)) == 1 and next(iter(pids)), 10, "one server process")


@pytest.mark.timeout(60)
def test_a_killed_server_fails_pending_requests_at_once_and_the_session(daemon: RunningDaemon) -> None:
    with daemon.client() as client:
        session = client.open("example")
        session.initialize()
        sleeping(session, "pending")
        pid = only_server_pid(daemon)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        with pytest.raises(RequestError) as info:
            session.wait_result("pending", timeout=5)
        assert time.monotonic() - killed < 1.0
        assert info.value.code == jsonrpc.CONNECTION_CLOSED
        assert info.value.data["reason"] == "server_exited" and "SIGKILL" in info.value.data["detail"]
        with pytest.raises(SessionClosed) as closed:
            session.receive(timeout=5)
        assert closed.value.reason == "server_exited"


@pytest.mark.timeout(90)
def test_on_exit_restart_replays_the_handshake_and_keeps_the_session(tmp_path: Path) -> None:
    daemon = start_daemon(config(tmp_path, f'[servers.example]\n{SERVER}\non_exit = "restart"\nmax_restarts = 1\n'))
    try:
        with daemon.client() as client:
            session = client.open("example")
            session.initialize()
            sleeping(session, "lost")
            first = only_server_pid(daemon)
            os.kill(first, signal.SIGKILL)
            with pytest.raises(RequestError) as info:
                session.wait_result("lost", timeout=5)  # failed, never re-sent
            assert info.value.data["reason"] == "server_restarted"
            assert echo(session, "same session, new process") == "same session, new process"
            second = only_server_pid(daemon)
            assert second != first and not session.closed
            os.kill(second, signal.SIGKILL)  # max_restarts = 1: this one ends the session
            with pytest.raises(SessionClosed) as closed:
                session.receive(timeout=10)
            assert closed.value.reason == "server_exited"
    finally:
        finish(daemon)


@pytest.mark.timeout(120)
def test_a_killed_adapter_is_restarted_and_its_sessions_follow_their_policy(tmp_path: Path) -> None:
    text = f'[servers.keep]\n{SERVER}\non_exit = "restart"\n\n[servers.drop]\n{SERVER}\n'
    daemon = start_daemon(config(tmp_path, text), servers=2)
    try:
        with daemon.client() as client:
            keep, drop = client.open("keep"), client.open("drop")
            keep.initialize()
            drop.initialize()
            pids = wait_for(lambda: len(p := server_pids(daemon)) == 2 and p, 10, "two servers")
            adapters = {parent_of(pid) for pid in pids}
            keep_adapter = next(a for a in adapters if Counter(parent_of(p) for p in pids)[a] == 1 and a)
            for adapter in adapters:
                os.kill(adapter, signal.SIGKILL)
            with pytest.raises(SessionClosed) as closed:
                drop.receive(timeout=15)
            assert closed.value.reason == "server_exited"
            assert echo(keep, "after the adapter died") == "after the adapter died"
            new_adapters = {parent_of(pid) for pid in server_pids(daemon)}
            assert keep_adapter not in new_adapters
            assert sum(daemon.health()["servers"].values()) == 2  # both adapters are back
    finally:
        finish(daemon)


@pytest.mark.timeout(120)
def test_a_frozen_adapter_is_noticed_killed_and_replaced(tmp_path: Path) -> None:
    text = f"[daemon]\nheartbeat_ms = 300\nadapter_timeout = 2.0\n\n[servers.example]\n{SERVER}\n"
    daemon = start_daemon(config(tmp_path, text))
    try:
        with daemon.client() as client:
            session = client.open("example")
            session.initialize()
            sleeping(session, "stuck")
            adapter = parent_of(only_server_pid(daemon))
            os.kill(adapter, signal.SIGSTOP)
            frozen = time.monotonic()
            with pytest.raises(RequestError) as info:
                session.wait_result("stuck", timeout=15)
            assert time.monotonic() - frozen < 6
            assert "adapter lost" in info.value.data["detail"]
            wait_for(lambda: not Path(f"/proc/{adapter}").exists() or _zombie(adapter), 15, "the frozen adapter killed")
            wait_for(lambda: sum(daemon.health()["servers"].values()) == 1, 20, "a new adapter")
            fresh = client.open("example")
            fresh.initialize()
            assert echo(fresh, "served again") == "served again"
    finally:
        finish(daemon)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.timeout(90)
def test_sessions_go_to_the_least_loaded_adapter_within_capacity(tmp_path: Path) -> None:
    daemon = start_daemon(config(tmp_path, f"[servers.example]\n{SERVER}\nadapters = 2\ncapacity = 2\n"), servers=2)
    try:
        with daemon.client() as client:
            sessions = [client.open("example") for _ in range(4)]
            pids = wait_for(lambda: len(p := server_pids(daemon)) == 4 and p, 15, "four servers")
            assert sorted(Counter(parent_of(pid) for pid in pids).values()) == [2, 2]
            with pytest.raises(FrameRefused) as info:
                client.open("example")
            assert info.value.code == "server_busy"
            sessions[0].close()
            wait_for(lambda: daemon.health()["sessions"] == 3, 10, "the closed session's server to exit")
            client.open("example")  # room again on that adapter
    finally:
        finish(daemon)


@pytest.mark.timeout(90)
def test_an_adapter_started_on_its_own_connects_over_tcp_with_its_key(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    back = f"tcp://127.0.0.1:{port}"
    state = tmp_path / "state"
    server_key = generate(state, "daemon").decode()
    generate(tmp_path / "remote-host", "remote-adapter")
    (state / "adapters" / "remote").mkdir(parents=True)
    shutil.copy(tmp_path / "remote-host" / "remote-adapter.key", state / "adapters" / "remote")
    daemon = start_daemon(
        config(tmp_path, f'[daemon]\nback = "{back}"\n'), servers=0, env={"TROUPE_STATE_DIR": str(state)}
    )
    troupe = Path(sys.executable).parent / "troupe"
    adapter = subprocess.Popen(
        [
            str(troupe),
            "adapter",
            "remote",
            "--endpoint",
            back,
            "--",
            sys.executable,
            "-m",
            "mcp_troupe.examples.server",
        ],
        cwd=ROOT,
        env={
            **daemon.env,
            "TROUPE_SERVER_KEY": server_key,
            "TROUPE_KEY_FILE": str(tmp_path / "remote-host" / "remote-adapter.key_secret"),
        },
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: daemon.health()["servers"].get("remote") == 1, 20, "the remote adapter to register")
        with daemon.client() as client:
            session = client.open("remote")
            session.initialize()
            assert echo(session, "over tcp") == "over tcp"
            session.close()
    finally:
        adapter.send_signal(signal.SIGTERM)
        assert adapter.wait(15) == 0
        finish(daemon)
