"""A daemon killed with kill -9 and started again: its sessions carry on with the same server processes.

The adapters outlive the daemon for ``orphan_grace``, register with the next one naming their live
sessions, and the next daemon restores those it stored; a client with ``reconnect`` attaches its
sessions again by itself. Everything runs as users run it: daemons, adapters and servers in their own
processes, the client in this one.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any, TextIO

import anyio
import pytest
from conftest import ROOT, RunningDaemon, finish, processes_of, start_daemon, wait_for
from http_support import answer_of, free_port, front_answers, post_headers, request, start_session, troupe_sid
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.types import TextContent

from mcp_troupe.transport.client import Client, RequestError, Session, SessionClosed
from mcp_troupe.transport.client.library import DAEMON_LOST
from mcp_troupe.transport.wire import jsonrpc

PLAIN_SERVER = ROOT / "tests" / "programs" / "plain_server.py"
SESSIONS = 50
IN_FLIGHT = 5


@contextmanager
def memory_config(tmp_path: Path) -> Iterator[Path]:
    config = tmp_path / "troupe.toml"
    config.write_text(f'[servers.memory]\ncommand = ["{sys.executable}", "{PLAIN_SERVER}"]\n')
    yield config


def stored(daemon: RunningDaemon) -> dict[str, dict[str, object]]:
    path = Path(daemon.env["TROUPE_STATE_DIR"]) / "sessions.sqlite3"
    with sqlite3.connect(path) as db:
        return {sid: json.loads(body) for sid, body in db.execute("SELECT sid, body FROM sessions")}


def recall(session: Session) -> str:
    result = session.request("tools/call", {"name": "recall", "arguments": {}})
    text: str = result["content"][0]["text"]
    return text


def remember(session: Session, text: str) -> None:
    session.request("tools/call", {"name": "remember", "arguments": {"text": text}})


def kill_9(daemon: RunningDaemon) -> None:
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait(10)


@pytest.mark.timeout(180)
def test_sessions_carry_on_with_their_server_processes_after_a_kill_9(tmp_path: Path) -> None:
    with memory_config(tmp_path) as config:
        args = ["--config", str(config), "--orphan-grace", "60", "--request-timeout", "60"]
        first = start_daemon(args)
        client = Client(first.front, timeout=30, reconnect=60)
        sessions = [client.open("memory") for _ in range(SESSIONS)]
        for n, session in enumerate(sessions):
            session.initialize()
            remember(session, f"before-{n}")
        wait_for(lambda: len(stored(first)) == SESSIONS, 15, "every active session stored")
        pids = {sid: record["pid"] for sid, record in stored(first).items()}
        slow = jsonrpc.request("in-flight", "tools/call", {"name": "slow", "arguments": {"seconds": 1}})
        for session in sessions[:IN_FLIGHT]:
            session.send(slow)
        kill_9(first)
        second = start_daemon(args, runtime=first.runtime_dir)
        try:
            for session in sessions[:IN_FLIGHT]:  # each in-flight request: one answer, the error that says why
                with pytest.raises(RequestError) as lost:
                    session.wait_result("in-flight")
                assert lost.value.code == jsonrpc.CONNECTION_CLOSED and lost.value.data["reason"] == DAEMON_LOST
            for n, session in enumerate(sessions):
                assert recall(session) == f"before-{n}", "the server process kept what it was given"
                remember(session, f"after-{n}")
                assert recall(session) == f"before-{n},after-{n}"
            listed = {s["sid"]: s for s in client.control("sessions.list")["sessions"]}
            assert {sid: listed[sid]["pid"] for sid in pids} == pids, "the same server processes"
            assert all(listed[sid]["restored"] for sid in pids)
            store = client.control("stats")["store"]
            assert store["restored"] == SESSIONS and store["restoring"] == 0 and store["lost_on_restart"] == 0
            assert sum(s.late_dropped for s in sessions) <= IN_FLIGHT  # answers that came after the error: dropped
            for session in sessions[:10]:
                session.close()
            gone = {s.sid for s in sessions[:10]}
            wait_for(lambda: not gone & set(stored(second)), 10, "closed sessions removed from the store")
            assert set(stored(second)) == {s.sid for s in sessions[10:]}
            opened = client.open("memory")  # new sessions go to the new daemon's own adapters
            opened.initialize()
            remember(opened, "new")
            assert recall(opened) == "new"
        finally:
            client.close()
            assert second.stop() == 0, second.log()  # the runtime directory (with the store) is read below
        wait_for(lambda: not processes_of(second), 20, "every adapter and server process to end")
        assert stored(second) == {}
        shutil.rmtree(second.runtime_dir, ignore_errors=True)


@pytest.mark.timeout(120)
def test_after_orphan_grace_the_servers_are_stopped_and_the_sessions_reported_lost(tmp_path: Path) -> None:
    with memory_config(tmp_path) as config:
        args = ["--config", str(config), "--orphan-grace", "2"]
        first = start_daemon(args)
        client = Client(first.front, timeout=30, reconnect=30)
        sessions = [client.open("memory") for _ in range(3)]
        for session in sessions:
            session.initialize()
        wait_for(lambda: len(stored(first)) == 3, 15, "every active session stored")
        left = processes_of(first)
        assert len(left) >= 4  # an adapter and three servers
        kill_9(first)
        wait_for(lambda: not processes_of(first), 20, "the orphaned adapter to stop its servers after the grace")
        second = start_daemon(args, runtime=first.runtime_dir)
        try:
            try:
                sessions[0].request("ping")
            except RequestError as exc:  # sent before the client noticed the loss: in flight, answered so
                assert exc.data["reason"] == DAEMON_LOST
            except SessionClosed:
                pass
            for session in sessions:  # the client tried to attach each of them again, and was told each is gone
                assert session.close_reason == DAEMON_LOST
                assert "lost when the daemon restarted" in session.close_message
                assert "orphan_grace" in session.close_message
            with pytest.raises(SessionClosed):
                sessions[1].request("ping")
            assert client.control("stats")["store"]["lost_on_restart"] == 3
            assert stored(second) == {}
            fresh = client.open("memory")
            fresh.initialize()
            assert recall(fresh) == ""
        finally:
            client.close()
            finish(second)


SDK_SESSIONS = 4


@pytest.mark.timeout(120)
def test_official_sdk_clients_through_troupe_connect_carry_on_after_a_kill_9(tmp_path: Path) -> None:
    with memory_config(tmp_path) as config:
        args = ["--config", str(config), "--orphan-grace", "60"]
        daemons = [start_daemon(args)]
        command = [str(Path(sys.executable).parent / "troupe"), "connect", "memory", "--reconnect", "30"]
        params = StdioServerParameters(command=command[0], args=[*command[1:], "--endpoint", daemons[0].front])

        def restart() -> None:
            kill_9(daemons[0])
            daemons.append(start_daemon(args, runtime=daemons[0].runtime_dir))

        async def scenario(errlog: TextIO) -> None:
            async with AsyncExitStack() as stack:
                sessions = []
                for n in range(SDK_SESSIONS):
                    read, write = await stack.enter_async_context(stdio_client(params, errlog=errlog))
                    session = await stack.enter_async_context(ClientSession(read, write))
                    await session.initialize()
                    await session.call_tool("remember", {"text": f"sdk-{n}"})
                    sessions.append(session)
                wait_for(lambda: len(stored(daemons[0])) == SDK_SESSIONS, 15, "every bridge's session stored")
                await anyio.to_thread.run_sync(restart)
                for n, session in enumerate(sessions):  # each bridge takes its session back by itself
                    result = await session.call_tool("recall", {})
                    assert not result.is_error and isinstance(result.content[0], TextContent)
                    assert result.content[0].text == f"sdk-{n}", "the same server process, its memory intact"

        try:
            with (tmp_path / "bridges.stderr").open("w+") as errlog:
                try:
                    anyio.run(scenario, errlog)
                finally:
                    errlog.seek(0)
                    text = errlog.read()
                    print(text)  # shown when the test fails: what each bridge said
                assert "Traceback" not in text and "the daemon took it again" in text
        finally:
            finish(daemons[-1])


HTTP_SESSIONS = 10


def http_call(port: int, session_id: str, msg_id: int, tool: str, **arguments: str) -> tuple[int, dict[str, Any]]:
    body = {"jsonrpc": "2.0", "id": msg_id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}
    status, headers, payload = request(port, "POST", "/mcp/memory", body, post_headers(session_id))
    return status, (answer_of(headers, payload, msg_id) if status == 200 else {"status": status})


def http_text(port: int, session_id: str, msg_id: int, tool: str, **arguments: str) -> str:
    """The tool's text, retried while troupe is coming back (the front not up yet, or the session restoring)."""

    def attempt() -> str | None:
        try:
            status, answer = http_call(port, session_id, msg_id, tool, **arguments)
        except OSError:
            return None  # the new front is not listening yet
        if status == 503:
            return None  # restoring: Retry-After
        assert status == 200, answer
        text: str = answer["result"]["content"][0]["text"]
        return text

    text: str = wait_for(attempt, 30, f"an answer to {tool} through the HTTP front")
    return text


