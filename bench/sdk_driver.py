"""Drive one MCP server with the official SDK's ``ClientSession`` and time ``tools/call add``.

Runs under any Python that has the ``mcp`` SDK: the project's environment
(mcp 2.x) for the stdio paths, and the mcp-proxy environment (mcp 1.x, which
mcp-proxy 0.13.0 requires) for the Streamable HTTP path. It imports nothing
from this repository, so it runs as a plain script::

    python bench/sdk_driver.py stdio -- COMMAND ARGS...
    python bench/sdk_driver.py http URL

It connects and initializes once, prints ``{"ready": ...}`` on stdout, then
serves commands from stdin, one per line: ``run N`` makes N sequential calls
of ``add(a=2, b=3)`` and prints ``{"samples_ns": [...]}`` (one wall-clock
duration per call, awaiting the result); ``quit`` disconnects. stdout carries
nothing else; the SDK's and the server's logs go to stderr.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import AsyncExitStack
from importlib.metadata import version
from typing import Any

import anyio
import anyio.to_thread
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _transport(stack: AsyncExitStack, argv: list[str]) -> tuple[Any, Any]:
    kind = argv[0]
    if kind == "stdio":
        command = argv[argv.index("--") + 1 :]
        params = StdioServerParameters(command=command[0], args=command[1:])
        read, write = await stack.enter_async_context(stdio_client(params, errlog=sys.stderr))
        return read, write
    if kind == "http":
        try:
            from mcp.client.streamable_http import streamable_http_client as connect
        except ImportError:  # pragma: no cover - older SDKs
            from mcp.client.streamable_http import streamablehttp_client as connect
        streams = await stack.enter_async_context(connect(argv[1]))
        return streams[0], streams[1]
    raise SystemExit(f"unknown transport {kind!r}; use stdio or http")


async def _main(argv: list[str]) -> None:
    async with AsyncExitStack() as stack:
        read, write = await _transport(stack, argv)
        session = await stack.enter_async_context(ClientSession(read, write))
        init = await session.initialize()
        result = await session.call_tool("add", {"a": 2, "b": 3})
        if result.isError if hasattr(result, "isError") else result.is_error:
            raise SystemExit(f"add failed: {result}")
        _say(
            {
                "ready": True,
                "mcp": version("mcp"),
                "protocol": str(init.protocolVersion if hasattr(init, "protocolVersion") else init.protocol_version),
            }
        )
        clock = time.perf_counter_ns
        while True:
            line = (await anyio.to_thread.run_sync(sys.stdin.readline)).split()
            if not line or line[0] == "quit":
                return
            samples = []
            for _ in range(int(line[1])):
                began = clock()
                await session.call_tool("add", {"a": 2, "b": 3})
                samples.append(clock() - began)
            _say({"samples_ns": samples})


if __name__ == "__main__":
    anyio.run(_main, sys.argv[1:])
