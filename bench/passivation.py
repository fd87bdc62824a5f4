"""Measurement 9, passivation: what an idle passivated session costs, and how long one takes to come back.

1. A daemon with an empty store and the plain test server configured: its VmRSS is the baseline.
2. The store is filled with N passivated session records (as a daemon that passivated them and
   then restarted leaves it: legacy era, the initialize kept, resume tokens known to the bench) and
   a daemon is started on it with ``--orphan-grace 600`` (so each waits that long for its client).
   Once ``stats`` reports N passivated, its VmRSS minus the baseline, over N, is the daemon's bytes
   per passivated session; the SQLite file (with its WAL) over N is the store's.
3. M of them are attached by one client and sent ``ping`` each, one after the other: the time from
   the request to its answer is the reactivation time (a new server process started, the legacy
   handshake replayed to it, then the ping), reported as p50/p99.

Sizes: N = 100,000 and M = 100 (quick: 10,000 and 20). The target: 100,000 passivated sessions in
under 1 GB of daemon RSS plus store.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT, start_daemon, steady_rss, summary, wait_for
from mcp_troupe.actors.core.records import RECORD_VERSION, SessionRecord, encode_record, token_digest
from mcp_troupe.transport.client import Client
from mcp_troupe.transport.store.sqlite import STORE_FILE, SqliteStore

PLAIN_SERVER = ROOT / "tests" / "programs" / "plain_server.py"
CONFIG = f'[servers.plain]\ncommand = ["{PYTHON}", "{PLAIN_SERVER}"]\n'
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}},
}


def _record(sid: str, token: str) -> SessionRecord:
    return SessionRecord(
        sid=sid,
        server="plain",
        state="passivated",
        era="legacy",
        protocol_version="2025-11-25",
        initialize=INITIALIZE,
        client_info={"name": "bench", "version": "1"},
        client_capabilities={},
        server_info={"name": "flood", "version": "1"},
        server_capabilities={"tools": {}, "logging": {}},
        pid=None,
        adapter_id=None,
        token_sha256=token_digest(token.encode()),
        owner_key="",
        client_label="bench",
        env_names=(),
        created_at=time.time(),
    )


def seed(state_dir: Path, count: int) -> dict[str, str]:
    """Write ``count`` passivated records into ``state_dir``'s store; their resume tokens by session id."""
    tokens = {secrets.token_urlsafe(16): secrets.token_urlsafe(16) for _ in range(count)}
    store = SqliteStore(state_dir / STORE_FILE)
    try:
        rows = [(sid, RECORD_VERSION, encode_record(_record(sid, token))) for sid, token in tokens.items()]
        for start in range(0, len(rows), 10_000):
            store.write(rows[start : start + 10_000])
    finally:
        store.close()
    return tokens


def _store_bytes(state_dir: Path) -> int:
    return sum(p.stat().st_size for p in state_dir.glob(f"{STORE_FILE}*"))


def run(quick: bool) -> dict[str, Any]:
    count, wanted = (10_000, 20) if quick else (100_000, 100)
    with tempfile.TemporaryDirectory(prefix="trb-state-") as tmp:
        empty, full = Path(tmp) / "empty", Path(tmp) / "full"
        empty.mkdir(mode=0o700)
        full.mkdir(mode=0o700)
        args = ["--orphan-grace", "600", "--max-passivated", str(count)]
        base = start_daemon([*args, "--state-dir", str(empty)], config=CONFIG, servers=1)
        try:
            time.sleep(0.5)
            base_rss = steady_rss(base.pid)
        finally:
            base.stop()
        tokens = seed(full, count)
        store_bytes = _store_bytes(full)
        began = time.perf_counter()
        daemon = start_daemon([*args, "--state-dir", str(full)], config=CONFIG, servers=1)
        try:
            with Client(daemon.front, timeout=60) as client:
                wait_for(
                    lambda: client.control("stats")["passivation"]["passivated"] == count,
                    120,
                    "every stored session passivated",
                    0.05,
                )
                loaded = time.perf_counter() - began
                time.sleep(0.5)
                held_rss = steady_rss(daemon.pid)
                times = []
                for sid in list(tokens)[:wanted]:
                    session = client.attach(sid, tokens[sid])
                    t0 = time.perf_counter()
                    if session.request("ping", timeout=30) != {}:
                        raise RuntimeError(f"session {sid}: ping answered wrongly")
                    times.append(time.perf_counter() - t0)
                stats = client.control("stats")["passivation"]
        finally:
            daemon.stop()
    if stats["reactivations"] != wanted:
        raise RuntimeError(f"{stats['reactivations']} reactivations counted, {wanted} expected")
    daemon_per = (held_rss - base_rss) / count
    return {
        "what": "passivated sessions restored from the store: daemon RSS and store bytes per session; reactivation "
        "(attach, then ping: a new server process and the handshake replayed) one at a time",
        "sessions": count,
        "reactivated": wanted,
        "rss_baseline_mib": round(base_rss / 2**20, 1),
        "rss_passivated_mib": round(held_rss / 2**20, 1),
        "daemon_bytes_per_passivated_session": round(daemon_per),
        "store_bytes_per_session": round(store_bytes / count),
        "bytes_per_passivated_session": round(daemon_per + store_bytes / count),
        "total_mib_at_100k": round((base_rss + 100_000 * (daemon_per + store_bytes / count)) / 2**20, 1),
        "start_with_store_s": round(loaded, 2),
        "reactivation_ms": summary(times, 1000.0),
    }