@pytest.mark.timeout(120)
def test_http_sessions_carry_on_through_a_new_front_after_a_kill_9(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "troupe.toml"
    config.write_text(
        f'[http]\naddress = "127.0.0.1:{port}"\n\n[servers.memory]\ncommand = ["{sys.executable}", "{PLAIN_SERVER}"]\n'
    )
    args = ["--config", str(config), "--orphan-grace", "60"]
    first = start_daemon(args)
    wait_for(lambda: front_answers(port), 30, "the HTTP front to serve")
    ids = [start_session(port, "memory") for _ in range(HTTP_SESSIONS)]
    for n, session_id in enumerate(ids):
        assert http_text(port, session_id, 2, "remember", text=f"http-{n}") == "remembered 1"
    wait_for(lambda: len(stored(first)) == HTTP_SESSIONS, 15, "every HTTP session stored")
    kill_9(first)
    second = start_daemon(args, runtime=first.runtime_dir)
    try:
        for n, session_id in enumerate(ids):  # the same Mcp-Session-Id, a new front: the session goes on
            assert http_text(port, session_id, 3, "recall") == f"http-{n}"
        with second.client() as client:
            assert client.control("stats")["store"]["restored"] == HTTP_SESSIONS
        other = start_session(port, "memory")
        forged = f"{troupe_sid(ids[0])}.{troupe_sid(other)}"  # a real session, a nonce that is not its own
        assert http_call(port, forged, 4, "recall")[0] == 404
    finally:
        finish(second)
