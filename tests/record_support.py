"""One stored session record for tests, with the fields a test cares about changed."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mcp_troupe.actors.core.records import SessionRecord, token_digest

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}


def session_record(sid: str = "s1", **changes: Any) -> SessionRecord:
    base = SessionRecord(
        sid=sid,
        server="memory",
        state="active",
        era="legacy",
        protocol_version="2025-06-18",
        initialize=INITIALIZE,
        client_info={"name": "c", "version": "1"},
        client_capabilities={},
        server_info={"name": "s", "version": "2"},
        server_capabilities={"tools": {}},
        pid=1234,
        adapter_id="memory-0",
        token_sha256=token_digest(b"secret"),
        owner_key="",
        client_label="pid 1",
        env_names=("A_TOKEN",),
        created_at=1.5,
    )
    return replace(base, **changes)
