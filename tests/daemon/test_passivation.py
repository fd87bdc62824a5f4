"""Passivation across processes: idle sessions leave memory and their server process, and come back by a message."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Any

from conftest import ROOT, RunningDaemon, finish, processes_of, start_daemon, wait_for
from record_support import session_record

from mcp_troupe.actors.core.records import RECORD_VERSION, encode_record, token_digest
from mcp_troupe.transport.client import Client, Session
from mcp_troupe.transport.store.sqlite import STORE_FILE, SqliteStore

PLAIN = f'command = ["{sys.executable}", "{ROOT / "tests" / "programs" / "plain_server.py"}"]'
CONFIG = f"[servers.memory]\n{PLAIN}\n\n[servers.pinned]\n{PLAIN}\npassivate = false\n"


def call(session: Session, tool: str, **arguments: Any) -> str:
    text: str = session.request("tools/call", {"name": tool, "arguments": arguments})["content"][0]["text"]
    return text


def listed(client: Client) -> dict[str, dict[str, Any]]:
    return {s["sid"]: s for s in client.control("sessions.list")["sessions"]}


def passivation(client: Client) -> dict[str, int]:
    stats: dict[str, int] = client.control("stats")["passivation"]
    return stats


def test_idle_sessions_are_passivated_and_a_message_brings_each_back_with_a_new_process(tmp_path: Path) -> None:
    (tmp_path / "troupe.toml").write_text(CONFIG)
    daemon = start_daemon(["--config", str(tmp_path / "troupe.toml"), "--passivate-after", "0.5"], servers=2)
    try:
        with daemon.client() as client:
            sessions = [client.open("memory") for _ in range(5)]
            pinned = client.open("pinned")
            for session in [*sessions, pinned]:
                session.initialize()
                call(session, "remember", text="before")
            pinned_pid = listed(client)[pinned.sid]["pid"]
            wait_for(lambda: passivation(client)["passivated"] == 5, 20, "the five idle sessions passivated")
            shown = listed(client)
            assert {shown[s.sid]["state"] for s in sessions} == {"passivated"}
            assert shown[pinned.sid]["state"] == "active", "its server opted out (passivate = false)"
            wait_for(lambda: len(processes_of(daemon)) == 3, 20, "only the adapters and the pinned server left")
            for session in sessions:  # a new process each: it answers, but holds nothing of the old one
                assert call(session, "echo", text="back") == "back"
                assert call(session, "recall") == ""
            assert passivation(client)["reactivations"] == 5
            assert call(pinned, "recall") == "before" and listed(client)[pinned.sid]["pid"] == pinned_pid
            wait_for(lambda: passivation(client)["passivated"] == 5, 20, "passivated again once idle")
            sessions[0].close()
            assert sessions[0].close_reason == "client"
            assert passivation(client)["passivated"] == 4 and sessions[0].sid not in listed(client)
    finally:
        finish(daemon)


def seed(state_dir: Path, count: int) -> dict[str, str]:
    """``count`` passivated records, as a daemon that passivated them and was restarted leaves its store."""
    tokens = {secrets.token_urlsafe(16): secrets.token_urlsafe(16) for _ in range(count)}
    fields = {"server": "memory", "state": "passivated", "pid": None, "adapter_id": None, "env_names": ()}
    rows = [
        (sid, RECORD_VERSION, encode_record(session_record(sid, token_sha256=token_digest(token.encode()), **fields)))
        for sid, token in tokens.items()
    ]
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = SqliteStore(state_dir / STORE_FILE)
    try:
        store.write(rows)
    finally:
        store.close()
    return tokens


def stored_count(daemon: RunningDaemon) -> int:
    store = SqliteStore(Path(daemon.env["TROUPE_STATE_DIR"]) / STORE_FILE)
    try:
        return sum(1 for _ in store.load())
    finally:
        store.close()


def test_ten_thousand_passivated_sessions_wait_in_the_store_and_a_hundred_come_back_by_a_message(
    tmp_path: Path,
) -> None:
    (tmp_path / "troupe.toml").write_text(CONFIG)
    state = tmp_path / "state"
    tokens = seed(state, 10_000)
    args = ["--config", str(tmp_path / "troupe.toml"), "--orphan-grace", "300"]
    daemon = start_daemon(args, servers=2, env={"TROUPE_STATE_DIR": str(state)})
    try:
        with daemon.client() as client:
            wait_for(lambda: passivation(client)["passivated"] == 10_000, 30, "every stored session passivated")
            chosen = list(tokens)[:100]
            for n, sid in enumerate(chosen):
                session = client.attach(sid, tokens[sid])
                assert call(session, "echo", text=f"back-{n}") == f"back-{n}"
            stats = passivation(client)
            assert stats == {"passivated": 9_900, "passivations": 0, "reactivations": 100}
            active = client.control("sessions.list", {"state": "active"})["sessions"]
            assert {s["sid"] for s in active} == set(chosen)
        assert daemon.stop() == 0
        assert stored_count(daemon) == 0, "a clean stop ends every session, passivated or not"
        wait_for(lambda: not processes_of(daemon), 20, "every adapter and server process to end")
    finally:
        finish(daemon)
