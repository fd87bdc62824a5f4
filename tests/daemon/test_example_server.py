"""End-to-end tests of the bundled example MCP server (``python -m mcp_troupe.examples.server``).

Each test starts the server as a real subprocess and speaks raw
newline-delimited JSON-RPC to it over its stdin/stdout pipes, so what is
checked is exactly what goes over the wire. A reader thread parses stdout into
a queue; every wait is a poll on that queue with a deadline.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLE_TOOLS

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTOCOL_VERSION = "2025-11-25"
Message = dict[str, Any]


STARTUP_TIMEOUT = 45.0
"""The SDK server imports for about a second; far longer on a loaded CI machine."""


class ServerProcess:
    """The example server as a subprocess, driven by raw JSON-RPC lines."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mcp_troupe.examples.server"],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._inbox: queue.Queue[Message | None] = queue.Queue()
        self._unclaimed: list[Message] = []  # read but not yet matched by a wait
        self.non_json_stdout: list[bytes] = []
        self.stderr_lines: list[bytes] = []
        self._next_id = 0
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                self.non_json_stdout.append(line)
                continue
            self._inbox.put(msg)
        self._inbox.put(None)  # EOF marker

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def send(self, msg: Message) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: Message | None = None) -> int:
        self._next_id += 1
        msg: Message = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        return self._next_id

    def notify(self, method: str, params: Message | None = None) -> None:
        msg: Message = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)

    def wait_for(self, match: Callable[[Message], bool], timeout: float) -> Message | None:
        """First message (earlier-read ones included) matching ``match``, or None at the deadline.

        Messages that do not match stay queued for later waits.
        """
        for i, msg in enumerate(self._unclaimed):
            if match(msg):
                return self._unclaimed.pop(i)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                msg = self._inbox.get(timeout=remaining)
            except queue.Empty:
                break
            if msg is None:
                self._inbox.put(None)  # keep the EOF visible to later waits
                raise AssertionError(f"server closed stdout; stderr: {self.stderr_text()}")
            if match(msg):
                return msg
            self._unclaimed.append(msg)
        return None

    def response(self, request_id: int, timeout: float = 10.0) -> Message:
        msg = self.wait_for(lambda m: m.get("id") == request_id and "method" not in m, timeout)
        assert msg is not None, f"no response to request {request_id} within {timeout}s"
        return msg

    def call(self, method: str, params: Message | None = None, timeout: float = 10.0) -> Message:
        return self.response(self.request(method, params), timeout)

    def server_request(self, method: str, timeout: float = 10.0) -> Message:
        """The next server-to-client request ``method`` (its ``id`` is the server's own)."""
        msg = self.wait_for(lambda m: m.get("method") == method and "id" in m, timeout)
        assert msg is not None, f"no {method} request from the server within {timeout}s"
        return msg

    def reply(self, request: Message, result: Message) -> None:
        """Answer a server-to-client request with ``result``."""
        self.send({"jsonrpc": "2.0", "id": request["id"], "result": result})

    def take_unclaimed(self, match: Callable[[Message], bool]) -> list[Message]:
        taken = [m for m in self._unclaimed if match(m)]
        self._unclaimed = [m for m in self._unclaimed if not match(m)]
        return taken

    def initialize(self, capabilities: Message | None = None) -> Message:
        resp = self.call(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": capabilities or {},
                "clientInfo": {"name": "troupe-tests", "version": "0"},
            },
            timeout=STARTUP_TIMEOUT,
        )
        self.notify("notifications/initialized")
        return resp

    def stderr_text(self) -> str:
        return b"".join(self.stderr_lines).decode(errors="replace")

    def close_and_wait(self, timeout: float = 5.0) -> int:
        """Close stdin and return the exit code; fail if the process outlives ``timeout``."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server still running {timeout}s after stdin closed") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess()
    try:
        yield srv
    finally:
        srv.kill()


def finish(srv: ServerProcess) -> None:
    """End a session: stdin closed, the process exits 0 promptly, stdout held only JSON."""
    # ~0.2 s on a quiet machine; the bound is for a loaded CI machine, and a server that never exits fails it.
    assert srv.close_and_wait(timeout=15.0) == 0, srv.stderr_text()
    assert srv.non_json_stdout == [], "stdout must carry protocol messages only"


def tool_call(name: str, arguments: Message, meta: Message | None = None) -> Message:
    params: Message = {"name": name, "arguments": arguments}
    if meta is not None:
        params["_meta"] = meta
    return params


def text_of(result: Message) -> str:
    (block,) = result["content"]
    assert block["type"] == "text"
    return block["text"]


def is_progress(token: str) -> Callable[[Message], bool]:
    return lambda m: m.get("method") == "notifications/progress" and m["params"].get("progressToken") == token


@pytest.mark.timeout(60)
def test_initialize_and_list_tools(server: ServerProcess) -> None:
    init = server.initialize()
    assert "error" not in init, init
    assert init["result"]["protocolVersion"] == PROTOCOL_VERSION
    assert init["result"]["serverInfo"]["name"] == "troupe-example"
    assert "tools" in init["result"]["capabilities"]

    tools = {t["name"]: t for t in server.call("tools/list")["result"]["tools"]}
    assert sorted(tools) == EXAMPLE_TOOLS

    def params_of(name: str) -> tuple[dict[str, str], list[str]]:
        schema = tools[name]["inputSchema"]
        assert schema["type"] == "object"
        return {k: v["type"] for k, v in schema["properties"].items()}, sorted(schema.get("required", []))

    assert params_of("echo") == ({"text": "string"}, ["text"])
    assert params_of("add") == ({"a": "integer", "b": "integer"}, ["a", "b"])
    # The Context parameter is injected by the SDK and must not leak into the schema.
    assert params_of("sleep") == ({"seconds": "number"}, ["seconds"])
    assert params_of("fail") == ({"message": "string"}, ["message"])
    # Resolver-filled parameters (the roots / sampling answers) are not in the schema either.
    assert params_of("list_roots") == ({}, [])
    assert params_of("ask_llm") == ({"prompt": "string"}, ["prompt"])
    finish(server)


@pytest.mark.timeout(60)
def test_echo_and_add(server: ServerProcess) -> None:
    server.initialize()

    echo = server.call("tools/call", tool_call("echo", {"text": "hello, troupe ✓"}))["result"]
    assert echo["isError"] is False
    assert text_of(echo) == "hello, troupe ✓"

    add = server.call("tools/call", tool_call("add", {"a": 2, "b": 3}))["result"]
    assert add["isError"] is False
    assert text_of(add) == "5"
    assert add["structuredContent"] == {"result": 5}
    finish(server)


@pytest.mark.timeout(60)
def test_fail_returns_error_result(server: ServerProcess) -> None:
    server.initialize()
    resp = server.call("tools/call", tool_call("fail", {"message": "boom"}))
    # A tool failure is a successful JSON-RPC response carrying isError, not a JSON-RPC error.
    assert "error" not in resp, resp
    assert resp["result"]["isError"] is True
    assert text_of(resp["result"]) == "Error executing tool fail: boom"
    # The server survives the failure.
    assert server.call("ping")["result"] == {}
    finish(server)


@pytest.mark.timeout(60)
def test_sleep_reports_progress_before_result(server: ServerProcess) -> None:
    server.initialize()
    started = time.monotonic()
    rid = server.request("tools/call", tool_call("sleep", {"seconds": 2.5}, meta={"progressToken": "tok-sleep"}))
    resp = server.response(rid, timeout=15.0)
    elapsed = time.monotonic() - started

    assert "error" not in resp, resp
    assert resp["result"]["isError"] is False
    assert text_of(resp["result"]) == "slept 2.5s"
    assert elapsed >= 2.5

    # wait_for leaves skipped messages in order, so these all arrived before the result.
    progress = [m["params"] for m in server.take_unclaimed(is_progress("tok-sleep"))]
    assert len(progress) >= 2, progress
    values = [p["progress"] for p in progress]
    assert values == sorted(set(values)), f"progress must strictly increase: {values}"
    assert all(p["total"] == 2.5 for p in progress)
    assert values[-1] == 2.5
    finish(server)


@pytest.mark.timeout(60)
def test_sleep_cancelled_stops_early(server: ServerProcess) -> None:
    server.initialize()
    started = time.monotonic()
    rid = server.request("tools/call", tool_call("sleep", {"seconds": 30}, meta={"progressToken": "tok-cancel"}))

    first = server.wait_for(is_progress("tok-cancel"), timeout=10.0)
    assert first is not None, "no progress notification before cancelling"
    server.notify("notifications/cancelled", {"requestId": rid, "reason": "test cancels"})

    # Still responsive right after the cancel.
    assert server.call("ping", timeout=5.0)["result"] == {}

    # The sleep has stopped: the server counted it cancelled (poll until it has).
    deadline = time.monotonic() + 10.0
    while text_of(server.call("tools/call", tool_call("cancelled_sleeps", {}))["result"]) != "1":
        assert time.monotonic() < deadline, "the server never saw the cancellation"
    assert server.wait_for(lambda m: m.get("id") == rid, timeout=0.0) is None, "a cancelled request was answered"

    # Still serving other calls afterwards.
    echo = server.call("tools/call", tool_call("echo", {"text": "after cancel"}))["result"]
    assert text_of(echo) == "after cancel"
    finish(server)
    assert time.monotonic() - started < 15.0


CLIENT_CAPABILITIES: Message = {"roots": {"listChanged": False}, "sampling": {}}


@pytest.mark.timeout(60)
def test_list_roots_asks_the_client(server: ServerProcess) -> None:
    server.initialize(CLIENT_CAPABILITIES)
    rid = server.request("tools/call", tool_call("list_roots", {}))

    req = server.server_request("roots/list")
    assert req.get("params") in (None, {}), req
    server.reply(req, {"roots": [{"uri": "file:///tmp/alpha", "name": "alpha"}, {"uri": "file:///tmp/beta"}]})

    resp = server.response(rid)
    assert "error" not in resp, resp
    assert resp["result"]["isError"] is False
    assert text_of(resp["result"]).split("\n") == ["file:///tmp/alpha", "file:///tmp/beta"]
    finish(server)


@pytest.mark.timeout(60)
def test_ask_llm_samples_the_client(server: ServerProcess) -> None:
    server.initialize(CLIENT_CAPABILITIES)
    rid = server.request("tools/call", tool_call("ask_llm", {"prompt": "what is six times seven?"}))

    req = server.server_request("sampling/createMessage")
    assert req["params"]["messages"] == [
        {"role": "user", "content": {"type": "text", "text": "what is six times seven?"}},
    ]
    assert req["params"]["maxTokens"] == 100
    server.reply(
        req,
        {"role": "assistant", "content": {"type": "text", "text": "42"}, "model": "test", "stopReason": "endTurn"},
    )

    resp = server.response(rid)
    assert "error" not in resp, resp
    assert resp["result"]["isError"] is False
    assert text_of(resp["result"]) == "42"
    finish(server)


@pytest.mark.timeout(60)
def test_client_requests_need_declared_capabilities(server: ServerProcess) -> None:
    server.initialize()  # declares neither roots nor sampling
    for name, arguments, missing in [("list_roots", {}, "roots"), ("ask_llm", {"prompt": "hi"}, "sampling")]:
        resp = server.call("tools/call", tool_call(name, arguments))
        # A JSON-RPC error (missing required client capability), not an isError result.
        assert resp["error"]["code"] == -32021, resp
        assert resp["error"]["data"] == {"requiredCapabilities": {missing: {}}}
    # No server-to-client request was sent.
    assert server.take_unclaimed(lambda m: "method" in m and "id" in m) == []
    finish(server)
