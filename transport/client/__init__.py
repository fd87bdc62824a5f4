"""The client library: open sessions on a troupe daemon and exchange MCP messages with them."""

from mcp_troupe.transport.client.library import (
    Client,
    DaemonUnavailable,
    FrameRefused,
    RequestError,
    Session,
    SessionClosed,
    Timeout,
    TroupeError,
)

__all__ = [
    "Client",
    "DaemonUnavailable",
    "FrameRefused",
    "RequestError",
    "Session",
    "SessionClosed",
    "Timeout",
    "TroupeError",
]
