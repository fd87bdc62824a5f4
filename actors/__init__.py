"""troupe's daemon: session actors, the router, configuration and the CLI.

Layering: `transport` (frames, hub, client library, adapter) knows nothing of
this package; this package wires actors to the transport.
"""

from actors.config import DaemonConfig, ServerConfig, load
from actors.daemon import Daemon
from actors.session import SessionActor
from actors.session_core import Era, SessionCore
from actors.state import IllegalTransition, SessionStateMachine, State

__all__ = [
    "Daemon",
    "DaemonConfig",
    "Era",
    "IllegalTransition",
    "ServerConfig",
    "SessionActor",
    "SessionCore",
    "SessionStateMachine",
    "State",
    "load",
]
