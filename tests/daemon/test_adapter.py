"""The server adapter across real processes and real ZMQ.

The test plays the daemon with a ROUTER socket (used from the test thread only)
and runs the adapter as a subprocess; the MCP servers are tiny Python scripts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import zmq

from mcp_troupe.transport.adapter.server_process import ProcessEvent, ServerProcess, SpawnError
from mcp_troupe.transport.mailbox import Mailbox
from mcp_troupe.transport.wire import frames

REPO = Path(__file__).resolve().parents[2]
STOP = 0.3
TERM = 0.3
MARGIN = 1.5

ADAPTER_MAIN = """
import json, logging, signal, sys
from mcp_troupe.transport.adapter.runner import Adapter
logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
adapter = Adapter(**json.loads(sys.argv[1]))
signal.signal(signal.SIGTERM, lambda *_: adapter.request_stop("SIGTERM"))
sys.exit(adapter.run())
"""

READY = 'import json; print(json.dumps({"jsonrpc": "2.0", "method": "ready"}), flush=True)\n'

ECHO_SERVER = """
import json, sys
for line in sys.stdin:
    request = json.loads(line)
    if "id" in request:
        reply = {"jsonrpc": "2.0", "id": request["id"], "result": {"echo": request.get("params")}}
        print(json.dumps(reply, ensure_ascii=False), flush=True)
"""

IGNORES_EOF = (
    READY
    + """
import sys, time
sys.stdin.read()
while True:
    time.sleep(60)
