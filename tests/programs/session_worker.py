"""A client process for the concurrency test: N sessions in flight at once.

Usage: python session_worker.py ENDPOINT SESSIONS WORKER_ID
Prints one JSON object with what each session saw.
"""

from __future__ import annotations

import json
import sys

from mcp_troupe.transport.client import Client
from mcp_troupe.transport.wire import jsonrpc


def main(endpoint: str, count: int, worker: str) -> dict[str, object]:
    report: dict[str, object] = {}
    with Client(endpoint, timeout=60) as client:
        sessions = [client.open("example") for _ in range(count)]
        for s in sessions:  # every handshake in flight before any answer is awaited
            s.send(
                jsonrpc.request(
                    1,
                    "initialize",
                    {
                        "protocolVersion": "2025-11-25",
                        "capabilities": {},
                        "clientInfo": {"name": f"w{worker}", "version": "1"},
                    },
                )
            )
        inits = [s.wait_result(1) for s in sessions]
        for s in sessions:
            s.notify("notifications/initialized")
        for i, s in enumerate(sessions):
            tag = f"{worker}-{i}-{s.sid}"
            s.send(jsonrpc.request(2, "tools/list"))
            s.send(jsonrpc.request(3, "tools/call", {"name": "echo", "arguments": {"text": tag}}))
            s.send(jsonrpc.request(4, "tools/call", {"name": "add", "arguments": {"a": i, "b": 1000 * int(worker)}}))
        for i, (s, init) in enumerate(zip(sessions, inits, strict=True)):
            report[s.sid] = {
                "index": i,
                "server": init["serverInfo"]["name"],
                "tools": sorted(t["name"] for t in s.wait_result(2)["tools"]),
                "echo": s.wait_result(3)["content"][0]["text"],
                "add": s.wait_result(4)["structuredContent"]["result"],
            }
        for s in sessions:
            report[s.sid]["closed"] = s.close()  # type: ignore[index]
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), sys.argv[3])))
