"""Remote (``url``) servers behind troupe: faults upstream reach the client as clear errors, streams resume.

The upstream is ``tests/programs/faulty_upstream.py``, a real HTTP server in its own process whose
``/mcp/MODE`` fails in the way MODE names; the daemon, its HTTP adapters and the client are separate
processes too, talking ZeroMQ and HTTP as users run them.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, RunningDaemon, finish, start_daemon, wait_for
from http_support import free_port

from mcp_troupe.transport.client import FrameRefused, RequestError, Session
from mcp_troupe.transport.wire import jsonrpc

SECRET = "s3cret-" + os.urandom(6).hex()
CALL_TIMEOUT = 20.0


@contextlib.contextmanager
def faulty_upstream() -> Iterator[int]:
    """``tests/programs/faulty_upstream.py`` serving on a free port, in its own process."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "programs" / "faulty_upstream.py"), str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "serving"
        yield port
    finally:
        process.communicate(timeout=10)


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    with faulty_upstream() as port:
        yield port


MODES = {
    # server: (url mode, extra keys)
    "ok": ("ok", 'headers = { "X-Api-Key" = "${UPSTREAM_TEST_KEY}", "X-Plain" = "troupe-test" }\n'),
    "unauthorized": ("401", ""),
    "forbidden": ("403", ""),
    "broken": ("500", ""),
    "overloaded": ("503", ""),
    "slow": ("slow", "timeout = 0.5\n"),
    "html": ("html", ""),
    "drop": ("drop", ""),
    "expire": ("expire", 'on_exit = "restart"\n'),
    "big": ("big", ""),
    "bigsse": ("bigsse", ""),
}
MAX_MESSAGE = 100_000
"""The daemon's max_server_frame_bytes here: the big modes' 300 kB answers are over it."""


@pytest.fixture(scope="module")
def remote(upstream: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningDaemon, int]]:
    metrics = free_port()
    text = f'[daemon]\nmetrics_address = "127.0.0.1:{metrics}"\nmax_server_frame_bytes = {MAX_MESSAGE}\n'
    for name, (mode, extra) in MODES.items():
        text += f'[servers.{name}]\nurl = "http://127.0.0.1:{upstream}/mcp/{mode}"\n{extra}'
    text += f'[servers.refused]\nurl = "http://127.0.0.1:{free_port()}/mcp"\n'
    text += f'[servers.tls]\nurl = "https://127.0.0.1:{upstream}/mcp/ok"\n'
    config = tmp_path_factory.mktemp("remote") / "troupe.toml"
    config.write_text(text)
    daemon = start_daemon(
        ["--config", str(config), "--log-level", "debug"], servers=len(MODES) + 2, env={"UPSTREAM_TEST_KEY": SECRET}
    )
    try:
        yield daemon, metrics
    finally:
        finish(daemon)


def opened(daemon: RunningDaemon, server: str) -> tuple[Any, Session]:
    client = daemon.client(timeout=CALL_TIMEOUT)
    session = client.open(server)
    return client, session


def call(session: Session, text: str = "hi") -> Any:
    return session.request("tools/call", {"name": "echo", "arguments": {"text": text}}, timeout=CALL_TIMEOUT)


def stats(port: int) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/stats")
    body: dict[str, Any] = json.loads(connection.getresponse().read())
    connection.close()
    return body


def metric(port: int, server: str, kind: str) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    wanted = f'troupe_upstream_faults_total{{kind="{kind}",server="{server}"}}'
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(wanted))


FAULTS = [
    # server, fails at, data.upstream, data.http_status, words in the message
    ("refused", "initialize", "connect", None, "cannot be reached"),
    ("tls", "initialize", "tls", None, "TLS failed"),
    ("unauthorized", "call", "unauthorized", 401, "refused troupe's credentials"),
    ("forbidden", "call", "unauthorized", 403, "forbids"),
    ("broken", "call", "http_error", 500, "HTTP 500"),
    ("overloaded", "call", "http_error", 503, "HTTP 503"),
    ("slow", "call", "timeout", None, "did not answer within 0.5 s"),
    ("html", "call", "not_mcp", 200, "text/html"),
]


@pytest.mark.timeout(120)
def test_each_upstream_fault_is_a_clear_error_counted_by_server_while_other_sessions_carry_on(
    remote: tuple[RunningDaemon, int],
) -> None:
    daemon, metrics = remote
    healthy_client, healthy = opened(daemon, "ok")
    assert healthy.initialize()["serverInfo"]["name"] == "faulty-ok"
    for server, where, kind, status, words in FAULTS:
        client, session = opened(daemon, server)
        with client, pytest.raises(RequestError) as failed:
            session.initialize(timeout=CALL_TIMEOUT)
            assert where == "call", f"{server}: initialize should have failed"
            call(session)
        error = failed.value
        assert error.code == jsonrpc.UPSTREAM_FAILED, (server, error)
        assert error.data["upstream"] == kind and error.data["server"] == server, error.data
        assert error.data.get("http_status") == status and words in error.message, (server, error)
        assert "127.0.0.1" in error.data["url"], error.data
        assert call(healthy, server)["content"][0]["text"] == "ok ok"  # the other session carries on
        counted = functools.partial(metric, metrics, server, kind)
        wait_for(lambda: counted() >= 1, 10, f"the {kind} fault of {server} in the metrics")  # noqa: B023
    healthy.close()
    healthy_client.close()


