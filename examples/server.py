"""A tiny MCP server used to exercise troupe against a real SDK-built peer.

Run it with ``python -m mcp_troupe.examples.server``: it speaks newline-delimited JSON-RPC
on stdin/stdout (stdout carries protocol messages only; the SDK logs to stderr). With
``--http PORT`` it serves Streamable HTTP at ``http://127.0.0.1:PORT/mcp`` instead.
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
* ``cancelled_sleeps()`` returns how many ``sleep`` calls this server process
  saw cancelled, so tests can check that a cancellation or a timeout reached
  the server.
* ``fail(message)`` raises ``ToolError(message)``: the SDK turns that into a
  normal result, not a JSON-RPC error: ``isError: true`` with the single text
  content ``"Error executing tool fail: <message>"``.
* ``list_roots()`` sends the server-to-client request ``roots/list`` (no params)
  mid-call and returns the root URIs joined with newlines, or ``"no roots"``.
* ``ask_llm(prompt)`` sends ``sampling/createMessage`` with ``messages`` = one
  user text message ``prompt`` and ``maxTokens`` 100, and returns the text of
  the client's answer.
* ``ask_user(question)`` sends ``elicitation/create`` with ``message`` =
  ``question`` and a schema of one string field, ``answer``; it returns
  ``"answer: <answer>"``, or ``"declined"`` / ``"cancelled"``.

The last three use the SDK's ``Resolve`` markers (``ListRoots``, ``Sample``): on
protocol versions up to 2025-11-25 each is a standalone JSON-RPC request sent to
the client while the ``tools/call`` is pending. The client must have declared the
``roots`` / ``sampling`` / ``elicitation`` capability in ``initialize``; otherwise no request is
sent and the ``tools/call`` gets the JSON-RPC error ``-32021`` (missing required
client capability).

When stdin closes the server exits 0; requests still running at that moment are
answered with the JSON-RPC error ``-32000 "Connection closed"``.
"""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

try:
    import anyio
    from mcp.server.mcpserver import (
        AcceptedElicitation,
        Context,
        DeclinedElicitation,
        Elicit,
        ElicitationResult,
        ListRoots,
        MCPServer,
        Resolve,
        Sample,
    )
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import CreateMessageResult, ListRootsResult, SamplingMessage, TextContent
    from pydantic import BaseModel
except ImportError as missing:  # a plain install: the SDK is the `example` extra
    sys.exit(
        f"troupe's example server needs the MCP Python SDK ({missing.name} is missing): "
        "pip install 'mcp-troupe[example]'"
    )

server: MCPServer = MCPServer("troupe-example")
_cancelled = [0]
"""Cancelled ``sleep`` calls, in a list so the tool can count without ``global``."""


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
    try:
        while elapsed < seconds:
            step = min(1.0, seconds - elapsed)
            await anyio.sleep(step)  # cancellation from notifications/cancelled lands here
            elapsed += step
            await ctx.report_progress(elapsed, seconds)
    except anyio.get_cancelled_exc_class():
        _cancelled[0] += 1
        raise
    return f"slept {seconds}s"


@server.tool()
def cancelled_sleeps() -> int:
    """How many ``sleep`` calls this server process saw cancelled."""
    return _cancelled[0]


@server.tool(structured_output=False)
def fail(message: str) -> NoReturn:
    """Always fail: the result has ``isError: true`` and text "Error executing tool fail: <message>"."""
    raise ToolError(message)


def _ask_roots() -> ListRoots:
    """Resolver: have the SDK send ``roots/list`` to the client."""
    return ListRoots()


def _ask_sampling(prompt: str) -> Sample:
    """Resolver: have the SDK send ``sampling/createMessage`` carrying ``prompt``."""
    return Sample([SamplingMessage(role="user", content=TextContent(type="text", text=prompt))], max_tokens=100)


@server.tool()
def list_roots(roots: Annotated[ListRootsResult, Resolve(_ask_roots)]) -> str:
    """Return the client's root URIs, one per line, or "no roots".

    Sends ``roots/list`` to the client; it must have declared the ``roots``
    capability in ``initialize``, else the call fails with JSON-RPC error -32021.
    """
    return "\n".join(str(root.uri) for root in roots.roots) or "no roots"


@server.tool()
def ask_llm(prompt: str, answer: Annotated[CreateMessageResult, Resolve(_ask_sampling)]) -> str:
    """Ask the client's LLM ``prompt`` and return the text of its answer.

    Sends ``sampling/createMessage`` to the client; it must have declared the
    ``sampling`` capability in ``initialize``, else the call fails with JSON-RPC
    error -32021. A non-text answer is a tool error.
    """
    if not isinstance(answer.content, TextContent):
        raise ToolError(f"expected a text answer, got {answer.content.type}")
    return answer.content.text


class Answer(BaseModel):
    answer: str


def _ask_user(question: str) -> Elicit[Answer]:
    """Resolver: have the SDK send ``elicitation/create`` asking ``question``."""
    return Elicit(question, Answer)


@server.tool()
def ask_user(question: str, reply: Annotated[ElicitationResult[Answer], Resolve(_ask_user)]) -> str:
    """Ask the user ``question`` and return ``"answer: <answer>"``, ``"declined"`` or ``"cancelled"``."""
    if isinstance(reply, AcceptedElicitation):
        return f"answer: {reply.data.answer}"
    return "declined" if isinstance(reply, DeclinedElicitation) else "cancelled"


def main() -> None:
    """Serve on stdio until stdin closes; ``--http PORT`` serves Streamable HTTP on 127.0.0.1:PORT/mcp instead
    (what troupe's remote-server path is measured and tried against)."""
    if len(sys.argv) == 3 and sys.argv[1] == "--http" and sys.argv[2].isdigit():
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    elif len(sys.argv) > 1:
        sys.exit("usage: python -m mcp_troupe.examples.server [--http PORT]")
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
