"""Measurement 2, real server: ``tools/call add`` on the example MCP server, by path.

Paths (each keeps one session open for the whole measurement):

``direct``
    The official SDK (this environment's, mcp 2.x) ``ClientSession`` over
    stdio to ``python -m mcp_troupe.examples.server``: the baseline.
``troupe_connect``
    The same SDK client over stdio to ``troupe connect example``, which carries
    each line through the daemon and its adapter to the same server.
``client_library``
    ``mcp_troupe.transport.client`` (synchronous, in this process) through the daemon and
    adapter to the same server.
``direct_sdk1``
    mcp-proxy's environment's SDK (mcp 1.x) over stdio to the same server:
    the baseline for mcp-proxy, since its client is a different SDK version.
``mcp_proxy``
    That SDK's Streamable HTTP client to mcp-proxy 0.13.0 (PyPI), which
    exposes the same stdio server.
``troupe_http``
    This environment's SDK's Streamable HTTP client to troupe's HTTP front
    (``troupe serve --http``), through the daemon and adapter to the same
    server: compared with ``direct`` as ``mcp_proxy`` is with ``direct_sdk1``.
``troupe_http_sdk1``
    mcp-proxy's client (SDK 1.x) to troupe's HTTP front: the same client on
    both HTTP paths, so the two added latencies compare the proxies alone.
``direct_http``
    This environment's SDK's Streamable HTTP client to the example server run
    over its own HTTP (``python -m mcp_troupe.examples.server --http PORT``):
    the baseline of a remote server.
``troupe_connect_remote``
    The SDK client over stdio to ``troupe connect remote``, a server whose
    config has ``url`` = that same HTTP server: through the daemon and an HTTP
    adapter (httpx) to it, compared with ``direct_http``.

Only one path is active at a time: the measurement runs in rounds, each path
making a block of sequential calls per round in a shuffled order, so that
other load on the machine falls on every path alike. A call's time is the
wall-clock time from the client's call to its awaited result.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

from bench import proxy_env
from bench.common import (
    BENCH,
    PYTHON,
    ROOT,
    bench_env,
    free_port,
    ratio,
    read_json_line,
    start_daemon,
    stop_process,
    summary,
    wait_for,
)

DRIVER = BENCH / "sdk_driver.py"
SERVER_COMMAND = [PYTHON, "-m", "mcp_troupe.examples.server"]


class Path_(Protocol):
    def run(self, count: int) -> list[int]: ...

    def close(self) -> None: ...


class DriverPath:
    """A `bench/sdk_driver.py` process holding one SDK session."""

    def __init__(self, python: str | Path, args: list[str], log: Path) -> None:
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [str(python), str(DRIVER), *args],
            cwd=ROOT,
            env=bench_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.info: dict[str, Any] = {}

    def ready(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        self.info = read_json_line(self.process.stdout, f"driver {self.process.args}")
        return self.info

    def run(self, count: int) -> list[int]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"run {count}\n")
        self.process.stdin.flush()
        return read_json_line(self.process.stdout, "driver")["samples_ns"]

    def close(self) -> None:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
            self.process.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            stop_process(self.process)
        self._log.close()


class LibraryPath:
    """`mcp_troupe.transport.client` in this process."""

    def __init__(self, front: str) -> None:
        from mcp_troupe.transport.client import Client

        self.client = Client(front, timeout=30)
        self.session = self.client.open("example")
        self.session.initialize()
        self.session.request("tools/call", {"name": "add", "arguments": {"a": 2, "b": 3}})

    def run(self, count: int) -> list[int]:
        clock = time.perf_counter_ns
        request = self.session.request
        samples = []
        for _ in range(count):
            began = clock()
            result = request("tools/call", {"name": "add", "arguments": {"a": 2, "b": 3}})
            samples.append(clock() - began)
            if result.get("isError"):
                raise RuntimeError(f"add failed: {result}")
        return samples

    def close(self) -> None:
        self.session.close()
        self.client.close()


def _connect_command(front: str, server: str = "example") -> list[str]:
    troupe = Path(PYTHON).parent / "troupe"
    base = [str(troupe)] if troupe.exists() else [PYTHON, "-m", "mcp_troupe.actors"]
    return [*base, "connect", server, "--endpoint", front]


def _config(remote_port: int) -> str:
    """The embedded default's example server, and the same server reached by URL as ``remote``."""
    return (
        f"[servers.example]\ncommand = {json.dumps(SERVER_COMMAND)}\n\n"
        f'[servers.remote]\nurl = "http://127.0.0.1:{remote_port}/mcp"\n'
    )


def _start_remote(port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*SERVER_COMMAND, "--http", str(port)], cwd=ROOT, env=bench_env(), stdout=out, stderr=subprocess.STDOUT
        )
    wait_for(lambda: _port_open(port) or process.poll() is not None, 60, "the example server's HTTP to listen", 0.05)
    if process.poll() is not None:
        raise RuntimeError(f"the example server over HTTP exited with {process.returncode}:\n{log.read_text()[-2000:]}")
    return process


