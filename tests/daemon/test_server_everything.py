"""The npm reference server (server-everything, legacy era) behind an adapter: over stdio, and as a remote
server in its Streamable HTTP mode (``url``), reached the same ways."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon, finish, start_daemon, wait_for
from http_support import free_port

from mcp_troupe.transport.client import Session
from mcp_troupe.transport.wire import jsonrpc

CAPABILITIES = {"roots": {"listChanged": True}, "sampling": {}, "elicitation": {}}


@pytest.fixture(scope="module", params=["stdio", "url"])
def everything_daemon(
    request: pytest.FixtureRequest, server_everything: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningDaemon]:
    """server-everything behind troupe over stdio, and in its ``streamableHttp`` mode by its URL."""
    config = tmp_path_factory.mktemp("everything") / "troupe.toml"
    with contextlib.ExitStack() as stack:
        if request.param == "stdio":
            config.write_text(f"[servers.everything]\ncommand = {json.dumps(server_everything)}\n")
        else:
            url = stack.enter_context(everything_over_http(server_everything))
            config.write_text(f'[servers.everything]\nurl = "{url}"\n')
        daemon = start_daemon(["--config", str(config)])
        stack.callback(finish, daemon)
        yield daemon


@contextlib.contextmanager
def everything_over_http(stdio_command: list[str]) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [*stdio_command[:-1], "streamableHttp"],
        env={**os.environ, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _listening(port), 30, "server-everything to serve HTTP")
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def next_request(session: Session, method: str) -> dict[str, Any]:
    """The next server-to-client request of ``method``, skipping notifications."""
    while True:
        msg = session.receive(timeout=15)
        if msg.get("method") == method and "id" in msg:
            return msg


@pytest.mark.timeout(90)
def test_the_client_library_drives_server_everything(everything_daemon: RunningDaemon) -> None:
    with everything_daemon.client() as client:
        session = client.open("everything")
        info = session.initialize(capabilities=CAPABILITIES)
        assert info["serverInfo"]["name"] == "mcp-servers/everything"
        roots = next_request(session, "roots/list")  # it asks by itself after initialized
        session.respond(roots["id"], {"roots": [{"uri": "file:///srv/project", "name": "project"}]})
        tools = {t["name"] for t in session.request("tools/list")["tools"]}
        assert {"trigger-long-running-operation", "trigger-sampling-request", "trigger-elicitation-request"} <= tools

        session.send(
            jsonrpc.request(
                "llm", "tools/call", {"name": "trigger-sampling-request", "arguments": {"prompt": "say hi"}}
            )
        )
        sampling = next_request(session, "sampling/createMessage")
        session.respond(
            sampling["id"],
            {"role": "assistant", "content": {"type": "text", "text": "hi"}, "model": "test", "stopReason": "endTurn"},
        )
        assert "hi" in json.dumps(session.wait_result("llm"))
        session.close()


# -- the official SDK client, through `troupe connect` ------------------------------------------

LONG_STEPS = 3


def sdk_scenario(daemon: RunningDaemon, errlog: Any) -> dict[str, Any]:
    import anyio
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client
    from mcp.types import CreateMessageResult, ElicitResult, ListRootsResult, Root, TextContent

    seen: dict[str, Any] = {"sampling": [], "elicitation": [], "roots": 0, "progress": []}
    troupe = str(Path(sys.executable).parent / "troupe")
    params = StdioServerParameters(command=troupe, args=["connect", "everything", "--endpoint", daemon.front])

    async def sampling(_ctx: Any, request: Any) -> CreateMessageResult:
        seen["sampling"].append(request)
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text="sampled by the test"), model="test"
        )

    async def elicitation(_ctx: Any, request: Any) -> ElicitResult:
        seen["elicitation"].append(request)
        return ElicitResult(action="decline")

    async def roots(_ctx: Any) -> ListRootsResult:
        seen["roots"] += 1
        return ListRootsResult(roots=[Root(uri="file:///srv/project", name="project")])

    async def progress(value: float, total: float | None, _message: str | None) -> None:
        seen["progress"].append((value, total))

    async def run() -> None:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(
                read, write, sampling_callback=sampling, elicitation_callback=elicitation, list_roots_callback=roots
            ) as session,
        ):
            await session.initialize()
            with anyio.fail_after(15):
                while not seen["roots"]:  # the server asks for roots by itself after initialized
                    await anyio.sleep(0.02)
            seen["tools"] = sorted(t.name for t in (await session.list_tools()).tools)
            seen["roots_tool"] = str(await session.call_tool("get-roots-list", {}))
            args = {"duration": 1.5, "steps": LONG_STEPS}
            seen["long"] = await session.call_tool("trigger-long-running-operation", args, progress_callback=progress)
            seen["sampled"] = str(await session.call_tool("trigger-sampling-request", {"prompt": "hello there"}))
            seen["elicited"] = str(await session.call_tool("trigger-elicitation-request", {}))
            started = anyio.Event()

            async def on_first(_v: float, _t: float | None, _m: str | None) -> None:
                started.set()

            async def doomed() -> None:
                await session.call_tool(
                    "trigger-long-running-operation", {"duration": 30, "steps": 30}, progress_callback=on_first
                )

            async with anyio.create_task_group() as group:
                group.start_soon(doomed)
                with anyio.fail_after(15):
                    await started.wait()
                group.cancel_scope.cancel()
            seen["pending_after_cancel"] = await anyio.to_thread.run_sync(lambda: daemon.health()["pending"])

    anyio.run(run)
    return seen


@pytest.mark.timeout(120)
def test_the_official_sdk_client_reaches_server_everything_through_troupe_connect(
    everything_daemon: RunningDaemon, tmp_path: Path
) -> None:
    with (tmp_path / "connect.stderr").open("w+") as errlog:
        seen = sdk_scenario(everything_daemon, errlog)
    assert len(seen["tools"]) == 17, seen["tools"]
    assert "file:///srv/project" in seen["roots_tool"]
    assert [round(v) for v, _ in seen["progress"]] == list(range(1, LONG_STEPS + 1))
    assert not seen["long"].is_error
    [sampling] = seen["sampling"]
    assert sampling.messages[0].content.text.endswith("hello there")
    assert "sampled by the test" in seen["sampled"]
    assert len(seen["elicitation"]) == 1 and "decline" in seen["elicited"]
    assert seen["pending_after_cancel"] == 0 or wait_pending_zero(everything_daemon)


def wait_pending_zero(daemon: RunningDaemon) -> bool:
    wait_for(lambda: daemon.health()["pending"] == 0, 10, "the cancelled request to leave the pending count")
    return True
