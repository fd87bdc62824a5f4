"""The npm reference server (server-everything, legacy era) behind an adapter."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import RunningDaemon, finish, start_daemon
from transport import jsonrpc
from transport.client import Session

CAPABILITIES = {"roots": {"listChanged": True}, "sampling": {}, "elicitation": {}}


@pytest.fixture(scope="module")
def everything_daemon(
    server_everything: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningDaemon]:
    config = tmp_path_factory.mktemp("everything") / "troupe.toml"
    config.write_text(f"[servers.everything]\ncommand = {json.dumps(server_everything)}\n")
    daemon = start_daemon(["--config", str(config)])
    try:
        yield daemon
    finally:
        finish(daemon)


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
