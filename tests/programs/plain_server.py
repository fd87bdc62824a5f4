"""A small stdio MCP server (legacy era) written with plain JSON lines, not an SDK.

It starts in a few milliseconds, writes as fast as a pipe takes (a test of
flow control needs a server that can outrun its client), and carries any
JSON value unchanged (Python's ``json`` keeps integers of any size and lone
surrogates).

Tools:

* ``flood(count, pad=0)``: sends ``count`` ``notifications/message`` (level
  ``info``, ``data`` = the number, or ``[number, "x" * pad]`` with a pad),
  then returns the text ``"flooded <count>"``.
* ``echo(text)``: returns ``text``.
* ``mirror(...)``: returns its arguments, unchanged, as ``structuredContent``.
* ``environ(names)``: returns ``{name: value or null}`` for the names asked, and
  ``troupe`` = the names of the ``TROUPE_*`` variables it has.
* ``stderr(text)``: writes ``text`` to stderr, then returns ``"written"``.
* ``remember(text)``: keeps ``text`` in this process's memory; returns ``"remembered <n>"``.
* ``recall()``: returns what this process was given to remember, joined by ``,``.
* ``tools/list`` names them all, each taking any object.
* ``slow(seconds)``: returns ``"slept"`` after ``seconds`` (nothing else is read meanwhile).

Writes block when stdout's pipe is full, as they would for any server whose
client stops reading.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

_out = sys.stdout.buffer
_memory: list[str] = []


def send(msg: dict[str, Any]) -> None:
    _out.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")


def result(request_id: Any, text: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": {"content": [{"type": "text", "text": text}]}}


def handle(msg: dict[str, Any]) -> None:
    method, request_id = msg.get("method"), msg.get("id")
    if request_id is None or method is None:
        return
    params = msg.get("params") or {}
    if method == "initialize":
        send(
            {
                "jsonrpc": "2.0",
                "id": request_id,
                "result": {
                    "protocolVersion": params.get("protocolVersion", "2025-11-25"),
                    "capabilities": {"tools": {}, "logging": {}},
                    "serverInfo": {"name": "flood", "version": "1"},
                },
            }
        )
    elif method == "tools/call" and params.get("name") == "flood":
        count = int(params.get("arguments", {}).get("count", 0))
        pad = "x" * int(params.get("arguments", {}).get("pad", 0))
        for n in range(count):
            data = [n, pad] if pad else n
            send({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": data}})
        send(result(request_id, f"flooded {count}"))
    elif method == "tools/call" and params.get("name") == "echo":
        send(result(request_id, str(params.get("arguments", {}).get("text", ""))))
    elif method == "tools/call" and params.get("name") == "mirror":
        send(
            {
                "jsonrpc": "2.0",
                "id": request_id,
                "result": {"content": [], "structuredContent": params.get("arguments")},
            }
        )
    elif method == "tools/call" and params.get("name") == "environ":
        names = params.get("arguments", {}).get("names", [])
        seen = {name: os.environ.get(name) for name in names}
        troupe = sorted(name for name in os.environ if name.startswith("TROUPE_"))
        send(
            {
                "jsonrpc": "2.0",
                "id": request_id,
                "result": {"content": [], "structuredContent": {**seen, "troupe": troupe}},
            }
        )
    elif method == "tools/call" and params.get("name") == "stderr":
        print(params.get("arguments", {}).get("text", ""), file=sys.stderr, flush=True)
        send(result(request_id, "written"))
    elif method == "tools/call" and params.get("name") == "remember":
        _memory.append(str(params.get("arguments", {}).get("text", "")))
        send(result(request_id, f"remembered {len(_memory)}"))
    elif method == "tools/call" and params.get("name") == "recall":
        send(result(request_id, ",".join(_memory)))
    elif method == "tools/call" and params.get("name") == "slow":
        time.sleep(float(params.get("arguments", {}).get("seconds", 0)))
        send(result(request_id, "slept"))
    elif method == "tools/list":
        tools = ["flood", "echo", "mirror", "environ", "stderr", "remember", "recall", "slow"]
        schema = {"type": "object"}
        send(
            {
                "jsonrpc": "2.0",
                "id": request_id,
                "result": {"tools": [{"name": n, "inputSchema": schema} for n in tools]},
            }
        )
    elif method == "ping":
        send({"jsonrpc": "2.0", "id": request_id, "result": {}})
    else:
        send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": f"no method {method}"}})
    _out.flush()


def main() -> None:
    for line in sys.stdin.buffer:
        if line.strip():
            handle(json.loads(line))
        _out.flush()


if __name__ == "__main__":
    main()
