"""``Mcp-Param-*`` headers (2026-07-28): a ``tools/call`` mirrors the arguments its tool's schema marks with
``x-mcp-header`` into headers, so that intermediaries can route on them; the server checks that each
header agrees with the body. Pure.

The front does the check for the servers behind it (a stdio server never sees the headers), with
the tool schemas it learns from ``tools/list`` results (`ToolSchemas`). The rules follow the official
Python SDK's (``mcp.shared.inbound``): an annotation counts only on a property reached from the root
by ``properties`` alone; values are compared as the client renders them (``true``/``false``,
``str()``), after decoding the ``=?base64?...?=`` form; a header without its argument, or an argument
without its header, is a mismatch.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

PREFIX: Final = "mcp-param-"
KEY: Final = "x-mcp-header"
_SENTINEL: Final = re.compile(r"^=\?base64\?(?P<payload>.*)\?=$")
MAX_TOOLS: Final = 10_000
"""Most tool schemas kept per server."""


def decode(value: str | None) -> str | None:
    """A header's value: verbatim, or the UTF-8 of a canonical base64 sentinel; None for a malformed one."""
    if value is None:
        return None
    found = _SENTINEL.fullmatch(value)
    if found is None:
        return value
    payload = found.group("payload")
    try:
        raw = base64.b64decode(payload, validate=True)
        if base64.b64encode(raw).decode("ascii") != payload:
            return None
        return raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def annotated(schema: Any) -> Iterator[tuple[tuple[str, ...], str, Mapping[str, Any]]]:
    """(argument path, header token, property schema) of each ``x-mcp-header`` annotation."""
    stack: list[tuple[tuple[str, ...], Any]] = [((), schema)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict):
            continue
        token = node.get(KEY)
        if path and isinstance(token, str):
            yield path, token, node
        properties = node.get("properties")
        if isinstance(properties, dict):
            stack.extend(((*path, name), sub) for name, sub in properties.items())


def _render(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _at(arguments: Any, path: tuple[str, ...]) -> Any:
    node = arguments
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _matches(kind: Any, value: Any, rendered: str, given: str) -> bool:
    if kind == "integer" and not isinstance(value, bool) and re.fullmatch(r"-?[0-9]+(\.0+)?", given):
        try:
            return int(given.split(".")[0]) == int(value)
        except (ValueError, TypeError, OverflowError):
            return False
    return given == rendered


def mismatch(schema: Any, arguments: Any, headers: Mapping[str, str], duplicated: frozenset[str]) -> str | None:
    """Why the request's ``Mcp-Param-*`` headers disagree with its arguments, or None when they agree.

    ``headers`` is keyed by lower-case name; ``duplicated`` names those sent more than once."""
    for path, token, prop in annotated(schema):
        name = f"Mcp-Param-{token}"
        raw = headers.get(name.lower())
        value = _at(arguments, path)
        argument = ".".join(path)
        if raw is not None and name.lower() in duplicated:
            return f"{name} appears more than once"
        rendered = _render(value) if value is not None else None
        if rendered is None:
            if raw is not None:
                return f"{name} is present but the argument {argument!r} is absent"
            continue
        if raw is None:
            return f"{name} is missing but the argument {argument!r} is present"
        given = decode(raw)
        if given is None:
            return f"{name} carries a malformed base64 value"
        if not _matches(prop.get("type"), value, rendered, given):
            return f"{name} does not match the argument {argument!r}"
    return None


@dataclass
class ToolSchemas:
    """The input schemas of each server's tools, as its ``tools/list`` results last gave them."""

    by_server: dict[str, dict[str, Any]] = field(default_factory=dict)

    def learn(self, server: str, result: Any) -> None:
        tools = result.get("tools") if isinstance(result, dict) else None
        if not isinstance(tools, list):
            return
        known = self.by_server.setdefault(server, {})
        for tool in tools:
            if isinstance(tool, dict) and isinstance(tool.get("name"), str) and len(known) < MAX_TOOLS:
                known[tool["name"]] = tool.get("inputSchema")

    def schema(self, server: str, tool: str) -> tuple[bool, Any]:
        """(known, input schema) of ``tool``."""
        known = self.by_server.get(server, {})
        return (tool in known, known.get(tool))
