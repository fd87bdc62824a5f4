"""troupe's transport: the wire envelope, JSON-RPC classification, the hub,
the client library and the stdio server adapter. Imports nothing from `actors`.
"""

from transport.client import (
    Client,
    DaemonUnavailable,
    FrameRefused,
    RequestError,
    Session,
    SessionClosed,
    Timeout,
    TroupeError,
)
from transport.frames import VERSION, ErrorCode, FrameError

__all__ = [
    "VERSION",
    "Client",
    "DaemonUnavailable",
    "ErrorCode",
    "FrameError",
    "FrameRefused",
    "RequestError",
    "Session",
    "SessionClosed",
    "Timeout",
    "TroupeError",
]
