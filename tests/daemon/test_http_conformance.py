"""The official MCP conformance suite through troupe's HTTP front, against the same suite run directly.

The server is the official Python SDK's conformance everything-server (``../shared/fixtures``), run
over its own Streamable HTTP, and behind troupe twice: over stdio (HTTP in, ZeroMQ through the daemon,
stdio out) and by its URL as a remote server (HTTP in, ZeroMQ through the daemon, HTTP out). Every
check it passes directly must pass through troupe, both ways, at both eras.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from conftest import Node22, finish, wait_for
from http_support import EVERYTHING_FIXTURE, HttpDaemon, everything_env, free_port, request, start_http_daemon

SUITE_TIMEOUT = 240
"""Seconds one suite run may take: about 25 s (2025-11-25) and 5 s (2026-07-28) on a quiet machine; each
legacy scenario starts a server process of its own, which a loaded machine makes several times slower."""
SUMMARY = re.compile(r"^[✓✗] (?P<scenario>[\w-]+): (?P<passed>\d+) passed, (?P<failed>\d+) failed$", re.MULTILINE)


def run_suite(node22: Node22, url: str, version: str) -> dict[str, tuple[int, int]]:
    """Scenario -> (checks passed, checks failed), from the suite's summary."""
    process = subprocess.Popen(
        [*node22.bin("conformance"), "server", "--url", url, "--suite", "all", "--spec-version", version],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=SUITE_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"the suite did not finish in {SUITE_TIMEOUT}s against {url}:\n{stdout[-4000:]}") from None
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    found = {m["scenario"]: (int(m["passed"]), int(m["failed"])) for m in SUMMARY.finditer(result.stdout)}
    assert found, (
        f"no results from the suite (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}"
    )
    return found


@pytest.fixture(scope="module")
def direct() -> Iterator[str]:
    """The everything-server over its own HTTP."""
    port = free_port()
    env = {**everything_env(), "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys; sys.argv = ['s', '--port', '{port}']; from mcp_everything_server.server import main; main()",
        ],
        env=env,
        cwd=str(EVERYTHING_FIXTURE),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def up() -> bool:
        try:
            return request(port, "GET", "/mcp")[0] > 0
        except OSError:
            return False

    try:
        wait_for(up, 30, "the everything-server to serve HTTP")
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def through(direct: str) -> Iterator[HttpDaemon]:
    # Two settings differ from the defaults, both documented in docs/http.rst ("Conformance"): SSE polling on,
    # which serves test_reconnection's request to close the stream (a stdio server cannot ask it); and every
    # answer as SSE (json_within = 0), since the suite credits "multiple SSE streams" only to SSE answers,
    # while by default troupe sends a fast answer as plain JSON, as the transport also allows.
    remote = f'[servers.remote]\nurl = "{direct}"\n'
    http = start_http_daemon("sse_poll_after = 0.1\njson_within = 0\n", servers=remote, more=1)
    yield http
    finish(http.daemon)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("version", ["2025-11-25", "2026-07-28"])
@pytest.mark.parametrize("behind", ["everything", "remote"], ids=["stdio", "url"])
def test_the_conformance_suite_passes_through_troupe_every_check_it_passes_directly(
    node22: Node22, direct: str, through: HttpDaemon, version: str, behind: str
) -> None:
    expected = run_suite(node22, direct, version)
    try:
        got = run_suite(node22, through.url(behind), version)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n--- the daemon's log (and its HTTP front's):\n{through.daemon.log()[-6000:]}"
        ) from None
    assert sum(p for p, _ in expected.values()) > 0 and set(got) == set(expected)
    worse = {
        name: {"direct": expected[name], "through troupe": got[name]}
        for name in expected
        if got[name][0] < expected[name][0] or got[name][1] > expected[name][1]
    }
    assert not worse, f"scenarios that pass directly but not through troupe: {worse}"
    assert all(failed == 0 for _, failed in got.values()), got
