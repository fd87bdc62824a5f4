"""What the Streamable HTTP front accepts, and how it answers what it refuses. Pure rules, no I/O.

Every check here runs before a body is decoded or a session is touched, and each refusal has
one stable shape: an HTTP status, a JSON-RPC error code and a message that says what to do.
`Refusal.reason` is the label the front counts it under (``troupe_http_refused{reason}``).
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from mcp_troupe.transport.wire import jsonrpc

LEGACY_VERSIONS: Final = ("2025-03-26", "2025-06-18", "2025-11-25")
"""Protocol versions served with ``Mcp-Session-Id`` sessions (Streamable HTTP began with 2025-03-26)."""
DEFAULT_LEGACY_VERSION: Final = "2025-03-26"
"""What a request without ``MCP-Protocol-Version`` is taken to speak, as the spec says."""
MODERN_VERSIONS: Final = ("2026-07-28",)

PROTOCOL_VERSION_META: Final = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_META: Final = "io.modelcontextprotocol/clientCapabilities"

HEADER_MISMATCH: Final = -32020
MISSING_CLIENT_CAPABILITY: Final = -32021

NAME_BEARING: Final[Mapping[str, str]] = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
    "resources/subscribe": "uri",
    "resources/unsubscribe": "uri",
}
"""Methods whose ``Mcp-Name`` header mirrors a body parameter (2026-07-28)."""

ERROR_STATUS: Final[Mapping[int, int]] = {
    jsonrpc.PARSE_ERROR: 400,
    jsonrpc.INVALID_REQUEST: 400,
    jsonrpc.INVALID_PARAMS: 400,
    HEADER_MISMATCH: 400,
    MISSING_CLIENT_CAPABILITY: 400,
    jsonrpc.UNSUPPORTED_PROTOCOL_VERSION: 400,
    jsonrpc.METHOD_NOT_FOUND: 404,
    jsonrpc.TOO_MANY_PENDING: 429,
    jsonrpc.RATE_LIMITED: 429,
}
"""HTTP status of a JSON response carrying a JSON-RPC error (2026-07-28's table, plus troupe's limits)."""

EVENT_ID_MAX: Final = 64
_EVENT_ID: Final = re.compile(r"([0-9]{1,18})-([0-9]{1,18})")
TOKEN_NAME: Final = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


@dataclass(frozen=True)
class Refusal:
    """An HTTP request turned away: ``status``, JSON-RPC ``code`` and ``message``, what it is counted as."""

    status: int
    code: int
    message: str
    reason: str
    id: jsonrpc.RequestId | None = None
    data: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return jsonrpc.error(self.id, self.code, self.message, self.data)


def refuse(status: int, reason: str, message: str, code: int = jsonrpc.INVALID_REQUEST, **extra: Any) -> Refusal:
    return Refusal(status, code, message, reason, **extra)


# -- where a request comes from --------------------------------------------------------


LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


def host_name(value: str) -> str:
    """``Host`` or an origin's authority without its port, lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def check_origin(
    origin: str | None, host: str | None, allowed_origins: Iterable[str], loopback: bool
) -> Refusal | None:
    """DNS-rebinding protection (a MUST of the transport): a browser page of another site must not reach
    the front. An ``Origin``, when sent, must be one of ``allowed_origins`` (``scheme://host[:port]``, or
    ``*``) or, with none configured, a loopback origin; a front bound to loopback also takes only a loopback
    ``Host``. Clients that are not browsers send no ``Origin`` and pass."""
    allowed = {o.rstrip("/").lower() for o in allowed_origins}
    if loopback and host is not None and host_name(host) not in LOOPBACK_HOSTS and not allowed:
        return refuse(403, "bad_host", f"Host {host[:100]!r} is not served here (DNS-rebinding protection)")
    if origin is None or "*" in allowed:
        return None
    origin = origin.strip().rstrip("/").lower()
    if allowed:
        ok = origin in allowed
    else:
        parts = urlsplit(origin)
        ok = parts.scheme in ("http", "https") and host_name(parts.netloc) in LOOPBACK_HOSTS
    if ok:
        return None
    return refuse(
        403, "bad_origin", f"Origin {origin[:100]!r} is not allowed; add it to [http] allowed_origins to let it in"
    )


