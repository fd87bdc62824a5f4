"""Shared helpers of the benchmark harness: statistics, machine description, daemons.

Nothing here imports the daemon's code except ``mcp_troupe.transport.client`` (to ask a
running daemon for ``health``); daemons are always separate processes started
the way a user starts them (``python -m mcp_troupe.actors serve``).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable
SOURCE = Path(os.environ.get("TROUPE_BENCH_SOURCE") or ROOT).resolve()
"""The troupe source tree whose daemon, adapter and client are measured: this checkout, or
another (``TROUPE_BENCH_SOURCE=/path/to/other/checkout``) to compare two versions."""
_SCRIPT = Path(PYTHON).parent / "troupe"
TROUPE = [str(_SCRIPT)] if _SCRIPT.exists() else [PYTHON, "-m", "mcp_troupe.actors"]
"""How a user starts troupe: the ``troupe`` console script of this environment."""


# -- statistics --------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def summary(samples: Sequence[float], scale: float = 1.0, digits: int = 1) -> dict[str, Any]:
    """n, min, p50, p90, p95, p99, max and mean of ``samples`` times ``scale``."""
    values = [s * scale for s in samples]
    return {
        "n": len(values),
        "min": round(min(values), digits),
        "p50": round(percentile(values, 50), digits),
        "p90": round(percentile(values, 90), digits),
        "p95": round(percentile(values, 95), digits),
        "p99": round(percentile(values, 99), digits),
        "max": round(max(values), digits),
        "mean": round(statistics.fmean(values), digits),
    }


def ratio(a: float, b: float, digits: int = 2) -> float | None:
    return round(a / b, digits) if b else None


# -- the machine -------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import msgpack
    import zmq

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1) if mem_kib else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "pyzmq": zmq.pyzmq_version(),
        "libzmq": zmq.zmq_version(),
        "pykka": _version("pykka"),
        "msgpack": ".".join(map(str, msgpack.version)),
        "mcp": _version("mcp"),
        "troupe": _version("mcp-troupe"),
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- processes ---------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """VmRSS of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def steady_rss(pid: int) -> int:
    """VmRSS as the median of three samples 0.1 s apart (one sample can catch a transient)."""
    samples = []
    for _ in range(3):
        samples.append(rss_bytes(pid))
        time.sleep(0.1)
    return int(statistics.median(samples))


def thread_count(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def stop_process(process: subprocess.Popen[Any], timeout: float = 15.0) -> int | None:
    """SIGTERM, wait, SIGKILL: only the process we started, by its pid."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(5)


def bench_env(**extra: str) -> dict[str, str]:
    """The environment of every child process: the repository importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SOURCE), str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def module_process(
    module: str, args: Iterable[str], *, stdin: int | None = None, stdout: Any = None, stderr: Any = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PYTHON, "-m", module, *args],
        cwd=ROOT,
        env=bench_env(),
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
    )


# -- a daemon ----------------------------------------------------------------------


@dataclass
class Daemon:
    """A ``troupe serve`` process in its own runtime directory, plus an optional echo adapter."""

    process: subprocess.Popen[bytes]
    runtime_dir: Path
    started_at: float
    adapter: subprocess.Popen[bytes] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def front(self) -> str:
        return f"ipc://{self.runtime_dir / 'front.sock'}"

    @property
    def back(self) -> str:
        return f"ipc://{self.runtime_dir / 'back.sock'}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        try:
            return (self.runtime_dir / "daemon.log").read_text(errors="replace")
        except OSError:
            return ""

    def health(self, timeout: float = 5.0) -> dict[str, Any]:
        from mcp_troupe.transport.client import Client

        with Client(self.front, timeout=timeout) as client:
            return client.health()

    def stop(self) -> None:
        """SIGTERM the daemon (its sessions close, the echo adapter answers ``exited``), then the adapter."""
        code = stop_process(self.process, timeout=30)
        if self.adapter is not None:
            stop_process(self.adapter)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        if code not in (0, -signal.SIGKILL, None):
            print(f"[bench] daemon exited {code}", file=sys.stderr)


NO_SERVERS_CONFIG = "# no [servers] table: this daemon serves no server of its own\n"
"""A configuration file with no ``[servers]`` table: the daemon serves no server of its own."""


def start_daemon(args: Sequence[str] = (), *, config: str | None = None, wait: bool = True, servers: int = 0) -> Daemon:
    """Start ``troupe serve`` with a private runtime directory and wait until it serves.

    ``config`` is the text of a TOML file (None: the embedded default, which
    serves the example server). ``servers`` is how many adapters must have
    registered before it counts as ready.
    """
    runtime = Path(tempfile.mkdtemp(prefix="trb-", dir="/tmp"))
    cmd = [*TROUPE, "serve", *args]
    if config is not None:
        path = runtime / "troupe.toml"
        path.write_text(config)
        cmd += ["--config", str(path)]
    env = bench_env(TROUPE_RUNTIME_DIR=str(runtime))
    log = (runtime / "daemon.log").open("wb")
    started = time.perf_counter()
    process = subprocess.Popen(cmd, cwd=SOURCE, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    daemon = Daemon(process, runtime, started)
    if wait:
        try:
            wait_serving(daemon, servers)
        except BaseException:
            daemon.stop()
            raise
    return daemon


def wait_serving(daemon: Daemon, servers: int = 0, timeout: float = 30.0, interval: float = 0.002) -> float:
    """Poll until ``health`` answers (with ``servers`` adapters); returns seconds since launch."""
    from mcp_troupe.transport.client import DaemonUnavailable, TroupeError

    front = daemon.runtime_dir / "front.sock"

    def ready() -> bool:
        if daemon.process.poll() is not None:
            raise RuntimeError(f"daemon exited with {daemon.process.returncode}:\n{daemon.log()[-3000:]}")
        if not front.exists():
            return False
        try:
            return sum(daemon.health(timeout=1.0)["servers"].values()) >= servers
        except (DaemonUnavailable, TroupeError):
            return False

    wait_for(ready, timeout, "the daemon to serve", interval)
    return time.perf_counter() - daemon.started_at


ECHO_DAEMON_ARGS = (
    "--rate-per-session",
    "0",
    "--open-rate-per-client",
    "0",
    "--open-rate-total",
    "0",
    "--max-sessions",
    "20000",
    "--on-session-limit",
    "refuse",
    "--max-pending-total",
    "100000",
)
"""Flags of every daemon that serves the echo adapter: no per-session request rate (the
default 100 req/s would cap one session), no opening rates, room for 10,000+ sessions."""


def start_echo_daemon(extra_args: Sequence[str] = ()) -> Daemon:
    """A daemon with no servers of its own and the native echo adapter registered as ``echo``."""
    daemon = start_daemon([*ECHO_DAEMON_ARGS, *extra_args], config=NO_SERVERS_CONFIG)
    log = (daemon.runtime_dir / "echo_adapter.log").open("wb")
    daemon.adapter = module_process(
        "bench.echo_adapter", ["--endpoint", daemon.back, "--server", "echo"], stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    try:
        wait_serving(daemon, servers=1)
    except BaseException:
        daemon.stop()
        raise
    return daemon


def read_json_line(stream: Any, what: str) -> dict[str, Any]:
    line = stream.readline()
    if not line:
        raise RuntimeError(f"{what} ended without an answer")
    return json.loads(line)
