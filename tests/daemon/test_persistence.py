"""The session store across processes: what a running daemon writes, and what the next one makes of it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon, finish, start_daemon, wait_for

from mcp_troupe.actors.core.records import RECORD_VERSION
from mcp_troupe.transport.client import Client, FrameRefused

STORE = "sessions.sqlite3"


def store_path(daemon: RunningDaemon) -> Path:
    return Path(daemon.env["TROUPE_STATE_DIR"]) / STORE


def stored(daemon: RunningDaemon) -> dict[str, tuple[int, bytes]]:
    path = store_path(daemon)
    if not path.exists():
        return {}
    with sqlite3.connect(path) as db:
        return {
            sid: (version, bytes(body)) for sid, version, body in db.execute("SELECT sid, version, body FROM sessions")
        }


def pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    return alive


def test_active_sessions_are_stored_with_their_handshake_and_a_closed_one_is_removed() -> None:
    daemon = start_daemon()
    with daemon.client() as client:
        sessions = [client.open("example") for _ in range(3)]
        for session in sessions:
            session.initialize(client_info={"name": "persist-test", "version": "1"})
        wait_for(lambda: len(stored(daemon)) == 3, 10, "three records in the store")
        rows = stored(daemon)
        raw = store_path(daemon).read_bytes()
        for session in sessions:
            version, body = rows[session.sid]
            record = json.loads(body)
            assert version == RECORD_VERSION
            assert record["server"] == "example" and record["state"] == "active"
            assert record["era"] == "legacy" and record["initialize"]["method"] == "initialize"
            assert record["client_info"] == {"name": "persist-test", "version": "1"}
            assert record["server_info"]["name"] and isinstance(record["pid"], int)
            assert record["token_sha256"] == hashlib.sha256(session.token.encode()).hexdigest()
            assert session.token.encode() not in raw and session.token.encode() not in body
        sessions[0].close()
        wait_for(lambda: set(stored(daemon)) == {s.sid for s in sessions[1:]}, 10, "the closed session's record gone")
        assert client.control("stats")["store"]["written"] >= 4
    assert daemon.stop() == 0
    assert store_path(daemon).exists() and stored(daemon) == {}, "a clean stop closes every session: none stays stored"
    shutil.rmtree(daemon.runtime_dir, ignore_errors=True)


def test_without_orphan_grace_the_next_daemon_reports_lost_sessions_and_skips_bad_records() -> None:
    first = start_daemon(["--orphan-grace", "0"])  # the adapters stop their servers with the daemon
    with first.client() as client:
        sessions = [client.open("example") for _ in range(2)]
        for session in sessions:
            session.initialize()
        wait_for(lambda: len(stored(first)) == 2, 10, "two records in the store")
        pids = [json.loads(body)["pid"] for _, body in stored(first).values()]
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    wait_for(lambda: not pids_alive(pids), 15, "the killed daemon's server processes to exit")
    with sqlite3.connect(store_path(first)) as db:
        db.execute("INSERT INTO sessions VALUES (?, ?, ?)", ("corrupt", RECORD_VERSION, b"{not json"))
        db.execute("INSERT INTO sessions VALUES (?, ?, ?)", ("future", RECORD_VERSION + 1, b"{}"))
        db.execute("INSERT INTO sessions VALUES (?, ?, ?)", ("wrongtypes", RECORD_VERSION, b'{"sid": 7}'))
    state = {"TROUPE_STATE_DIR": first.env["TROUPE_STATE_DIR"]}
    second = start_daemon(["--orphan-grace", "0"], env=state)
    try:
        log = second.log()
        assert "stored session corrupt skipped (removed)" in log
        assert "stored session wrongtypes skipped (removed)" in log
        assert "stored session future skipped (kept for the troupe that wrote it)" in log
        assert "2 stored sessions were lost with the previous daemon" in log
        assert set(stored(second)) == {"future"}
        with second.client() as client:
            for session in sessions:
                with pytest.raises(FrameRefused) as refused:
                    client.attach(session.sid, session.token)
                assert refused.value.code == "unknown_session"
                assert "lost when the daemon restarted" in str(refused.value)
            assert client.control("stats")["store"]["lost_on_restart"] == 2
            fresh = client.open("example")
            fresh.initialize()
            assert fresh.request("tools/call", {"name": "add", "arguments": {"a": 2, "b": 3}})["content"]
    finally:
        finish(second)
        shutil.rmtree(first.runtime_dir, ignore_errors=True)


def test_store_none_keeps_no_file() -> None:
    daemon = start_daemon(["--store", "none"])
    try:
        with daemon.client() as client:
            session = client.open("example")
            session.initialize()
            assert session.request("ping") == {}
            store = client.control("stats")["store"]
            assert store["queued"] == 0 and store["written"] == 0
        assert daemon.stop() == 0
        assert store_path(daemon).parent.is_dir() and not store_path(daemon).exists()
    finally:
        finish(daemon)


def store_child(client: Client) -> dict[str, Any]:
    return next(c for c in client.control("status")["supervisor"]["children"] if c["id"] == "store")


@pytest.mark.timeout(120)
def test_a_crashed_store_writer_is_restarted_and_no_record_is_lost() -> None:
    daemon = start_daemon(["--enable-fault-injection", "--supervisor-intensity", "100"])
    try:
        with daemon.client() as client:
            kept = []
            for cycle in range(1, 4):
                client.control("inject_fault", {"target": "store", "when": "both"})
                session = client.open("example")
                session.initialize()  # Active around the writer's crash: its record must not be lost
                kept.append(session)
                wait_for(lambda c=cycle: store_child(client)["restarts"] >= 2 * c, 20, f"store restarts, cycle {cycle}")
                wait_for(lambda: set(stored(daemon)) == {s.sid for s in kept}, 10, "every active session stored")
            assert client.control("stats")["store"]["dropped"] == 0
    finally:
        finish(daemon)


def test_a_store_fault_is_refused_without_a_store() -> None:
    daemon = start_daemon(["--enable-fault-injection", "--store", "none"])
    try:
        with daemon.client() as client, pytest.raises(FrameRefused) as refused:
            client.control("inject_fault", {"target": "store"})
        assert refused.value.code == "bad_args" and "when the daemon keeps a store" in str(refused.value)
    finally:
        finish(daemon)