def test_configured_headers_reach_the_upstream_and_their_secret_is_never_logged_or_on_a_command_line(
    remote: tuple[RunningDaemon, int], upstream: int
) -> None:
    daemon, _ = remote
    client, session = opened(daemon, "ok")
    with client:
        session.initialize()
        call(session)
    seen = stats(upstream)["headers"]
    assert {"x-api-key": SECRET, "x-plain": "troupe-test"} in seen
    assert SECRET not in daemon.log()
    command_lines = [p.read_bytes() for p in Path("/proc").glob("[0-9]*/cmdline") if _readable(p)]
    adapters = [c for c in command_lines if f"http://127.0.0.1:{upstream}/mcp/ok".encode() in c]
    assert adapters and not any(SECRET.encode() in c for c in command_lines)
    assert all(b"X-Api-Key: ${UPSTREAM_TEST_KEY}" in c for c in adapters)


def _readable(path: Path) -> bool:
    try:
        path.read_bytes()
        return True
    except OSError:
        return False


@pytest.mark.timeout(60)
def test_a_response_stream_cut_mid_call_is_resumed_and_its_answer_arrives_exactly_once(
    remote: tuple[RunningDaemon, int], upstream: int
) -> None:
    daemon, _ = remote
    client, session = opened(daemon, "drop")
    with client:
        session.initialize()
        session.send(jsonrpc.request("cut", "tools/call", {"name": "echo", "_meta": {"progressToken": "cut"}}))
        progress = session.receive(timeout=CALL_TIMEOUT)
        assert progress["method"] == "notifications/progress" and progress["params"]["progress"] == 1
        assert session.wait_result("cut", timeout=CALL_TIMEOUT)["content"][0]["text"] == "ok drop"
        assert session.request("ping", timeout=CALL_TIMEOUT) == {}  # later traffic: no second answer came first
        assert stats(upstream)["sent"]["cut"] == 1
        assert "cut" not in session._responses and not any(m.get("id") == "cut" for m in session._inbox)
    assert "resumed a response stream after event 1" in daemon.log()


@pytest.mark.timeout(60)
def test_an_upstream_that_expires_the_session_takes_the_restart_and_replay_path(
    remote: tuple[RunningDaemon, int],
) -> None:
    daemon, _ = remote
    client, session = opened(daemon, "expire")
    with client:
        session.initialize()
        assert call(session)["content"][0]["text"] == "ok expire"  # and the upstream forgets the session
        with pytest.raises(RequestError) as failed:
            call(session)  # 404: the upstream session is gone, so is this request
        assert failed.value.code == jsonrpc.CONNECTION_CLOSED and failed.value.data["reason"] == "server_restarted"
        assert "HTTP 404" in failed.value.message
        assert call(session)["content"][0]["text"] == "ok expire"  # a new upstream session, handshake replayed
        assert not session.closed


@pytest.mark.timeout(60)
@pytest.mark.parametrize("server", ["big", "bigsse"])
def test_an_upstream_answer_over_the_size_limit_is_refused_as_too_large(
    remote: tuple[RunningDaemon, int], server: str
) -> None:
    daemon, metrics = remote
    client, session = opened(daemon, server)
    with client:
        session.initialize()
        with pytest.raises(RequestError) as failed:
            call(session)
        error = failed.value
        assert error.code == jsonrpc.MESSAGE_TOO_LARGE, error
        assert error.data["upstream"] == "too_large" and error.data["limit"] == MAX_MESSAGE, error.data
        assert error.data["http_status"] == 200 and "max_server_frame_bytes" in error.message, error.message
        assert session.request("ping", timeout=CALL_TIMEOUT) == {}  # the session carries on
    wait_for(lambda: metric(metrics, server, "too_large") >= 1, 10, f"the too_large fault of {server} in the metrics")


@pytest.mark.timeout(90)
def test_sessions_are_spread_over_the_replicas_a_url_list_names(tmp_path: Path) -> None:
    with faulty_upstream() as first, faulty_upstream() as second:
        replicas = f'"http://127.0.0.1:{first}/mcp/ok", "http://127.0.0.1:{second}/mcp/ok"'
        config = tmp_path / "troupe.toml"
        config.write_text(f"[servers.spread]\nurl = [{replicas}]\ncapacity = 2\n")
        daemon = start_daemon(["--config", str(config)], servers=2)
        try:
            with daemon.client(timeout=CALL_TIMEOUT) as client:
                sessions = [client.open("spread") for _ in range(4)]
                for session in sessions:
                    session.initialize()
                    assert call(session)["content"][0]["text"] == "ok ok"
                assert stats(first)["sessions"] == 2 and stats(second)["sessions"] == 2
                with pytest.raises(FrameRefused) as refused:
                    client.open("spread")  # both replicas' adapters are full
                assert refused.value.code == "server_busy"
                sessions[0].close()
                wait_for(lambda: stats(first)["sessions"] + stats(second)["sessions"] == 3, 10, "a DELETE upstream")
        finally:
            finish(daemon)