def run(quick: bool, proxy_python: Future[Path]) -> dict[str, Any]:
    rounds, block, warmup = (3, 10, 10) if quick else (30, 60, 100)
    # The default per-session rate limit (100 requests/s, bursts of 200) is below what one sequential
    # client does against this server (~250-500 calls/s): it would refuse calls, not slow them.
    http_port, remote_port = free_port(), free_port()
    remote = _start_remote(remote_port, Path(tempfile.gettempdir()) / f"trb-remote-{remote_port}.log")
    try:
        daemon = start_daemon(
            ["--rate-per-session", "0", "--http", f"127.0.0.1:{http_port}"], config=_config(remote_port), servers=2
        )
    except BaseException:
        stop_process(remote)
        raise
    logs = daemon.runtime_dir
    paths: dict[str, Path_] = {}
    proxy: subprocess.Popen[bytes] | None = None
    errors: dict[str, str] = {}
    try:
        drivers = {
            "direct": DriverPath(PYTHON, ["stdio", "--", *SERVER_COMMAND], logs / "direct.log"),
            "troupe_connect": DriverPath(
                PYTHON, ["stdio", "--", *_connect_command(daemon.front)], logs / "connect.log"
            ),
            "direct_http": DriverPath(
                PYTHON, ["http", f"http://127.0.0.1:{remote_port}/mcp"], logs / "direct-http.log"
            ),
            "troupe_connect_remote": DriverPath(
                PYTHON, ["stdio", "--", *_connect_command(daemon.front, "remote")], logs / "connect-remote.log"
            ),
        }
        paths["client_library"] = LibraryPath(daemon.front)
        wait_for(lambda: _port_open(http_port), 30, "troupe's HTTP front to listen", 0.05)
        drivers["troupe_http"] = DriverPath(
            PYTHON, ["http", f"http://127.0.0.1:{http_port}/mcp/example"], logs / "troupe-http.log"
        )
        try:
            venv_python = proxy_python.result(timeout=600)
            port = free_port()
            proxy_log = (logs / "mcp-proxy.log").open("wb")
            proxy = subprocess.Popen(
                [
                    str(proxy_env.executable()),
                    "--port",
                    str(port),
                    "--host",
                    "127.0.0.1",
                    "--log-level",
                    "WARNING",
                    "--cwd",
                    str(ROOT),
                    "--pass-environment",
                    "--",
                    *SERVER_COMMAND,
                ],
                cwd=ROOT,
                env=bench_env(),
                stdout=proxy_log,
                stderr=subprocess.STDOUT,
            )
            proxy_log.close()
            wait_for(lambda: _port_open(port) or proxy.poll() is not None, 60, "mcp-proxy to listen", 0.05)
            if proxy.poll() is not None:
                raise RuntimeError(f"mcp-proxy exited with {proxy.returncode}")
            drivers["direct_sdk1"] = DriverPath(venv_python, ["stdio", "--", *SERVER_COMMAND], logs / "sdk1.log")
            drivers["mcp_proxy"] = DriverPath(
                venv_python, ["http", f"http://127.0.0.1:{port}/mcp"], logs / "proxy-driver.log"
            )
            drivers["troupe_http_sdk1"] = DriverPath(
                venv_python, ["http", f"http://127.0.0.1:{http_port}/mcp/example"], logs / "troupe-http-sdk1.log"
            )
        except Exception as exc:  # noqa: BLE001 - reported as this path's error
            errors["mcp_proxy"] = f"{type(exc).__name__}: {exc}"
        sdk: dict[str, str] = {}
        for name, driver in drivers.items():
            try:
                info = driver.ready()
                sdk[name] = info.get("mcp", "?")
                paths[name] = driver
            except Exception as exc:  # noqa: BLE001
                log = Path(driver._log.name).read_text(errors="replace")[-2000:]
                errors[name] = f"{type(exc).__name__}: {exc}\n{log}"
                driver.close()
        samples: dict[str, list[int]] = {name: [] for name in paths}
        for path in paths.values():
            path.run(warmup)
        order = list(paths)
        rng = random.Random(7)
        watched = _troupe_processes(daemon.pid, drivers.get("troupe_connect")) | {"remote_server": remote.pid}
        cpu: dict[str, dict[str, float]] = {name: dict.fromkeys(watched, 0.0) for name in paths}
        for _ in range(rounds):
            rng.shuffle(order)
            for name in order:
                before = _cpu(watched)
                samples[name] += paths[name].run(block)
                for proc, spent in _cpu(watched).items():
                    cpu[name][proc] += spent - before.get(proc, spent)
    finally:
        for path in paths.values():
            try:
                path.close()
            except Exception:  # noqa: BLE001 - best effort
                pass
        if proxy is not None:
            stop_process(proxy)
        daemon.stop()
        stop_process(remote)
    ms = 1e-6
    result: dict[str, Any] = {
        "what": "tools/call add on the example server, sequential calls, one session per path; milliseconds",
        "calls_per_path": rounds * block,
        "sdk_versions": sdk,
        "paths_ms": {name: summary(s, ms, 3) for name, s in samples.items() if s},
    }
    p = result["paths_ms"]
    if "direct" in p and "troupe_connect" in p:
        d, t = p["direct"], p["troupe_connect"]
        result["troupe_connect_overhead_p50_pct"] = round((t["p50"] / d["p50"] - 1) * 100, 1)
        result["troupe_connect_overhead_p95_pct"] = round((t["p95"] / d["p95"] - 1) * 100, 1)
        result["troupe_added_p50_ms"] = round(t["p50"] - d["p50"], 3)
        result["troupe_added_p95_ms"] = round(t["p95"] - d["p95"], 3)
    if "direct" in p and "client_library" in p:
        result["client_library_ratio_p50"] = ratio(p["client_library"]["p50"], p["direct"]["p50"])
    if "direct_sdk1" in p and "mcp_proxy" in p:
        d1, m = p["direct_sdk1"], p["mcp_proxy"]
        result["mcp_proxy_overhead_p50_pct"] = round((m["p50"] / d1["p50"] - 1) * 100, 1)
        result["mcp_proxy_added_p50_ms"] = round(m["p50"] - d1["p50"], 3)
        result["mcp_proxy_added_p95_ms"] = round(m["p95"] - d1["p95"], 3)
        if "troupe_added_p50_ms" in result:
            result["troupe_vs_mcp_proxy_added_p50"] = ratio(
                result["troupe_added_p50_ms"], result["mcp_proxy_added_p50_ms"], 3
            )
    if "direct" in p and "troupe_http" in p:
        h = p["troupe_http"]
        result["troupe_http_added_p50_ms"] = round(h["p50"] - p["direct"]["p50"], 3)
        result["troupe_http_added_p95_ms"] = round(h["p95"] - p["direct"]["p95"], 3)
    if "direct_sdk1" in p and "troupe_http_sdk1" in p and "mcp_proxy_added_p50_ms" in result:
        h1 = p["troupe_http_sdk1"]
        result["troupe_http_sdk1_added_p50_ms"] = round(h1["p50"] - p["direct_sdk1"]["p50"], 3)
        result["troupe_http_sdk1_added_p95_ms"] = round(h1["p95"] - p["direct_sdk1"]["p95"], 3)
        result["troupe_http_vs_mcp_proxy_added_p50"] = ratio(
            result["troupe_http_sdk1_added_p50_ms"], result["mcp_proxy_added_p50_ms"], 3
        )
    if "direct_http" in p and "troupe_connect_remote" in p:
        dh, r = p["direct_http"], p["troupe_connect_remote"]
        result["remote_ratio_p50"] = ratio(r["p50"], dh["p50"])
        result["remote_added_p50_ms"] = round(r["p50"] - dh["p50"], 3)
        result["remote_added_p95_ms"] = round(r["p95"] - dh["p95"], 3)
    calls = rounds * block
    result["troupe_cpu_us_per_call"] = {}
    for name in ("troupe_connect", "client_library", "troupe_http", "troupe_connect_remote"):
        if name in cpu:
            per_call = {proc: spent / calls * 1e6 for proc, spent in cpu[name].items()}
            servers = sum(v for proc, v in per_call.items() if proc.startswith("server_process_"))
            per_call = {proc: v for proc, v in per_call.items() if not proc.startswith("server_process_")}
            per_call["server"] = servers
            result["troupe_cpu_us_per_call"][name] = {proc: round(v) for proc, v in per_call.items()}
    if errors:
        result["errors"] = errors
    return result


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _troupe_processes(daemon_pid: int, connect: DriverPath | None) -> dict[str, int]:
    """The processes on troupe's paths: the daemon, its adapter, the server processes it runs, the bridge.

    Their CPU time per call is a diagnostic (clock ticks of 10 ms: meaningful over the full run's calls only).
    """
    procs = {"daemon": daemon_pid}
    for adapter in _children(daemon_pid):
        if b"\0http\0" in _cmdline(adapter):
            procs["http_front"] = adapter
            continue
        if b"\0--url\0" in _cmdline(adapter):
            procs["http_adapter"] = adapter
            continue
        procs["adapter"] = adapter
        for i, server in enumerate(_children(adapter)):
            procs[f"server_process_{i}"] = server
    if connect is not None:
        bridges = _children(connect.process.pid)
        if bridges:
            procs["troupe_connect_bridge"] = bridges[0]
    return procs


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _cpu(procs: dict[str, int]) -> dict[str, float]:
    from bench.throughput import cpu_seconds

    out = {}
    for name, pid in procs.items():
        try:
            out[name] = cpu_seconds(pid)
        except OSError:
            pass
    return out


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":
    future: Future[Path] = Future()
    future.set_result(proxy_env.ensure())
    import json

    json.dump(run("--quick" in sys.argv, future), sys.stdout, indent=1)
