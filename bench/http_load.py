"""Measurement: requests/s through troupe's HTTP front with 64 concurrent HTTP clients.

The daemon serves only the native echo adapter (``bench/echo_adapter.py``: it answers at once, so
the figure is troupe's, not a server's), with its HTTP front on. Two load processes each hold 32
keep-alive connections, one legacy HTTP session per connection, one request in flight per
connection, for a fixed window; each counts the answers it got. The load client is a few lines of
asyncio streams rather than an HTTP library, so that the load processes cost as little as they can:
the SDK's client would be the bottleneck long before troupe.

    python -m bench.http_load --port PORT --connections 32 --seconds 3   (one load process)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

from bench.common import PYTHON, ROOT, bench_env, free_port, start_echo_daemon, wait_for

CLIENTS = 64
PROCESSES = 2


def _request(path: str, body: dict[str, Any], sid: str | None) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Accept: application/json, text/event-stream\r\nContent-Length: {len(data)}\r\n"
    )
    if sid:
        head += f"Mcp-Session-Id: {sid}\r\nMCP-Protocol-Version: 2025-11-25\r\n"
    return (head + "\r\n").encode() + data


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    body = bytearray()  # chunked (an SSE answer)
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, headers, bytes(body)
        body += chunk[:-2]


async def _connection(port: int, path: str, until: float, counts: list[int], latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "bench", "version": "1"},
        },
    }
    writer.write(_request(path, init, None))
    status, headers, body = await _response(reader)
    sid = headers.get("mcp-session-id")
    if sid is None:
        raise RuntimeError(f"initialize got HTTP {status} without a session id: {body[:300]!r}")
    writer.write(_request(path, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid))
    await _response(reader)
    n = 0
    call = {"jsonrpc": "2.0", "id": 0, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 2}}}
    while time.perf_counter() < until:
        n += 1
        call["id"] = n
        began = time.perf_counter()
        writer.write(_request(path, call, sid))
        status, _, _ = await _response(reader)
        latencies.append(time.perf_counter() - began)
        counts[0 if status == 200 else 1] += 1
    writer.close()


async def _load(port: int, connections: int, warmup: float, seconds: float) -> dict[str, Any]:
    counts, latencies = [0, 0], []
    start = time.perf_counter() + 1.0  # sessions open first
    until = start + warmup + seconds
    tasks = [asyncio.create_task(_connection(port, "/mcp/echo", until, counts, latencies)) for _ in range(connections)]
    await asyncio.sleep(max(0.0, start + warmup - time.perf_counter()))
    at_start, began = list(counts), time.perf_counter()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - began
    return {
        "ok": counts[0] - at_start[0],
        "errors": counts[1] - at_start[1],
        "seconds": elapsed,
        "p50_ms": sorted(latencies)[len(latencies) // 2] * 1000 if latencies else None,
    }


def run(quick: bool) -> dict[str, Any]:
    warmup, seconds = (0.2, 0.5) if quick else (1.0, 3.0)
    port = free_port()
    daemon = start_echo_daemon(["--http", f"127.0.0.1:{port}"])
    try:
        wait_for(lambda: _open(port), 30, "the HTTP front to listen", 0.05)
        per = CLIENTS // PROCESSES
        procs = [
            subprocess.Popen(
                [
                    PYTHON,
                    "-m",
                    "bench.http_load",
                    "--port",
                    str(port),
                    "--connections",
                    str(per),
                    "--warmup",
                    str(warmup),
                    "--seconds",
                    str(seconds),
                ],
                cwd=ROOT,
                env=bench_env(),
                stdout=subprocess.PIPE,
            )
            for _ in range(PROCESSES)
        ]
        results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    finally:
        daemon.stop()
    ok = sum(r["ok"] for r in results)
    window = max(r["seconds"] for r in results)
    return {
        "what": f"tools/call through the HTTP front to the echo adapter, {CLIENTS} keep-alive HTTP clients "
        f"(legacy sessions, one request in flight each) in {PROCESSES} processes",
        "clients": CLIENTS,
        "rps": round(ok / window),
        "errors": sum(r["errors"] for r in results),
        "p50_ms": round(sorted(r["p50_ms"] for r in results if r["p50_ms"])[0], 3),
    }


def _open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    result = asyncio.run(_load(args.port, args.connections, args.warmup, args.seconds))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
