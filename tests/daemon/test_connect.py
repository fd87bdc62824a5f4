"""``troupe connect``: the stdio bridge, driven by the official MCP SDK and by raw pipes.

Every test runs real processes: a daemon (the ``daemon`` fixture), the bridge
launched as a stdio command, and the example server behind it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

import anyio
import pytest
from conftest import EXAMPLE_TOOLS, ROOT, RunningDaemon, server_pids, start_daemon, wait_for
from mcp import Client, ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.types import CallToolResult, TextContent

from mcp_troupe.transport.bridge.stdio import EXIT_UNAVAILABLE, LineBuffer, Overlong, Rejected, StdioBridge, parse_line
from mcp_troupe.transport.wire import jsonrpc


def connect_command(daemon: RunningDaemon | None, server: str = "example", *, endpoint: str | None = None) -> list[str]:
    """The command an MCP client runs: ``troupe connect`` from this environment."""
    endpoint = endpoint or (daemon.front if daemon is not None else None)
    assert endpoint is not None
    return [str(Path(sys.executable).parent / "troupe"), "connect", server, "--endpoint", endpoint]


def stdio_parameters(daemon: RunningDaemon) -> StdioServerParameters:
    command = connect_command(daemon)
    return StdioServerParameters(command=command[0], args=command[1:], cwd=str(ROOT))


INITIALIZE = jsonrpc.request(
    1,
    "initialize",
    {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw-test", "version": "1"}},
)

ProgressLog = list[tuple[float, float | None]]


def text_of(result: CallToolResult) -> str:
    assert not result.is_error, result
    content = result.content[0]
    assert isinstance(content, TextContent)
    return content.text


# -- the official SDK --------------------------------------------------------------------------


CallTool = Callable[..., Awaitable[CallToolResult]]


async def sleep_with_progress(call_tool: CallTool) -> ProgressLog:
    progress: ProgressLog = []

    async def on_progress(value: float, total: float | None, _message: str | None) -> None:
        progress.append((value, total))

    result = await call_tool("sleep", {"seconds": 1.5}, progress_callback=on_progress)
    assert text_of(result) == "slept 1.5s"
    return progress


async def cancel_a_sleep(call_tool: CallTool) -> None:
    """Start a long sleep, and once the server is surely sleeping, cancel the caller's scope.

    The SDK then writes ``notifications/cancelled {requestId, reason: "caller cancelled"}``.
    """
    sleeping = anyio.Event()

    async def on_progress(_value: float, _total: float | None, _message: str | None) -> None:
        sleeping.set()

    async def call() -> None:
        await call_tool("sleep", {"seconds": 30}, progress_callback=on_progress)
        raise AssertionError("the cancelled sleep returned")

    async with anyio.create_task_group() as group:
        group.start_soon(call)
        with anyio.fail_after(15):
            await sleeping.wait()
        group.cancel_scope.cancel()


async def wait_cancelled_sleeps(call_tool: CallTool, expected: int) -> None:
    """Poll ``cancelled_sleeps`` (the server counts a cancelled sleep a moment after the notification)."""
    with anyio.fail_after(10):
        while (count := int(text_of(await call_tool("cancelled_sleeps", {})))) != expected:
            assert count < expected
            await anyio.sleep(0.05)


def bridge_stderr(errlog: TextIO) -> str:
    errlog.seek(0)
    return errlog.read()


@pytest.mark.timeout(40)
def test_legacy_client_session_over_stdio_client(daemon: RunningDaemon, tmp_path: Path) -> None:
    async def scenario(errlog: TextIO) -> None:
        async with (
            stdio_client(stdio_parameters(daemon), errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            init = await session.initialize()
            assert init.protocol_version == "2025-11-25"
            assert init.server_info.name == "troupe-example"
            tools = await session.list_tools()
            assert sorted(tool.name for tool in tools.tools) == EXAMPLE_TOOLS
            assert text_of(await session.call_tool("echo", {"text": "héllo"})) == "héllo"
            assert text_of(await session.call_tool("add", {"a": 2, "b": 3})) == "5"
            assert await sleep_with_progress(session.call_tool) == [(1.0, 1.5), (1.5, 1.5)]
            await cancel_a_sleep(session.call_tool)
            await wait_cancelled_sleeps(session.call_tool, 1)

    with (tmp_path / "bridge.stderr").open("w+") as errlog:
        anyio.run(scenario, errlog)
        assert "Traceback" not in bridge_stderr(errlog)
    wait_for(lambda: daemon.health()["sessions"] == 0, 10, "the bridge's session to close")


@pytest.mark.timeout(40)
@pytest.mark.parametrize(("mode", "version"), [("auto", "2026-07-28"), ("legacy", "2025-11-25")])
def test_high_level_client(daemon: RunningDaemon, mode: str, version: str) -> None:
    async def scenario() -> None:
        async with Client(stdio_parameters(daemon), mode=mode) as client:
            assert client.protocol_version == version
            assert client.server_info is not None and client.server_info.name == "troupe-example"
            tools = await client.list_tools()
            assert sorted(tool.name for tool in tools.tools) == EXAMPLE_TOOLS
            assert text_of(await client.call_tool("echo", {"text": "hi"})) == "hi"
            assert await sleep_with_progress(client.call_tool) == [(1.0, 1.5), (1.5, 1.5)]
            await cancel_a_sleep(client.call_tool)
            await wait_cancelled_sleeps(client.call_tool, 1)

    anyio.run(scenario)
    wait_for(lambda: daemon.health()["sessions"] == 0, 10, "the bridge's session to close")


# -- raw pipes ---------------------------------------------------------------------------------


DEADLINE = 60.0
"""How long a read waits: generous, as a loaded 2-core CI machine needs (an example server's start took 15 s there)."""


class RawBridge:
    """The bridge as a subprocess with pipes, read with deadlines."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
        )
        self._buffer = b""
        self.lines: list[bytes] = []
        """Every stdout line read so far."""

    def write(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def send(self, msg: dict[str, Any]) -> None:
        self.write(json.dumps(msg).encode() + b"\n")

    def read(self, timeout: float = DEADLINE) -> dict[str, Any]:
        """The next stdout line, which must be one JSON-RPC message."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no line on stdout within {timeout}s"
            ready, _, _ = select.select([self.process.stdout], [], [], remaining)
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 65536)
                assert chunk, f"stdout closed; partial {self._buffer!r}"
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        self.lines.append(line)
        msg: dict[str, Any] = json.loads(line)
        assert msg["jsonrpc"] == "2.0"
        return msg

    def response(self, request_id: jsonrpc.RequestId, timeout: float = DEADLINE) -> dict[str, Any]:
        """Read until the response to ``request_id``, skipping notifications."""
        while "method" in (msg := self.read(timeout)) or msg.get("id") != request_id:
            pass
        return msg

    def initialize(self) -> None:
        self.send(INITIALIZE)
        assert self.response(1)["result"]["serverInfo"]["name"] == "troupe-example"
        self.send(jsonrpc.notification("notifications/initialized"))

    def close_stdin(self) -> None:
        """End of input, as an MCP client closing our stdin (detached, so `communicate` leaves it alone)."""
        stdin, self.process.stdin = self.process.stdin, None
        assert stdin is not None
        stdin.close()

    def finish(self, timeout: float = 10.0) -> tuple[int, list[bytes], str]:
        """Wait for the exit: its status, the stdout lines not yet read, stderr."""
        out, err = self.process.communicate(timeout=timeout)
        rest = (self._buffer + out).split(b"\n")
        assert rest[-1] == b"", f"stdout ends without a newline: {rest[-1]!r}"
        return self.process.returncode, rest[:-1], err.decode(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        if self.process.stdout is not None and self.process.stdout.closed:
            self.process.stdout = None
        self.process.communicate()


@pytest.mark.timeout(150)
def test_stdout_is_json_lines_only_and_bad_lines_are_answered(daemon: RunningDaemon) -> None:
    bridge = RawBridge(connect_command(daemon))
    try:
        bridge.initialize()
        bridge.write(b"this is not json\n")
        parse_error = bridge.read()
        assert parse_error["id"] is None and parse_error["error"]["code"] == jsonrpc.PARSE_ERROR
        bridge.write(b'[{"jsonrpc": "2.0", "id": 5, "method": "ping"}]\n')
        batch = bridge.read()
        assert batch["id"] is None and batch["error"]["code"] == jsonrpc.INVALID_REQUEST
        assert "batch" in batch["error"]["message"]
        # An integer beyond 64 bits is valid JSON: carried (as JSON text in the frame), as a server takes it.
        bridge.send(jsonrpc.request(6, "tools/call", {"name": "add", "arguments": {"a": 2**70, "b": 1}}))
        big = bridge.response(6)
        assert big["result"]["structuredContent"] == {"result": 2**70 + 1}, big
        # CRLF, blank lines and a line split across two writes: the bridge keeps working.
        echo = json.dumps(jsonrpc.request(7, "tools/call", {"name": "echo", "arguments": {"text": "ünïcode ✓"}}))
        bridge.write(b"\r\n  \n" + echo[:20].encode())
        bridge.write(echo[20:].encode() + b"\r\n")
        assert bridge.response(7)["result"]["content"][0]["text"] == "ünïcode ✓"
        assert "✓".encode() in bridge.lines[-1]  # ensure_ascii=False
        bridge.close_stdin()
        code, rest, stderr = bridge.finish()
    finally:
        bridge.kill()
    assert code == 0, stderr
    for line in bridge.lines + rest:
        assert json.loads(line)["jsonrpc"] == "2.0"
    assert "not valid JSON" in stderr


@pytest.mark.timeout(150)
def test_stdin_eof_answers_the_outstanding_request_and_closes_the_session(daemon: RunningDaemon) -> None:
    bridge = RawBridge(connect_command(daemon))
    try:
        bridge.initialize()
        request = jsonrpc.request(2, "tools/call", {"name": "sleep", "arguments": {"seconds": 30}})
        request["params"]["_meta"] = {"progressToken": "p"}
        bridge.send(request)
        assert bridge.read()["method"] == "notifications/progress"  # the server is really sleeping
        assert daemon.health()["sessions"] == 1
        started = time.monotonic()
        bridge.close_stdin()
        code, rest, stderr = bridge.finish()
        elapsed = time.monotonic() - started
    finally:
        bridge.kill()
    assert code == 0, stderr
    assert elapsed < 10.0, "answered at once, not when the 30 s call ends"
    [answer] = [json.loads(line) for line in rest]
    assert answer["id"] == 2
    assert answer["error"]["code"] == jsonrpc.CONNECTION_CLOSED
    assert answer["error"]["data"] == {"reason": "client", "method": "tools/call"}
    wait_for(lambda: daemon.health()["sessions"] == 0, 10, "the session to be forgotten")
    wait_for(lambda: not server_pids(daemon), 10, "the server process to end")


@pytest.mark.timeout(150)
def test_sigterm_closes_the_session_and_exits_0(daemon: RunningDaemon) -> None:
    bridge = RawBridge(connect_command(daemon))
    try:
        bridge.initialize()
        bridge.process.send_signal(signal.SIGTERM)
        code, _rest, stderr = bridge.finish()
    finally:
        bridge.kill()
    assert code == 0, stderr
    wait_for(lambda: daemon.health()["sessions"] == 0, 10, "the session to be forgotten")


@pytest.mark.timeout(150)
def test_daemon_shutdown_ends_the_bridge_with_status_1(daemon: RunningDaemon) -> None:
    bridge = RawBridge(connect_command(daemon))
    try:
        bridge.initialize()
        assert daemon.stop() == 0
        bridge.process.wait(timeout=10)  # before `finish` closes stdin, which would end the bridge too
        code, rest, stderr = bridge.finish()
    finally:
        bridge.kill()
    assert code == 1, stderr
    assert rest == []
    assert "shutdown" in stderr


@pytest.mark.timeout(150)
def test_a_killed_daemon_answers_the_outstanding_request_and_exits_1() -> None:
    daemon = start_daemon(["--orphan-grace", "0"])  # the servers end with it
    bridge = RawBridge(connect_command(daemon))
    try:
        bridge.initialize()
        request = jsonrpc.request(2, "tools/call", {"name": "sleep", "arguments": {"seconds": 30}})
        request["params"]["_meta"] = {"progressToken": "p"}
        bridge.send(request)
        assert bridge.read()["method"] == "notifications/progress"
        daemon.process.kill()
        bridge.process.wait(timeout=10)  # before `finish` closes stdin, which would end the bridge too
        code, rest, stderr = bridge.finish()
        # The adapters the daemon started exit with it, stopping their servers.
        wait_for(lambda: not server_pids(daemon), 15, "the server processes to end")
    finally:
        bridge.kill()
        if daemon.process.poll() is None:
            daemon.process.kill()
        daemon.process.wait()
        shutil.rmtree(daemon.runtime_dir, ignore_errors=True)
    assert code == 1, stderr
    [answer] = [json.loads(line) for line in rest]
    assert answer["id"] == 2
    assert answer["error"]["code"] == jsonrpc.CONNECTION_CLOSED
    assert answer["error"]["data"] == {"reason": "disconnected"}
    assert "lost the connection" in stderr and daemon.front in stderr


@pytest.mark.timeout(150)
def test_stdout_closed_by_the_client_closes_the_session(daemon: RunningDaemon) -> None:
    bridge = RawBridge(connect_command(daemon))
    try:
        bridge.initialize()
        assert bridge.process.stdout is not None
        bridge.process.stdout.close()
        bridge.send(jsonrpc.request(2, "ping"))  # its response cannot be written
        code = bridge.process.wait(timeout=10)
    finally:
        bridge.kill()
    assert code == 0
    wait_for(lambda: daemon.health()["sessions"] == 0, 10, "the session to be forgotten")


@pytest.mark.timeout(150)
def test_a_refused_request_gets_a_json_rpc_error(daemon: RunningDaemon) -> None:
    """The daemon refuses a frame over max_frame_bytes (4 MiB) with an error frame naming the request's id."""
    bridge = RawBridge(connect_command(daemon))
    try:
        bridge.initialize()
        bridge.send(jsonrpc.request("big", "tools/call", {"name": "echo", "arguments": {"text": "x" * 5_000_000}}))
        refused = bridge.response("big")
        assert refused["error"]["code"] == jsonrpc.MESSAGE_TOO_LARGE
        assert refused["error"]["data"] == {"troupe_code": "frame_too_large", "limit": 4 * 1024 * 1024}
        bridge.send(jsonrpc.request(3, "tools/call", {"name": "echo", "arguments": {"text": "after"}}))
        assert bridge.response(3)["result"]["content"][0]["text"] == "after"
        bridge.close_stdin()
        code, _rest, stderr = bridge.finish()
    finally:
        bridge.kill()
    assert code == 0, stderr


@pytest.mark.timeout(15)
def test_no_daemon_exits_3_at_once_naming_the_endpoint() -> None:
    with tempfile.TemporaryDirectory(prefix="trp-", dir="/tmp") as directory:
        endpoint = f"ipc://{directory}/front.sock"
        started = time.monotonic()
        done = subprocess.run(connect_command(None, endpoint=endpoint), input=b"", capture_output=True, timeout=10)
    assert time.monotonic() - started < 2.0
    assert done.returncode == EXIT_UNAVAILABLE
    assert done.stdout == b""
    stderr = done.stderr.decode()
    assert endpoint in stderr and "troupe serve" in stderr


@pytest.mark.timeout(15)
def test_unknown_server_exits_3(daemon: RunningDaemon) -> None:
    done = subprocess.run(connect_command(daemon, "nope"), input=b"", capture_output=True, timeout=10)
    assert done.returncode == EXIT_UNAVAILABLE
    assert done.stdout == b""
    assert "unknown_server" in done.stderr.decode()


# -- in process --------------------------------------------------------------------------------


@pytest.mark.timeout(15)
def test_no_answer_to_open_exits_3_after_open_timeout(caplog: pytest.LogCaptureFixture) -> None:
    read_end, write_end = os.pipe()
    stdout = io.BytesIO()
    endpoint = "tcp://127.0.0.1:9"  # discard port: nothing answers
    try:
        bridge = StdioBridge("example", endpoint, stdin_fd=read_end, stdout=stdout, open_timeout=0.5)
        started = time.monotonic()
        with caplog.at_level(logging.ERROR, "troupe.connect"):
            assert bridge.run() == EXIT_UNAVAILABLE
    finally:
        os.close(read_end)
        os.close(write_end)
    assert 0.5 <= time.monotonic() - started < 2.0
    assert stdout.getvalue() == b""
    assert endpoint in caplog.text and "troupe serve" in caplog.text


@pytest.mark.timeout(15)
def test_a_stop_while_opening_exits_0_after_close_timeout() -> None:
    read_end, write_end = os.pipe()
    try:
        bridge = StdioBridge("example", "tcp://127.0.0.1:9", stdin_fd=read_end, stdout=io.BytesIO(), close_timeout=0.3)
        bridge.request_stop("test")  # as SIGTERM does, from the signal handler
        started = time.monotonic()
        assert bridge.run() == 0
    finally:
        os.close(read_end)
        os.close(write_end)
    assert time.monotonic() - started < 2.0


def test_line_buffer_splits_partial_lines_and_drops_overlong_ones() -> None:
    lines = LineBuffer(max_line=10)
    assert lines.feed(b'{"a"') == []
    assert lines.feed(b":1}\r\n\n12345") == [b'{"a":1}\r', b""]
    assert lines.feed(b"67890123") == []  # over 10 bytes: dropped as it arrives, told when it ends
    assert lines.feed(b"456\nok\n") == [Overlong(16, None), b"ok"]
    head, tail = b'{"params": {"id": 1, "x": "', b'long"}, "id": 9, "method": "m"}'
    assert lines.feed(head) == []
    assert lines.feed(tail + b"\ntail") == [Overlong(len(head + tail), {"params": {}, "id": 9, "method": "m"})]
    assert lines.finish() == [b"tail"]


@pytest.mark.parametrize(
    ("line", "code", "request_id"),
    [
        (b"{not json", jsonrpc.PARSE_ERROR, None),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"n": NaN}}', jsonrpc.PARSE_ERROR, None),
        (b"\xff\xfe", jsonrpc.PARSE_ERROR, None),
        (b"[]", jsonrpc.INVALID_REQUEST, None),
        (b"42", jsonrpc.INVALID_REQUEST, None),
        (b'{"jsonrpc": "1.0", "id": 7, "method": "ping"}', jsonrpc.INVALID_REQUEST, 7),
        (b'{"jsonrpc": "2.0", "id": "a", "method": "ping", "params": [1]}', jsonrpc.INVALID_REQUEST, "a"),
    ],
)
def test_bad_lines_are_answered(line: bytes, code: int, request_id: jsonrpc.RequestId | None) -> None:
    with pytest.raises(Rejected) as info:
        parse_line(line)
    assert info.value.response is not None
    assert info.value.response["id"] == request_id
    assert info.value.response["error"]["code"] == code


def test_bad_notifications_are_only_logged() -> None:
    with pytest.raises(Rejected) as info:
        parse_line(b'{"jsonrpc": "1.0", "method": "notifications/initialized"}')
    assert info.value.response is None