# -- bearer tokens ---------------------------------------------------------------------


class TokenFileError(ValueError):
    pass


@dataclass(frozen=True)
class Tokens:
    """Named bearer tokens (``[http] tokens_file``); empty: the front takes requests without one."""

    by_name: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def required(self) -> bool:
        return bool(self.by_name)

    def name_of(self, authorization: str | None) -> str | None:
        """The token's name for an ``Authorization: Bearer ...`` header, or None. Compares in constant time."""
        if authorization is None or len(authorization) > 1024:
            return None
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None
        given = value.strip().encode()
        found = None
        for name, token in self.by_name.items():
            if hmac.compare_digest(given, token):
                found = name
        return found


def parse_tokens(text: str, source: str = "tokens file") -> Tokens:
    """One ``NAME TOKEN`` a line; blank lines and ``#`` comments are skipped."""
    tokens: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not TOKEN_NAME.fullmatch(parts[0]) or len(parts[1]) < 16:
            raise TokenFileError(
                f"{source}, line {number}: expected 'NAME TOKEN' (a name of letters, digits, _.@- and a token of "
                "at least 16 characters, e.g. from `python -c 'import secrets; print(secrets.token_urlsafe())'`)"
            )
        if parts[0] in tokens:
            raise TokenFileError(f"{source}, line {number}: token name {parts[0]!r} is given twice")
        tokens[parts[0]] = parts[1].encode()
    return Tokens(tokens)


def load_tokens(path: Path | None) -> Tokens:
    if path is None:
        return Tokens()
    try:
        return parse_tokens(path.read_text(), str(path))
    except OSError as exc:
        raise TokenFileError(f"cannot read tokens file {path}: {exc.strerror}") from None


def unauthorized(realm: str, given: bool) -> Refusal:
    error = ', error="invalid_token"' if given else ""
    return refuse(
        401,
        "bad_token" if given else "no_token",
        "a valid bearer token is required: send 'Authorization: Bearer <token>'"
        if not given
        else "this bearer token is not accepted",
        headers={"WWW-Authenticate": f'Bearer realm="{realm}"{error}'},
    )


# -- headers and body ------------------------------------------------------------------


def accepts(accept: str | None) -> tuple[bool, bool]:
    """Whether ``Accept`` admits JSON and SSE responses."""
    types = {part.split(";", 1)[0].strip().lower() for part in (accept or "").split(",")}
    wildcard = "*/*" in types
    return (wildcard or "application/json" in types or "application/*" in types), (
        wildcard or "text/event-stream" in types or "text/*" in types
    )


def check_post_headers(content_type: str | None, accept: str | None) -> Refusal | None:
    if (content_type or "").split(";", 1)[0].strip().lower() != "application/json":
        return refuse(415, "bad_content_type", "Content-Type must be application/json")
    json_ok, sse_ok = accepts(accept)
    if not (json_ok and sse_ok):
        return refuse(406, "bad_accept", "Accept must list both application/json and text/event-stream for a POST")
    return None


def too_large(max_bytes: int) -> Refusal:
    return refuse(
        413, "too_large", f"the body is larger than this front takes ({max_bytes} bytes, [http] max_body_bytes)"
    )


def parse_body(body: bytes, max_bytes: int) -> dict[str, Any] | Refusal:
    """One JSON-RPC message, validated, or the refusal the client gets."""
    if len(body) > max_bytes:
        return too_large(max_bytes)
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return refuse(400, "not_json", "the body is not JSON", code=jsonrpc.PARSE_ERROR)
    if isinstance(value, list):
        return refuse(
            400, "batch", "JSON-RPC batches are not supported (removed in MCP 2025-06-18): send one message per POST"
        )
    try:
        jsonrpc.classify(value)
        jsonrpc.check_json_value(value)
    except jsonrpc.InvalidMessage as exc:
        found = value.get("id") if isinstance(value, dict) else None
        return refuse(400, "invalid_message", str(exc), id=found if jsonrpc.is_id(found) else None)
    message: dict[str, Any] = value
    return message


