"""The daemon, its adapter, the example server and clients, each in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from conftest import EXAMPLE_TOOLS, ROOT, RunningDaemon, server_pids, wait_for

from mcp_troupe.transport.client import RequestError
from mcp_troupe.transport.wire import jsonrpc

WORKER = ROOT / "tests" / "programs" / "session_worker.py"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_twenty_sessions_from_four_client_processes(daemon: RunningDaemon) -> None:
    env = {**daemon.env, "PYTHONPATH": str(ROOT)}
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), daemon.front, "5", str(w)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for w in range(1, 5)
    ]
    reports = []
    for proc in workers:
        out, err = proc.communicate(timeout=150)
        assert proc.returncode == 0, err.decode()
        reports.append(json.loads(out))
    sids = [sid for report in reports for sid in report]
    assert len(sids) == len(set(sids)) == 20
    for worker, report in enumerate(reports, start=1):
        for sid, seen in report.items():
            assert seen["server"] == "troupe-example"
            assert seen["tools"] == EXAMPLE_TOOLS
            assert seen["echo"] == f"{worker}-{seen['index']}-{sid}"
            assert seen["add"] == seen["index"] + 1000 * worker
            assert seen["closed"] == "client"
    wait_for(lambda: daemon.health()["sessions"] == 0, 10, "every session to finish")


@pytest.mark.timeout(60)
def test_close_with_a_request_outstanding_answers_it_at_once(daemon: RunningDaemon) -> None:
    with daemon.client() as client:
        session = client.open("example")
        session.initialize()
        session.send(
            jsonrpc.request(
                "slow", "tools/call", {"name": "sleep", "arguments": {"seconds": 30}, "_meta": {"progressToken": "p"}}
            )
        )
        progress = session.receive(timeout=15)  # the server is really sleeping now
        assert progress["method"] == "notifications/progress"
        assert len(server_pids(daemon)) == 1
        started = time.monotonic()
        assert session.close() == "client"  # files the error response that arrives first
        assert time.monotonic() - started < 2.0
        with pytest.raises(RequestError) as info:
            session.wait_result("slow", timeout=0)
        assert info.value.code == jsonrpc.CONNECTION_CLOSED
        assert info.value.data == {"reason": "client", "method": "tools/call"}
    wait_for(lambda: daemon.health()["sessions"] == 0, 10, "the session to be forgotten")
    wait_for(lambda: not server_pids(daemon), 10, "the server process to end")
