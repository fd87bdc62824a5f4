"""Through troupe as directly: real MCP clients and servers, each compared with what they do without troupe.

Every test runs real processes: the daemon, ``troupe connect`` launched by a
real client (the official Python SDK, the TypeScript SDK, the Inspector CLI)
with the environment that client gives its servers, and real servers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import ROOT, Node22, RunningDaemon, finish, start_daemon, wait_for
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.types import TextContent

from mcp_troupe.transport.client import Client, FrameRefused, SessionClosed
from mcp_troupe.transport.wire import jsonrpc

TROUPE = str(Path(sys.executable).parent / "troupe")
PROGRAMS = ROOT / "tests" / "programs"
PLAIN = [sys.executable, str(PROGRAMS / "plain_server.py")]
INITIALIZE = jsonrpc.request(
    0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
)


EXAMPLE_TABLE = f"[servers.example]\ncommand = {json.dumps([sys.executable, '-m', 'mcp_troupe.examples.server'])}\n"
INSPECTOR_ADD = ["--method", "tools/call", "--tool-name", "add", "--tool-arg", "a=2", "--tool-arg", "b=3"]


def config(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / f"troupe-{time.monotonic_ns()}.toml"
    path.write_text(text)
    return ["--config", str(path)]


def plain_table(name: str = "plain", extra: str = "") -> str:
    return f"[servers.{name}]\ncommand = {json.dumps(PLAIN)}\n{extra}\n"


class Pipe:
    """A raw MCP client on a server command's stdio: one JSON object a line each way."""

    def __init__(self, command: list[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT
        )

    def send(self, *messages: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in messages))
        self.process.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the command ended: {self.stderr()}"
        return json.loads(line)

    def response(self, request_id: Any) -> dict[str, Any]:
        while True:
            msg = self.read()
            if msg.get("id") == request_id and "method" not in msg:
                return msg

    def stderr(self) -> str:
        self.close()
        assert self.process.stderr is not None
        return self.process.stderr.read().decode(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def minimal_env(home: str) -> dict[str, str]:
    """What MCP clients give a server command: HOME, PATH, and little else (no XDG_RUNTIME_DIR, no TROUPE_*)."""
    return {"HOME": home, "PATH": os.environ["PATH"], "USER": os.environ.get("USER", "root")}


# -- 1. finding the daemon from a client's minimal environment --------------------------------


@contextmanager
def run_user_dir() -> Iterator[Path]:
    """``/run/user/<uid>``, made (and removed after) if this machine has none: where a desktop session's
    XDG_RUNTIME_DIR points."""
    path = Path(f"/run/user/{os.getuid()}")
    made = not path.exists()
    if made:
        path.mkdir(mode=0o700, parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path / "troupe", ignore_errors=True)
        if made:
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def located_daemon(kind: str, tmp_path: Path) -> Iterator[tuple[RunningDaemon, list[str], str]]:
    """A daemon started as ``kind`` says, the ``troupe connect`` arguments a user writes for it (as README
    shows), and the HOME its clients have."""
    if kind == "desktop":  # XDG_RUNTIME_DIR=/run/user/<uid>; no pointer file: the /run/user rule alone
        with run_user_dir() as run_user:
            daemon = start_daemon(
                config(tmp_path, f"[daemon]\ndiscoverable = false\n{EXAMPLE_TABLE}"),
                env={"TROUPE_RUNTIME_DIR": "", "XDG_RUNTIME_DIR": str(run_user)},
                front=f"ipc://{run_user}/troupe/front.sock",
            )
            try:
                yield daemon, [], str(tmp_path)
            finally:
                finish(daemon)
    elif kind == "xdg-elsewhere":  # an XDG_RUNTIME_DIR a client cannot guess: the pointer file finds it
        xdg = tmp_path / "xdg"
        xdg.mkdir(mode=0o700)
        daemon = start_daemon(env={"TROUPE_RUNTIME_DIR": "", "XDG_RUNTIME_DIR": str(xdg)}, front=None, ready=False)
        daemon.front_endpoint = f"ipc://{xdg}/troupe/front.sock"
        wait_for(lambda: Path(daemon.front_endpoint[6:]).exists(), 30, "the daemon to serve")  # type: ignore[index]
        try:
            yield daemon, [], daemon.env["HOME"]
        finally:
            finish(daemon)
    else:  # TROUPE_RUNTIME_DIR: told in the command, as README's snippet shows
        daemon = start_daemon()
        try:
            yield daemon, ["--runtime-dir", str(daemon.runtime_dir)], str(tmp_path)
        finally:
            finish(daemon)


async def _python_sdk_add(args: list[str]) -> str:
    parameters = StdioServerParameters(command=TROUPE, args=["connect", "example", *args])  # no env: the default
    async with stdio_client(parameters) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        result = await session.call_tool("add", {"a": 2, "b": 3})
        content = result.content[0]
        assert isinstance(content, TextContent)
        return content.text


@pytest.mark.slow
@pytest.mark.usefixtures("per_user_places")
@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", ["desktop", "xdg-elsewhere", "troupe-runtime-dir"])
def test_real_clients_find_the_daemon_from_their_minimal_environment(
    kind: str, tmp_path: Path, node22: Node22, monkeypatch: pytest.MonkeyPatch
) -> None:
    with located_daemon(kind, tmp_path) as (_daemon, args, home):
        for name in [n for n in os.environ if n.startswith("TROUPE_") or n.startswith("XDG_")]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("HOME", home)
        assert anyio.run(_python_sdk_add, args) == "5", "the official Python SDK's stdio_client"
        node_env = minimal_env(home)
        ts = subprocess.run(
            [
                str(node22.node),
                str(PROGRAMS / "ts_client.mjs"),
                str(node22.modules),
                TROUPE,
                "connect",
                "example",
                *args,
            ],
            env=node_env,
            capture_output=True,
            timeout=90,
        )
        assert ts.returncode == 0, ts.stderr.decode()[-2000:]
        assert json.loads(ts.stdout) == {"text": "5", "server": "troupe-example"}, "the TypeScript SDK"
        inspector = subprocess.run(
            [*node22.bin("mcp-inspector"), "--cli", TROUPE, "connect", "example", *args, *INSPECTOR_ADD],
            env=node_env,
            capture_output=True,
            timeout=90,
        )
        assert inspector.returncode == 0, inspector.stderr.decode()[-2000:]
        assert json.loads(inspector.stdout)["content"][0]["text"] == "5", "the Inspector CLI"


@pytest.mark.usefixtures("per_user_places")
@pytest.mark.timeout(60)
def test_no_daemon_anywhere_names_every_place_looked_at_and_what_to_pass(tmp_path: Path) -> None:
    env = {**minimal_env(str(tmp_path)), "TMPDIR": str(tmp_path)}  # the temp-dir fallback of this test alone
    began = time.monotonic()
    result = subprocess.run([TROUPE, "connect", "example"], env=env, input=b"", capture_output=True, timeout=30)
    assert result.returncode == 3 and time.monotonic() - began < 10
    stderr = result.stderr.decode()
    assert "looked at" in stderr and "daemon.json" in stderr, stderr
    assert "--endpoint" in stderr and "--runtime-dir" in stderr, stderr


# -- 2. a fast client pipelines the handshake ---------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("server", ["example", "everything"])
def test_a_pipelined_handshake_and_call_get_their_result(server: str, tmp_path: Path, request: Any) -> None:
    args = []
    if server == "everything":
        command = request.getfixturevalue("server_everything")
        args = config(tmp_path, f"[servers.everything]\ncommand = {json.dumps(command)}\n")
    daemon = start_daemon(args)
    try:
        pipe = Pipe([TROUPE, "connect", server, "--endpoint", daemon.front])
        call = (
            {"name": "add", "arguments": {"a": 2, "b": 3}}
            if server == "example"
            else {
                "name": "echo",
                "arguments": {"message": "pipelined"},
            }
        )
        pipe.send(INITIALIZE, jsonrpc.notification("notifications/initialized"), jsonrpc.request(1, "tools/call", call))
        assert "result" in pipe.response(0)
        result = pipe.response(1)
        assert "result" in result, result
        text = result["result"]["content"][0]["text"]
        assert text == ("5" if server == "example" else "Echo: pipelined"), text
        with daemon.client() as client:
            listing = client.control("sessions.list")["sessions"]
        assert [s["state"] for s in listing] == ["active"]
        pipe.close()
    finally:
        finish(daemon)


# -- 3. large results ---------------------------------------------------------------------------


def filesystem_daemon(node22: Node22, folder: Path, tmp_path: Path, daemon_table: str = "") -> RunningDaemon:
    command = [*node22.bin("mcp-server-filesystem"), str(folder)]
    return start_daemon(
        config(tmp_path, f"[daemon]\n{daemon_table}\n[servers.files]\ncommand = {json.dumps(command)}\n")
    )


def read_file_tool(session: Any) -> str:
    names = {tool["name"] for tool in session.request("tools/list")["tools"]}
    return "read_text_file" if "read_text_file" in names else "read_file"


@pytest.mark.timeout(120)
def test_a_large_tool_result_passes_and_one_past_the_limit_is_answered_at_once(node22: Node22, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    text = "troupe carries large results.\n" * (3 * 1024 * 1024 // 30)  # ~3 MiB: ~6 MiB of result (text twice)
    (folder / "big.txt").write_text(text)
    daemon = filesystem_daemon(node22, folder, tmp_path)
    try:
        with daemon.client(timeout=60) as client:
            session = client.open("files")
            session.initialize()
            result = session.request(
                "tools/call", {"name": read_file_tool(session), "arguments": {"path": str(folder / "big.txt")}}
            )
            assert result["content"][0]["text"] == text
        with daemon.client() as client:
            assert not client.control("stats")["frames"]["dropped"]
    finally:
        finish(daemon)
    limit = 1024 * 1024
    daemon = filesystem_daemon(node22, folder, tmp_path, f"max_server_frame_bytes = {limit}")
    try:
        with daemon.client(timeout=60) as client:
            session = client.open("files")
            session.initialize()
            tool = read_file_tool(session)
            began = time.monotonic()
            with pytest.raises(Exception) as info:
                session.request(
                    "tools/call", {"name": tool, "arguments": {"path": str(folder / "big.txt")}}, timeout=30
                )
            assert time.monotonic() - began < 10, "answered at once, not after a timeout"
            error = info.value
            assert getattr(error, "code", None) == jsonrpc.MESSAGE_TOO_LARGE, error
            assert error.data["limit"] == limit and error.data["size"] > limit  # type: ignore[attr-defined]
            assert "max_server_frame_bytes" in error.message  # type: ignore[attr-defined]
            assert session.request("tools/list")["tools"], "the session goes on"
    finally:
        finish(daemon)


@pytest.mark.timeout(60)
def test_a_client_response_past_the_limit_is_answered_to_the_server_at_once() -> None:
    """The other direction: a client's response to a request of the server, too large for the daemon, reaches
    the server as an error, so that its tool call ends now and not never."""
    daemon = start_daemon()
    try:
        pipe = Pipe([TROUPE, "connect", "example", "--endpoint", daemon.front])
        initialize = jsonrpc.request(
            0,
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {"roots": {}},
                "clientInfo": {"name": "t", "version": "1"},
            },
        )
        pipe.send(initialize, jsonrpc.notification("notifications/initialized"))
        pipe.response(0)
        pipe.send(jsonrpc.request(1, "tools/call", {"name": "list_roots", "arguments": {}}))
        ask = pipe.read()
        assert ask["method"] == "roots/list", ask
        began = time.monotonic()
        roots = [{"uri": f"file:///{'r' * 1000}/{i}"} for i in range(5000)]  # ~5 MiB: over max_frame_bytes
        pipe.send(jsonrpc.result(ask["id"], {"roots": roots}))
        answer = pipe.response(1)
        assert time.monotonic() - began < 10
        text = json.dumps(answer)
        assert "the client's response was" in text and "never reached this server" in text, text[:2000]
        pipe.send(jsonrpc.request(2, "tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}}))
        assert pipe.response(2)["result"]["content"][0]["text"] == "3", "the session goes on"
        pipe.close()
    finally:
        finish(daemon)


@pytest.mark.timeout(60)
def test_a_client_line_past_connects_limit_is_answered_by_its_id_wherever_it_is(daemon: RunningDaemon) -> None:
    pipe = Pipe([TROUPE, "connect", "example", "--endpoint", daemon.front, "--max-line-bytes", "100000"])
    pipe.send(INITIALIZE, jsonrpc.notification("notifications/initialized"))
    pipe.response(0)
    long = {"params": {"name": "echo", "arguments": {"text": "x" * 200_000}}, "jsonrpc": "2.0"}
    pipe.send({**long, "method": "tools/call", "id": "late"})  # the id last, as some encoders write it
    error = pipe.response("late")["error"]
    assert error["code"] == jsonrpc.MESSAGE_TOO_LARGE and error["data"]["limit"] == 100_000, error
    assert error["data"]["size"] > 200_000
    pipe.send(jsonrpc.request(1, "tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}}))
    assert pipe.response(1)["result"]["content"][0]["text"] == "3", "the session goes on"
    pipe.close()


# -- 4. idle sessions of a client that is there -------------------------------------------------


@pytest.mark.timeout(120)
def test_an_attached_idle_session_stays_and_a_killed_clients_session_goes(tmp_path: Path) -> None:
    daemon = start_daemon(["--idle-timeout", "1"])
    try:
        pipe = Pipe([TROUPE, "connect", "example", "--endpoint", daemon.front])
        pipe.send(INITIALIZE)
        pipe.response(0)
        pipe.send(jsonrpc.notification("notifications/initialized"))

        def idle_for(seconds: float) -> bool:
            with daemon.client() as client:
                return all(s["idle_s"] >= seconds for s in client.control("sessions.list")["sessions"])

        wait_for(lambda: idle_for(3.0), 30, "the session to be idle three times idle_timeout")
        pipe.send(jsonrpc.request(1, "tools/call", {"name": "add", "arguments": {"a": 1, "b": 1}}))
        assert pipe.response(1)["result"]["content"][0]["text"] == "2", "the attached session still answers"
        pipe.process.send_signal(signal.SIGKILL)
        pipe.process.wait()
        wait_for(lambda: daemon.health()["sessions"] == 0, 10, "the killed client's session to be closed")
        with daemon.client() as client:
            closed = client.control("stats")["sessions"]["closed"]
        assert closed == {"client_gone": 1}, closed
    finally:
        finish(daemon)


# -- 5. defaults that do not change behaviour ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_with_defaults_a_long_silent_call_completes_and_a_fast_client_is_never_refused() -> None:
    daemon = start_daemon()
    try:
        with daemon.client(timeout=120) as client:
            slow = client.open("example")
            slow.initialize()
            slow.send(jsonrpc.request("long", "tools/call", {"name": "sleep", "arguments": {"seconds": 35}}))
            fast = client.open("example")
            fast.initialize()
            for i in range(1000):  # back to back while the other one sleeps
                result = fast.request("tools/call", {"name": "add", "arguments": {"a": i, "b": 1}})
                assert result["content"][0]["text"] == str(i + 1)
            assert slow.wait_result("long", timeout=60)["content"][0]["text"] == "slept 35.0s"
            stats = client.control("stats")
        assert not stats["refused"], stats["refused"]
    finally:
        finish(daemon)


# -- 6. values JSON allows and msgpack does not ---------------------------------------------------


@pytest.mark.timeout(60)
def test_big_integers_and_lone_surrogates_round_trip_as_they_do_directly(tmp_path: Path) -> None:
    arguments = {"big": 2**70, "negative": -(2**100), "text": "a\ud800b", "deep": {"k\udfffey": [2**64]}}
    request = jsonrpc.request(1, "tools/call", {"name": "mirror", "arguments": arguments})
    direct = Pipe(PLAIN)
    direct.send(INITIALIZE, jsonrpc.notification("notifications/initialized"), request)
    expected = direct.response(1)
    direct.close()
    assert expected["result"]["structuredContent"] == arguments
    daemon = start_daemon(config(tmp_path, plain_table()))
    try:
        through = Pipe([TROUPE, "connect", "plain", "--endpoint", daemon.front])
        through.send(INITIALIZE, jsonrpc.notification("notifications/initialized"), request)
        assert through.response(1) == expected
        through.close()
        with daemon.client() as client:
            session = client.open("plain")
            session.initialize()
            assert (
                session.request("tools/call", {"name": "mirror", "arguments": arguments})["structuredContent"]
                == arguments
            )
    finally:
        finish(daemon)


# -- 7. the environment of a session's server -----------------------------------------------------


@pytest.mark.timeout(60)
def test_a_session_brings_only_the_variables_its_server_takes(tmp_path: Path) -> None:
    secret = "s3cr3t-value-never-logged"
    daemon = start_daemon(config(tmp_path, plain_table(extra='pass_env = ["MY_TOKEN"]')))
    try:
        env = {**minimal_env(daemon.env["HOME"]), "MY_TOKEN": secret, "NOT_TAKEN": "x", "TROUPE_MARK": "client"}
        pipe = Pipe([TROUPE, "connect", "plain", "--endpoint", daemon.front], env=env)
        pipe.send(INITIALIZE, jsonrpc.notification("notifications/initialized"))
        pipe.send(
            jsonrpc.request(1, "tools/call", {"name": "environ", "arguments": {"names": ["MY_TOKEN", "NOT_TAKEN"]}})
        )
        seen = pipe.response(1)["result"]["structuredContent"]
        assert seen == {"MY_TOKEN": secret, "NOT_TAKEN": None, "troupe": []}, seen
        pipe.close()
        with daemon.client() as client:
            other = client.open("plain")  # a session that brings nothing: the variable is this session's alone
            other.initialize()
            assert other.request("tools/call", {"name": "environ", "arguments": {"names": ["MY_TOKEN"]}})[
                "structuredContent"
            ] == {"MY_TOKEN": None, "troupe": []}
            with pytest.raises(FrameRefused) as refused:
                client.open("plain", env={"NOT_TAKEN": "x"})
            assert refused.value.code == "forbidden" and "pass_env" in refused.value.message
            assert client.control("servers")["servers"]["plain"] == {"adapters": 1, "pass_env": ["MY_TOKEN"]}
        assert secret not in daemon.log()
    finally:
        finish(daemon)


# -- 8. a server's stderr ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_servers_stderr_reaches_its_session(tmp_path: Path) -> None:
    daemon = start_daemon(config(tmp_path, plain_table()))
    try:
        pipe = Pipe([TROUPE, "connect", "plain", "--endpoint", daemon.front])
        pipe.send(INITIALIZE, jsonrpc.notification("notifications/initialized"))
        pipe.send(jsonrpc.request(1, "tools/call", {"name": "stderr", "arguments": {"text": "debug me, connect"}}))
        assert pipe.response(1)["result"]["content"][0]["text"] == "written"
        with daemon.client() as client:
            session = client.open("plain", stderr=True)
            session.initialize()
            session.request("tools/call", {"name": "stderr", "arguments": {"text": "debug me, library"}})
            wait_for(lambda: (session.request("ping"), "debug me, library" in session.stderr)[1], 10, "the line")
            logs = subprocess.run(
                [TROUPE, "sessions", "logs", session.sid, "--endpoint", daemon.front],
                capture_output=True,
                timeout=30,
            )
            assert logs.returncode == 0 and logs.stdout.decode().splitlines() == ["debug me, library"], logs
        assert "debug me, connect" in pipe.stderr().splitlines(), "troupe connect copies it to its own stderr"
    finally:
        finish(daemon)


# -- 9. an adapter that leaves says so ---------------------------------------------------------------


@pytest.mark.timeout(90)
def test_an_adapter_stopped_with_sigterm_left_and_was_not_lost(tmp_path: Path) -> None:
    daemon = start_daemon(config(tmp_path, "[daemon]\n"), servers=0)
    try:
        adapter = subprocess.Popen(
            [TROUPE, "adapter", "handrun", "--endpoint", daemon.back, "--", *PLAIN],
            env=daemon.env,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: daemon.health()["servers"].get("handrun") == 1, 20, "the adapter to register")
        with daemon.client() as client:
            session = client.open("handrun")
            session.initialize()
            adapter.send_signal(signal.SIGTERM)
            assert adapter.wait(20) == 0
            wait_for(lambda: "handrun" not in daemon.health()["servers"], 5, "the adapter to be gone at once")
            with pytest.raises(SessionClosed):
                session.receive(timeout=10)
            assert session.close_reason == "server_exited"
        log = daemon.log()
        assert "left: stop requested" in log and "lost" not in log, log[-2000:]
    finally:
        finish(daemon)


def test_the_pointer_file_names_the_daemon_while_it_serves_and_goes_with_it(daemon: RunningDaemon) -> None:
    pointer = Path(daemon.env["HOME"]) / ".local" / "state" / "troupe" / "daemon.json"
    record = json.loads(pointer.read_text())
    assert record["front"] == daemon.front and record["pid"] == daemon.process.pid
    assert pointer.stat().st_mode & 0o077 == 0
    with Client(daemon.front) as client:
        assert client.health()["status"] == "serving"
    daemon.stop()
    assert not pointer.exists()
