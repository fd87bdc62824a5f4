"""A server's stderr reaches the log, tagged with its session and rate-limited."""

from __future__ import annotations

import logging
import queue
import sys

import pytest
from conftest import wait_for

from mcp_troupe.transport.adapter.server_process import STDERR_LINES_PER_SECOND, ServerProcess

CHATTY = "import sys\nfor i in range(200): print(f'line {i}', file=sys.stderr)\nsys.stderr.flush()\n"


@pytest.mark.timeout(30)
def test_stderr_lines_are_tagged_and_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    events: queue.SimpleQueue[tuple] = queue.SimpleQueue()
    caplog.set_level(logging.INFO, logger="troupe.server")
    process = ServerProcess("sid-chatty", [sys.executable, "-c", CHATTY], events.put, stop_timeout=0.5)
    reported = []
    while (event := events.get(timeout=10))[0] != "exited":  # it exits by itself once done writing
        assert event[:2] == ("stderr", "sid-chatty")
        reported.append(event[2])
    wait_for(lambda: any("suppressed" in r.getMessage() for r in caplog.records), 10, "the summary line")
    lines = [r.getMessage() for r in caplog.records if r.name == "troupe.server"]
    tagged = [m for m in lines if m.startswith(f"session sid-chatty pid {process.pid}: line ")]
    assert tagged[0].endswith(": line 0")
    assert len(tagged) <= 2 * STDERR_LINES_PER_SECOND  # at most two one-second windows here
    suppressed = sum(int(m.split(": ")[1].split()[0]) for m in lines if "stderr lines suppressed" in m)
    assert len(tagged) + suppressed == 200
    assert reported == [m.split(": ", 1)[1] for m in tagged], "the lines logged are the lines reported, in order"