def check_event_id(value: str | None) -> tuple[int, int] | None:
    """A ``Last-Event-ID`` of this front (``STREAM-SEQ``) as numbers, or None when it is not one."""
    found = _EVENT_ID.fullmatch(value.strip()) if value is not None and len(value) <= EVENT_ID_MAX else None
    return (int(found.group(1)), int(found.group(2))) if found else None


# -- eras ------------------------------------------------------------------------------


def modern_version(message: Mapping[str, Any]) -> Any:
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    return meta.get(PROTOCOL_VERSION_META) if isinstance(meta, dict) else None


def is_modern(message: Mapping[str, Any], header_version: str | None) -> bool:
    """2026-07-28 traffic: a version header or ``_meta`` version of the modern era, or ``server/discover``."""
    return (
        header_version in MODERN_VERSIONS
        or message.get("method") == "server/discover"
        or modern_version(message) in MODERN_VERSIONS
    )


def check_legacy_version(header: str | None) -> Refusal | None:
    if header is None or header in LEGACY_VERSIONS:
        return None
    return refuse(
        400,
        "bad_protocol_version",
        f"unsupported MCP-Protocol-Version {header[:40]!r}; this session speaks one of {', '.join(LEGACY_VERSIONS)}",
    )


def check_modern(message: Mapping[str, Any], headers: Mapping[str, str]) -> Refusal | None:
    """The 2026-07-28 request ladder: the per-request ``_meta``, then the headers that mirror the body, then
    the version. The first rung that fails answers."""
    msg_id = message.get("id")
    rid = msg_id if jsonrpc.is_id(msg_id) else None
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict):
        return refuse(
            400,
            "bad_meta",
            f"params._meta must carry {PROTOCOL_VERSION_META!r} and {CLIENT_CAPABILITIES_META!r}",
            code=jsonrpc.INVALID_PARAMS,
            id=rid,
        )
    missing = [key for key in (PROTOCOL_VERSION_META, CLIENT_CAPABILITIES_META) if key not in meta]
    if missing:
        return refuse(
            400, "bad_meta", f"params._meta is missing {', '.join(missing)}", code=jsonrpc.INVALID_PARAMS, id=rid
        )
    version = meta[PROTOCOL_VERSION_META]
    mismatch = _header_mismatch(message, headers, version)
    if mismatch is not None:
        return refuse(400, "header_mismatch", mismatch, code=HEADER_MISMATCH, id=rid)
    if version not in MODERN_VERSIONS:
        return refuse(
            400,
            "bad_protocol_version",
            "Unsupported protocol version",
            code=jsonrpc.UNSUPPORTED_PROTOCOL_VERSION,
            id=rid,
            data={"supported": list(MODERN_VERSIONS), "requested": version},
        )
    return None


def _header_mismatch(message: Mapping[str, Any], headers: Mapping[str, str], version: Any) -> str | None:
    if headers.get("mcp-protocol-version") != version:
        return "the MCP-Protocol-Version header does not match params._meta's protocol version"
    method = message.get("method")
    if method is not None and headers.get("mcp-method") != method:
        return "the Mcp-Method header does not match the body's method"
    key = NAME_BEARING.get(method) if isinstance(method, str) else None
    params = message.get("params")
    value = params.get(key) if key is not None and isinstance(params, dict) else None
    if value is not None and decode_header_value(headers.get("mcp-name")) != value:
        return f"the Mcp-Name header does not match the body's {key!r}"
    return None


def decode_header_value(value: str | None) -> str | None:
    """A mirrored header's value: plain printable ASCII, or ``=?base64?...?=`` for anything else."""
    if value is None:
        return None
    if value.startswith("=?base64?") and value.endswith("?="):
        import base64
        import binascii

        try:
            return base64.b64decode(value[9:-2], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    return value


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8080`` for IPv6) as its parts; ValueError saying what is wrong."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host or not 0 < int(port) < 65536:
        raise ValueError(f"HTTP address {address!r} is not host:port, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)
