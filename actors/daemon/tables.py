"""A session's route: its actor, its client's connection, its adapter (the dispatcher's table of them).

The dispatcher owns the tables (on the hub's loop thread); the control plane reads
them through `mcp_troupe.actors.daemon.control.DaemonView`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pykka

from mcp_troupe.actors.core.adapters import AdapterLink
from mcp_troupe.actors.shells.session import SessionActor


@dataclass(eq=False, slots=True)
class Route:
    actor: pykka.ActorRef[SessionActor]
    client: bytes
    adapter: AdapterLink
    closing: bool = False
    env: dict[str, str] | None = None
    """What the session brought for its server's environment (``open`` ``env``): every spawn gets it."""
    token_sha256: str = field(default="", repr=False)
    """SHA-256 (hex) of the resume token (``opened``), which an ``attach`` must bring; the token itself is
    kept nowhere in the daemon, so a restored session (whose store holds only this) is attached alike."""
    owner_key: bytes = b""
    """The CurveZMQ public key of the client that opened it, if any: only that key may attach it."""
    old_exit: bool = False
    """Reactivated before the server process it was passivated from had exited, on the same adapter: its
    ``spawn`` waits for that ``exited`` (a session id names one process of an adapter at a time)."""
