"""The records of the router's tables: adapters, client connections, session routes.

The router owns the tables (on the hub's loop thread); the control plane reads
them through `mcp_troupe.actors.daemon.control.DaemonView`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pykka

from mcp_troupe.actors.core.limits import TokenBucket
from mcp_troupe.actors.shells.session import SessionActor


@dataclass(eq=False)
class AdapterLink:
    """A registered adapter: the peer id on the back socket and its sessions."""

    peer: bytes
    server: str
    capacity: int
    pid: int | None = None
    adapter_id: str | None = None
    sessions: set[str] = field(default_factory=set)
    last_seen: float = 0.0

    @property
    def full(self) -> bool:
        return self.capacity > 0 and len(self.sessions) >= self.capacity


@dataclass(eq=False)
class ClientLink:
    """A client connection: its sessions and its session-opening rate."""

    bucket: TokenBucket
    label: str
    """How operators see the connection (``#12 pid 4242``): routing ids are never shown."""
    sessions: set[str] = field(default_factory=set)
    blocked: bool = False
    """Frames for this client wait in the hub: its sessions' servers are paused."""


@dataclass(eq=False, slots=True)
class Route:
    actor: pykka.ActorRef[SessionActor]
    client: bytes
    adapter: AdapterLink
    closing: bool = False
    env: dict[str, str] | None = None
    """What the session brought for its server's environment (``open`` ``env``): every spawn gets it."""
