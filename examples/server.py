"""A tiny MCP server used to exercise troupe against a real SDK-built peer.

Run it with ``python -m examples.server``: it speaks newline-delimited JSON-RPC
on stdin/stdout (stdout carries protocol messages only; the SDK logs to stderr).
Tests of timeouts, progress notifications and cancellation drive it.

Tools:

* ``echo(text)`` returns ``text`` unchanged.
* ``add(a, b)`` adds two integers. Ints, not floats: the SDK renders a float
  result as ``"5.0"``, an int as ``"5"``, and ``add(a=2, b=3)`` must read ``"5"``.
  The result also carries ``structuredContent: {"result": 5}``.
* ``sleep(seconds)`` sleeps, sending ``notifications/progress`` (progress =
  seconds elapsed, total = ``seconds``) once per second when the caller gave a
  ``_meta.progressToken``. On ``notifications/cancelled`` the SDK cancels the
  handler's cancel scope, so the pending ``anyio.sleep`` raises and the tool
  stops at once; the SDK then sends no response for the cancelled request.
* ``fail(message)`` raises ``ToolError(message)``: the SDK turns that into a
  normal result, not a JSON-RPC error: ``isError: true`` with the single text
  content ``"Error executing tool fail: <message>"``.

When stdin closes the server exits 0; requests still running at that moment are
answered with the JSON-RPC error ``-32000 "Connection closed"``.
"""

from __future__ import annotations

from typing import NoReturn

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server: MCPServer = MCPServer("troupe-example")


@server.tool()
def echo(text: str) -> str:
    """Return ``text`` unchanged."""
    return text


@server.tool()
def add(a: int, b: int) -> int:
    """Return ``a + b`` (integers, so 2 + 3 renders as "5")."""
    return a + b


@server.tool()
async def sleep(seconds: float, ctx: Context) -> str:
    """Sleep ``seconds``, reporting progress once per second; stops when cancelled."""
    elapsed = 0.0
    while elapsed < seconds:
        step = min(1.0, seconds - elapsed)
        await anyio.sleep(step)  # cancellation from notifications/cancelled lands here
        elapsed += step
        await ctx.report_progress(elapsed, seconds)
    return f"slept {seconds}s"


@server.tool(structured_output=False)
def fail(message: str) -> NoReturn:
    """Always fail: the result has ``isError: true`` and text "Error executing tool fail: <message>"."""
    raise ToolError(message)


def main() -> None:
    """Serve on stdio until stdin closes."""
    server.run("stdio")


if __name__ == "__main__":
    main()
