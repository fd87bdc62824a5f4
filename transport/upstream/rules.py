"""What troupe sends a remote MCP server and how it reads the answers: the client side of Streamable HTTP. Pure.

`request_headers` builds a POST's headers for either era (``Mcp-Session-Id`` and the negotiated
``MCP-Protocol-Version`` for a legacy session; for 2026-07-28 the headers the spec mirrors from the
body: ``MCP-Protocol-Version``, ``Mcp-Method``, ``Mcp-Name``, ``Mcp-Param-*``). `Fault` is what went
wrong upstream, and `Fault.answer` the JSON-RPC error a client gets for it: code -32014, a message
that says what happened, ``data: {upstream, http_status?, url}``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from mcp_troupe.transport.http import params
from mcp_troupe.transport.http.rules import MODERN_VERSIONS, NAME_BEARING, modern_version
from mcp_troupe.transport.wire import jsonrpc
from mcp_troupe.transport.wire.kinds import UPSTREAM_FAULTS

UPSTREAM_FAILED: Final = jsonrpc.UPSTREAM_FAILED

ACCEPT: Final = "application/json, text/event-stream"
_HEADER_SAFE: Final = re.compile(r"[\x20-\x7E]*")
_SENTINEL: Final = re.compile(r"=\?base64\?.*\?=")

FAULT_KINDS: Final = UPSTREAM_FAULTS
"""Every ``data.upstream`` value (and metric label) a fault can have."""


def encode_header_value(value: str) -> str:
    """Printable ASCII without edge whitespace as it is, anything else in the spec's ``=?base64?...?=`` form."""
    if _HEADER_SAFE.fullmatch(value) and value == value.strip() and not _SENTINEL.fullmatch(value):
        return value
    return f"=?base64?{base64.b64encode(value.encode('utf-8')).decode('ascii')}?="


def is_modern(message: Mapping[str, Any]) -> bool:
    """A 2026-07-28 request: its ``_meta`` names a modern version (``server/discover`` always does)."""
    return modern_version(message) in MODERN_VERSIONS


def mirrored_headers(message: Mapping[str, Any], schema: Any = None) -> dict[str, str]:
    """The 2026-07-28 headers that mirror ``message``: version, method, name, and for a ``tools/call`` the
    ``Mcp-Param-*`` of the arguments its tool's input ``schema`` marks with ``x-mcp-header``."""
    headers = {"mcp-protocol-version": str(modern_version(message))}
    method = message.get("method")
    if not isinstance(method, str):
        return headers
    headers["mcp-method"] = method
    args = message.get("params")
    args = args if isinstance(args, dict) else {}
    key = NAME_BEARING.get(method)
    if key is not None and isinstance(args.get(key), str):
        headers["mcp-name"] = encode_header_value(args[key])
    if method == "tools/call" and schema is not None:
        headers.update(param_headers(schema, args.get("arguments")))
    return headers


def param_headers(schema: Any, arguments: Any) -> dict[str, str]:
    headers: dict[str, str] = {}
    for path, token, _ in params.annotated(schema):
        value: Any = arguments
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, bool):
            headers[f"mcp-param-{token.lower()}"] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            headers[f"mcp-param-{token.lower()}"] = encode_header_value(str(value))
    return headers


def request_headers(
    message: Mapping[str, Any],
    *,
    session_id: str | None,
    version: str | None,
    schema: Any = None,
    credentials: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Every header of a POST carrying ``message``: the credentials' first, then what MCP requires."""
    headers = dict(credentials or {})
    headers["accept"] = ACCEPT
    headers["content-type"] = "application/json"
    if is_modern(message):
        headers.update(mirrored_headers(message, schema))
        return headers
    if session_id is not None:
        headers["mcp-session-id"] = session_id
    if version is not None and message.get("method") != "initialize":
        headers["mcp-protocol-version"] = version
    return headers


def stream_headers(
    *, session_id: str | None, version: str | None, last_event_id: str | None, credentials: Mapping[str, str] | None
) -> dict[str, str]:
    """Headers of a GET: the standalone stream, or a resumption from ``last_event_id``."""
    headers = dict(credentials or {})
    headers["accept"] = "text/event-stream"
    if session_id is not None:
        headers["mcp-session-id"] = session_id
    if version is not None:
        headers["mcp-protocol-version"] = version
    if last_event_id is not None:
        headers["last-event-id"] = last_event_id
    return headers


def redact_url(url: str) -> str:
    """``url`` without user info, query or fragment: what may be shown to a client or written to a log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class Fault:
    """A failure of the upstream, as the client will hear it."""

    kind: str
    message: str
    status: int | None = None
    limit: int | None = None
    """For ``too_large``: the bound in bytes that the message went over."""

    def answer(self, request_id: jsonrpc.RequestId, server: str, url: str) -> dict[str, Any]:
        data: dict[str, Any] = {"upstream": self.kind, "server": server, "url": redact_url(url)}
        if self.status is not None:
            data["http_status"] = self.status
        if self.limit is not None:
            data["limit"] = self.limit
        code = jsonrpc.MESSAGE_TOO_LARGE if self.kind == "too_large" else UPSTREAM_FAILED
        return jsonrpc.error(request_id, code, f"troupe: upstream {redact_url(url)}: {self.message}", data)


def status_fault(status: int, reason: str = "") -> Fault:
    """An HTTP status that carries no MCP answer."""
    said = f"HTTP {status}{' ' + reason if reason else ''}"
    if status in (401, 403):
        what = "refused troupe's credentials" if status == 401 else "forbids this request"
        return Fault("unauthorized", f"{what} ({said}); check the server's headers in troupe's config", status)
    if status >= 500:
        return Fault("http_error", f"failed ({said}); the server may be down or overloaded, try again", status)
    return Fault("http_error", f"answered {said} without an MCP message", status)


def too_large(detail: str, status: int, limit: int) -> Fault:
    """An upstream body or event over ``limit`` bytes (answered as -32013, with what to do)."""
    advice = "max_server_frame_bytes in the daemon's config, --max-message-bytes of the adapter"
    return Fault("too_large", f"{detail} ({advice}); ask for less, or have the limit raised", status, limit)


def content_type(value: str | None) -> str:
    return (value or "").partition(";")[0].strip().lower()


def parse_message(body: bytes | str, status: int) -> dict[str, Any] | Fault:
    """One JSON-RPC message from a body or an event's data, or the fault of one that is not."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        message = None
    if isinstance(message, dict) and message.get("jsonrpc") == "2.0":
        return message
    text = body[:80] if isinstance(body, str) else body[:80].decode("utf-8", "replace")
    return Fault("not_mcp", f"sent something that is not a JSON-RPC message (HTTP {status}): {text!r}", status)


def answers(message: Mapping[str, Any], request_id: jsonrpc.RequestId) -> bool:
    """``message`` is the response (result or error) to ``request_id``."""
    return "method" not in message and message.get("id") == request_id and ("result" in message or "error" in message)
