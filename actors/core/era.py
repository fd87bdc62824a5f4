"""MCP's two eras, and what each allows before a session is ready. Pure rules.

* Legacy, stateful (2024-11-05 .. 2025-11-25): ``initialize`` -> result ->
  ``notifications/initialized``. Before the result the client should send only
  pings; before ``initialized`` the server only pings and logging.
* Modern, stateless (2026-07-28): no handshake; every request carries
  ``params._meta["io.modelcontextprotocol/protocolVersion"]``; ``server/discover``.

A session decides its era from the first message that names one and confirms
it when the server accepts that message (a result, not an error). Until then
the choice is tentative, so a dual-era client that probes with
``server/discover``, gets an error from a legacy-only server and falls back to
``initialize`` is served. Once confirmed, a message of the other era is
refused with the error the official SDK uses.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Final

from mcp_troupe.transport.wire.jsonrpc import Message

MODERN_VERSION_KEY: Final = "io.modelcontextprotocol/protocolVersion"
MODERN_VERSIONS: Final = ("2026-07-28",)
LEGACY_VERSIONS: Final = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")

CLIENT_REQUESTS_BEFORE_READY: Final = frozenset({"initialize", "ping"})
CLIENT_NOTIFICATIONS_BEFORE_READY: Final = frozenset(
    {"notifications/initialized", "notifications/cancelled", "notifications/progress"}
)
SERVER_REQUESTS_BEFORE_READY: Final = frozenset({"ping"})
SERVER_NOTIFICATIONS_BEFORE_READY: Final = frozenset(
    {"notifications/message", "notifications/progress", "notifications/cancelled"}
)


class Era(Enum):
    UNKNOWN = "unknown"
    LEGACY = "legacy"
    MODERN = "modern"


def request_era(msg: Message) -> Era:
    """The era a client request belongs to, or UNKNOWN if it does not say."""
    if msg.method == "initialize":
        return Era.LEGACY
    if msg.method == "server/discover" or modern_version(msg) is not None:
        return Era.MODERN
    return Era.UNKNOWN


def modern_version(msg: Message) -> str | None:
    params = msg.body.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    version = meta.get(MODERN_VERSION_KEY) if isinstance(meta, dict) else None
    return version if isinstance(version, str) else None


def params_of(msg: Message) -> dict[str, Any]:
    params = msg.body.get("params")
    return params if isinstance(params, dict) else {}
