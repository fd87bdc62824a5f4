"""`troupe serve` as users run it: start-up, clean SIGTERM/SIGINT shutdown, refusals."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from conftest import ROOT, finish, server_pids, start_daemon, wait_for

from mcp_troupe.transport.client import Client, DaemonUnavailable, FrameRefused, SessionClosed


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_closes_sessions_tells_clients_and_ends_servers(signum: int) -> None:
    daemon = start_daemon()
    client = daemon.client()
    sessions = [client.open("example") for _ in range(3)]
    for s in sessions:
        s.initialize()
    assert len(server_pids(daemon)) == 3
    daemon.process.send_signal(signum)
    assert daemon.process.wait(30) == 0, daemon.log()
    for s in sessions:
        with pytest.raises(SessionClosed):
            s.receive(timeout=5)  # drains frames until the closed frame ends the session
        assert s.close_reason == "shutdown"
    client.close()
    wait_for(lambda: not server_pids(daemon), 10, "server processes to end")
    assert "shutting down" in daemon.log()
    assert not (daemon.runtime_dir / "front.sock").exists()


@pytest.mark.timeout(60)
def test_second_daemon_on_the_same_runtime_dir_is_refused() -> None:
    first = start_daemon()
    try:
        second = subprocess.run(
            [sys.executable, "-m", "mcp_troupe.actors", "serve"],
            env=first.env,
            cwd=ROOT,
            capture_output=True,
            timeout=30,
        )
        assert second.returncode != 0
        assert b"another troupe daemon" in second.stderr
        assert first.health()["status"] == "serving"
    finally:
        finish(first)


def test_client_without_daemon_fails_fast(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DaemonUnavailable, match="troupe serve"):
        Client(f"ipc://{tmp_path}/front.sock")


@pytest.mark.timeout(30)
def test_client_to_a_silent_endpoint_says_so(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with (
        Client("tcp://127.0.0.1:9", timeout=0.5) as client,
        pytest.raises(DaemonUnavailable, match="is `troupe serve` running"),
    ):
        client.open("example")


@pytest.mark.timeout(60)
def test_bad_config_is_refused_with_the_key_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "troupe.toml"
    config.write_text('[daemon]\nmax_frame_bytes = "big"\n')
    result = subprocess.run(
        [sys.executable, "-m", "mcp_troupe.actors", "serve", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert b"max_frame_bytes" in result.stderr and b"positive integer" in result.stderr


@pytest.mark.timeout(60)
def test_configured_server_with_a_missing_command_fails_the_open_clearly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "troupe.toml"
    config.write_text('[servers.broken]\ncommand = ["/nonexistent/mcp-server"]\n')
    daemon = start_daemon(["--config", str(config)])
    try:
        with daemon.client() as client, pytest.raises(FrameRefused) as info:
            client.open("broken")
        assert info.value.code == "spawn_failed"
        assert "/nonexistent/mcp-server" in info.value.message
        assert daemon.health()["sessions"] == 0
    finally:
        finish(daemon)