"""
)

IGNORES_TERM = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + IGNORES_EOF

EXITS_WITH_3 = "import sys; sys.exit(3)"

NOISY_SERVER = """
import json, sys
print("this is not json", flush=True)
print("[1, 2]", flush=True)
print(json.dumps({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info"}}), flush=True)
sys.stdin.read()
"""


class FakeDaemon:
    """The daemon's ``back`` ROUTER, reduced to what the tests need."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> None:
        self.dispatcher = context.socket(zmq.ROUTER)
        self.dispatcher.setsockopt(zmq.LINGER, 0)
        self.dispatcher.bind(endpoint)
        self.peer: bytes | None = None
        self.heartbeats = 0

    def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame from the adapter other than a heartbeat (those are counted)."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv_any(max(0.0, deadline - time.monotonic()))
            if frame["t"] != "heartbeat":
                return frame
            self.heartbeats += 1

    def recv_any(self, timeout: float) -> dict[str, Any]:
        """The next frame from the adapter, validated against the adapter->daemon schemas."""
        if not self.dispatcher.poll(int(timeout * 1000)):
            raise AssertionError(f"no frame from the adapter within {timeout} s")
        self.peer, data = self.dispatcher.recv_multipart()
        return frames.decode(data, frames.ADAPTER_TO_DAEMON)

    def expect(self, frame_type: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        frame = self.recv(timeout)
        assert frame["t"] == frame_type, frame
        assert {name: frame.get(name) for name in fields} == fields, frame
        return frame

    def send(self, frame_type: str, **fields: Any) -> None:
        self.send_raw(frames.encode(frame_type, **fields))

    def send_raw(self, data: bytes) -> None:
        assert self.peer is not None, "the adapter has not spoken yet"
        self.dispatcher.send_multipart([self.peer, data])

    def close(self) -> None:
        self.dispatcher.close()

    def handshake(self, server: str = "test", capacity: int = 0) -> None:
        self.expect("register", server=server, capacity=capacity)
        self.send("registered", server=server)

    def spawn(self, sid: str) -> int:
        self.send("spawn", sid=sid)
        return self.expect("spawned", sid=sid)["pid"]


AdapterFactory = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def endpoint(tmp_path: Path) -> str:
    path = tmp_path / "back.sock"
    assert len(str(path)) < 100, "ipc paths must fit in sun_path"
    return f"ipc://{path}"


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def daemon(context: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> Iterator[FakeDaemon]:
    daemon = FakeDaemon(context, endpoint)
    yield daemon
    daemon.close()


@pytest.fixture
def adapter_log(tmp_path: Path) -> Path:
    return tmp_path / "adapter.log"


@pytest.fixture
def start_adapter(endpoint: str, adapter_log: Path) -> Iterator[AdapterFactory]:
    started: list[subprocess.Popen[bytes]] = []

    def start(
        server_script: str | None = None, *, launcher: Sequence[str] = (), **options: Any
    ) -> subprocess.Popen[bytes]:
        config = {
            "server": "test",
            "command": [sys.executable, "-c", server_script or ECHO_SERVER],
            "endpoint": endpoint,
            "stop_timeout": STOP,
            "term_timeout": TERM,
            "heartbeat_ms": 200,
            **options,
        }
        argv = [*launcher, sys.executable, "-c", ADAPTER_MAIN, json.dumps(config)]
        with adapter_log.open("ab") as log:
            process = subprocess.Popen(argv, cwd=REPO, stderr=log, stdin=subprocess.PIPE)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def assert_gone(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} still exists")


def close_and_time(daemon: FakeDaemon, sid: str) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    daemon.send("close", sid=sid, reason="client closed")
    frame = daemon.expect("exited", timeout=STOP + TERM + 5, sid=sid)
    return frame, time.monotonic() - started


@pytest.mark.timeout(30)
def test_register_carries_server_name_and_capacity(daemon: FakeDaemon, start_adapter: AdapterFactory) -> None:
    start_adapter(server="files", capacity=4)
    daemon.handshake(server="files", capacity=4)


@pytest.mark.timeout(30)
def test_idle_adapter_sends_heartbeats_with_a_stable_id(daemon: FakeDaemon, start_adapter: AdapterFactory) -> None:
    start_adapter()
    first = daemon.expect("register")
    assert isinstance(first.get("adapter_id"), str) and first.get("pid")
    daemon.send("registered", server="test")
    while daemon.heartbeats < 2:  # heartbeat_ms is 200 in these tests
        assert daemon.recv_any(2.0)["t"] == "heartbeat"
        daemon.heartbeats += 1


@pytest.mark.timeout(30)
def test_mcp_round_trip_and_orderly_stop(daemon: FakeDaemon, start_adapter: AdapterFactory) -> None:
    start_adapter()
    daemon.handshake()
    pid = daemon.spawn("s1")
    os.kill(pid, 0)
    request = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "echo", "text": "héllo ✓"}}
    daemon.send("mcp", sid="s1", msg=request)
    reply = daemon.expect("mcp", sid="s1")["msg"]
    assert reply == {"jsonrpc": "2.0", "id": 7, "result": {"echo": request["params"]}}

    frame, _ = close_and_time(daemon, "s1")
    assert frame["code"] == 0
    assert frame["reason"] == "stopped: exited with code 0"
    assert_gone(pid)


@pytest.mark.timeout(30)
def test_close_escalates_to_sigterm_when_stdin_eof_is_ignored(
    daemon: FakeDaemon, start_adapter: AdapterFactory
) -> None:
    start_adapter(IGNORES_EOF)
    daemon.handshake()
    pid = daemon.spawn("s1")
    daemon.expect("mcp", sid="s1")  # ready
    frame, elapsed = close_and_time(daemon, "s1")
    assert frame["code"] == -signal.SIGTERM
    assert frame["reason"] == "stopped: escalated to SIGTERM, killed by signal SIGTERM"
    assert STOP <= elapsed < STOP + TERM + MARGIN
    assert_gone(pid)


@pytest.mark.timeout(30)
def test_close_escalates_to_sigkill_when_sigterm_is_ignored(daemon: FakeDaemon, start_adapter: AdapterFactory) -> None:
    start_adapter(IGNORES_TERM)
    daemon.handshake()
    pid = daemon.spawn("s1")
    daemon.expect("mcp", sid="s1")  # ready, so SIGTERM is ignored by now
    frame, elapsed = close_and_time(daemon, "s1")
    assert frame["code"] == -signal.SIGKILL
    assert frame["reason"] == "stopped: escalated to SIGKILL, killed by signal SIGKILL"
    assert STOP + TERM <= elapsed < STOP + TERM + MARGIN
    assert_gone(pid)


@pytest.mark.timeout(30)
def test_server_exiting_by_itself_reports_its_code(daemon: FakeDaemon, start_adapter: AdapterFactory) -> None:
    start_adapter(EXITS_WITH_3)
    daemon.handshake()
    daemon.spawn("s1")
    frame = daemon.expect("exited", sid="s1")
    assert frame["code"] == 3
    assert frame["reason"] == "exited with code 3"
    daemon.send("mcp", sid="s1", msg={"jsonrpc": "2.0", "method": "late"})  # dropped, not fatal
    daemon.spawn("s2")


@pytest.mark.timeout(30)
def test_lines_that_are_not_json_objects_are_skipped(
    daemon: FakeDaemon, start_adapter: AdapterFactory, adapter_log: Path
) -> None:
    start_adapter(NOISY_SERVER)
    daemon.handshake()
    daemon.spawn("noisy-session")
    frame = daemon.expect("mcp", sid="noisy-session")
    assert frame["msg"]["method"] == "notifications/message"
    daemon.send("close", sid="noisy-session", reason="done")
    daemon.expect("exited", sid="noisy-session", code=0)
    log = adapter_log.read_text()
    assert "WARNING troupe.adapter: session noisy-session: server wrote a line that is not a JSON object" in log
    assert "this is not json" in log
    assert "[1, 2]" in log


@pytest.mark.timeout(30)
def test_spawn_of_a_missing_command_reports_spawn_failed(daemon: FakeDaemon, start_adapter: AdapterFactory) -> None:
    start_adapter(command=["/nonexistent/troupe-test-server", "--stdio"])
    daemon.handshake()
    daemon.send("spawn", sid="s1")
    frame = daemon.expect("exited", sid="s1", code=None)
    assert frame["reason"].startswith("spawn failed: ")
    assert "/nonexistent/troupe-test-server" in frame["reason"]
    assert "No such file or directory" in frame["reason"]


@pytest.mark.timeout(30)
def test_capacity_refuses_extra_sessions(daemon: FakeDaemon, start_adapter: AdapterFactory) -> None:
    start_adapter(capacity=1)
    daemon.handshake(capacity=1)
    daemon.spawn("s1")
    daemon.send("spawn", sid="s2")
    frame = daemon.expect("exited", sid="s2", code=None)
    assert frame["reason"] == "spawn refused: the adapter is at capacity (capacity=1)"


@pytest.mark.timeout(30)
def test_not_registered_error_makes_the_adapter_register_again(
    daemon: FakeDaemon, start_adapter: AdapterFactory
) -> None:
    start_adapter()
    daemon.handshake()
    daemon.send("error", code=str(frames.ErrorCode.NOT_REGISTERED), message="who are you?")
    daemon.handshake()


@pytest.mark.timeout(30)
def test_bad_frames_and_unknown_sessions_do_not_stop_the_loop(
    daemon: FakeDaemon, start_adapter: AdapterFactory
) -> None:
    start_adapter()
    daemon.handshake()
    daemon.send_raw(b"\xc1 not msgpack")
    daemon.send_raw(frames.encode("opened", ref=1, sid="x", server="test"))
    daemon.send("mcp", sid="nobody", msg={"jsonrpc": "2.0", "method": "ping"})
    daemon.send("close", sid="nobody", reason="late")
    daemon.spawn("s1")


@pytest.mark.timeout(30)
def test_adapter_registers_again_after_the_daemon_restarts(
    context: zmq.Context[zmq.Socket[bytes]], endpoint: str, daemon: FakeDaemon, start_adapter: AdapterFactory
) -> None:
    start_adapter()
    daemon.handshake()
    daemon.close()
    restarted = FakeDaemon(context, endpoint)
    try:
        restarted.handshake()
        restarted.spawn("s1")
    finally:
        restarted.close()


@pytest.mark.timeout(30)
def test_sigterm_stops_every_server_and_exits_zero(daemon: FakeDaemon, start_adapter: AdapterFactory) -> None:
    adapter = start_adapter(IGNORES_EOF)
    daemon.handshake()
    pids = {}
    for sid in ("s1", "s2", "s3"):
        pids[sid] = daemon.spawn(sid)
        daemon.expect("mcp", sid=sid)  # ready
    adapter.send_signal(signal.SIGTERM)
    exited = {}
    for _ in pids:
        frame = daemon.expect("exited", timeout=STOP + TERM + 5)
        exited[frame["sid"]] = frame
    assert set(exited) == set(pids)
    reasons = {frame["reason"] for frame in exited.values()}
    assert reasons == {"stopped: escalated to SIGTERM, killed by signal SIGTERM"}
    assert adapter.wait(10) == 0
    for pid in pids.values():
        assert_gone(pid)


@pytest.mark.timeout(30)
def test_adapter_stops_when_its_parent_dies(daemon: FakeDaemon, start_adapter: AdapterFactory) -> None:
    parent_code = "import subprocess, sys; subprocess.Popen(sys.argv[1:]); sys.stdin.read()"
    parent = start_adapter(launcher=[sys.executable, "-c", parent_code], exit_with_parent=True)
    daemon.handshake()
    pid = daemon.spawn("s1")
    assert parent.stdin is not None
    parent.stdin.close()
    assert parent.wait(5) == 0
    frame = daemon.expect("exited", sid="s1")
    assert frame["reason"] == "stopped: exited with code 0"
    assert_gone(pid)


def _next_event(mailbox: Mailbox[ProcessEvent], timeout: float) -> ProcessEvent:
    deadline = time.monotonic() + timeout
    poller = zmq.Poller()
    poller.register(mailbox.fileno(), zmq.POLLIN)
    while (remaining := deadline - time.monotonic()) > 0:
        poller.poll(int(remaining * 1000) + 1)
        items = mailbox.drain(limit=1)
        if items:
            return items[0]
    raise AssertionError(f"no event within {timeout} s")


@pytest.mark.timeout(30)
def test_stop_is_not_held_up_by_a_server_that_never_reads_stdin() -> None:
    mailbox: Mailbox[ProcessEvent] = Mailbox()
    stuck = READY + "import time\nwhile True:\n    time.sleep(60)\n"
    process = ServerProcess("s1", [sys.executable, "-c", stuck], mailbox.put, stop_timeout=STOP, term_timeout=TERM)
    try:
        assert _next_event(mailbox, 5.0)[0] == "mcp"
        for _ in range(8):
            process.send({"jsonrpc": "2.0", "method": "big", "params": {"data": "x" * 100_000}})
        started = time.monotonic()
        process.stop()
        event = _next_event(mailbox, STOP + TERM + 5)
        assert event == ("exited", "s1", -signal.SIGTERM, "stopped: escalated to SIGTERM, killed by signal SIGTERM")
        assert time.monotonic() - started < STOP + TERM + MARGIN
    except BaseException:
        process.stop()  # the mailbox stays open: the writer still reports into it
        raise
    mailbox.close()


def test_spawn_error_names_the_command_and_the_os_error(tmp_path: Path) -> None:
    not_executable = tmp_path / "not-a-program"
    not_executable.write_text("")
    with pytest.raises(SpawnError, match=r"cannot start .*not-a-program.*: \[Errno 13\] Permission denied"):
        ServerProcess("s1", [str(not_executable)], lambda event: None)
