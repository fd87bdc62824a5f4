"""What `SessionCore` asks its shell to do. Plain records, never changed once made (frozen, but for the
few made for every message)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcp_troupe.transport.wire.frames import ErrorCode
from mcp_troupe.transport.wire.jsonrpc import RequestId


@dataclass(slots=True)  # not frozen: made for every message, and a frozen __init__ costs 3 times as much
class ToClient:
    msg: dict[str, Any]


@dataclass(slots=True)  # not frozen: made for every message, and a frozen __init__ costs 3 times as much
class ToServer:
    msg: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Refuse:
    """An envelope ``error`` frame to the client about a frame it sent."""

    code: ErrorCode
    message: str
    id: RequestId | None = None


@dataclass(frozen=True, slots=True)
class Opened:
    pid: int


@dataclass(frozen=True, slots=True)
class OpenFailed:
    message: str


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """Tell the client its session is over."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class StopServer:
    reason: str


@dataclass(frozen=True, slots=True)
class Finished:
    """Nothing of the session is left; the shell may stop and be forgotten."""


@dataclass(frozen=True, slots=True)
class Dropped:
    """A message nobody is waiting for; counted and logged, never forwarded."""

    source: str
    reason: str


@dataclass(slots=True)  # not frozen: made for every message, and a frozen __init__ costs 3 times as much
class Schedule:
    """Call `SessionCore.wake` at (or soon after) monotonic time ``at``."""

    at: float


@dataclass(frozen=True, slots=True)
class Warn:
    """Something an operator should know (logged once, at warning level)."""

    message: str


@dataclass(frozen=True, slots=True)
class RespawnServer:
    """The server process ended and the session goes on: start a new one for it."""


@dataclass(frozen=True, slots=True)
class Passivate:
    """The session has been idle for ``passivate_after``: hand it over to the dispatcher as a record."""


@dataclass(frozen=True, slots=True)
class RequestRefused:
    """A client request was refused by a limit: ``session``, ``global`` or ``rate``."""

    reason: str


@dataclass(slots=True)  # not frozen: made for every message, and a frozen __init__ costs 3 times as much
class RequestDone:
    """A client request ended: ``result``, ``error``, ``timeout`` or ``closed``."""

    method: str
    seconds: float
    outcome: str


Output = (
    ToClient
    | ToServer
    | Refuse
    | Opened
    | OpenFailed
    | SessionClosed
    | StopServer
    | Finished
    | Dropped
    | Schedule
    | Warn
    | RespawnServer
    | Passivate
    | RequestRefused
    | RequestDone
)
