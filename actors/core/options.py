"""Session and daemon limits: one frozen dataclass, every default in one place.

``docs/limits.rst`` documents each field; the config file sets them under
``[limits]`` and ``[limits.timeouts]`` (see `mcp_troupe.actors.daemon.config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limits:
    request_timeout: float = 0.0
    """Seconds a request may wait for its response (either direction); 0 = no timeout, as talking
    to the server directly (clients time their requests themselves)."""
    timeouts: Mapping[str, float] = field(default_factory=dict)
    """Per-method timeouts, overriding ``request_timeout``, e.g. ``{"tools/call": 300}``."""
    initialize_timeout: float = 0.0
    """Timeout of ``initialize``, which includes the server process's start-up; 0 = none;
    ``timeouts`` overrides it."""
    progress_resets_timeout: bool = True
    """A progress notification restarts its request's timeout."""
    max_pending_per_session: int = 1000
    max_pending_total: int = 10_000
    max_sessions: int = 1000
    on_session_limit: str = "evict"
    """At ``max_sessions``: ``evict`` the least recently active session, or ``refuse`` the open."""
    evict_after_idle: float = 60.0
    """Seconds a session must have been idle (no message, nothing pending) before it may be
    evicted; an open that finds no such session is refused. 0: any session may be."""
    max_sessions_per_client: int = 0
    """Sessions one client connection may hold at once; 0 = no limit."""
    soft_limit_ratio: float = 0.8
    """Fraction of a limit at which a warning is logged, once per crossing."""
    rate_per_session: float = 0.0
    """Requests per second a session may send (token bucket refill rate); 0 = no limit (the default:
    a client may send as fast as its server answers)."""
    rate_burst: int = 200
    """Token bucket size for ``rate_per_session``."""
    open_rate_per_client: float = 20.0
    """Sessions per second one client connection may open; 0 = no limit."""
    open_burst: int = 50
    open_rate_total: float = 100.0
    """Sessions per second the daemon opens, all clients together; 0 = no limit."""
    open_burst_total: int = 200
    idle_timeout: float = 300.0
    """Seconds without traffic or pending requests before a session is closed; 0 = never."""
    long_running_after: float = 3600.0
    """Session age in seconds after which it is tagged ``long-running``."""
    high_volume_frames: int = 10_000
    """Frames (both directions) after which a session is tagged ``high-volume``."""
    reattach_grace: float = 0.0
    """Seconds a session outlives its client's connection, waiting for an ``attach`` with its resume
    token; 0 = it closes with the connection (``client_gone``). A session can always be attached from
    another connection while its own is alive."""
    reattach_buffer: int = 1000
    """Frames for the client a detached session keeps for its ``attach``; one more closes it (``client_gone``)."""
    passivate_after: float = 0.0
    """Seconds without traffic (and nothing pending) after which a session is passivated: its server process
    stopped, its actor gone, its record kept; its next message brings it back. 0 = never (the default)."""
    max_passivated: int = 100_000
    """Passivated sessions the daemon keeps at once; beyond, idle sessions stay active."""
    max_passivated_bytes: int = 512 * 1024 * 1024
    """Bytes of records the passivated sessions may hold together; beyond, idle sessions stay active."""

    def timeout_for(self, method: str) -> float:
        if method in self.timeouts:
            return self.timeouts[method]
        return self.initialize_timeout if method == "initialize" else self.request_timeout


@dataclass(frozen=True)
class ServerPolicy:
    """What a session does when its server process ends (per server, from its config)."""

    on_exit: str = "fail"
    """``fail``: the session fails and its client is told; ``restart``: a new process
    takes over the same session (the legacy handshake is replayed)."""
    max_restarts: int = 3
    """Restarts per session before it fails anyway."""
    passivate: bool = True
    """Its idle sessions may be passivated (``passivate_after``): false for a server whose state a new process
    would not have."""


ON_EXIT_POLICIES = ("fail", "restart")

PRIORITY_METHODS = frozenset({"initialize", "ping"})
"""Requests that bypass pending and rate limits, so a full session can still be
initialized, probed and (with ``notifications/cancelled`` and ``close``, which
are never limited) cancelled and closed."""

LIMIT_HELP: dict[str, str] = {
    "request_timeout": "seconds a request may wait for its response; 0 = no timeout",
    "initialize_timeout": "seconds initialize may take, server start-up included; 0 = no timeout",
    "progress_resets_timeout": "a progress notification restarts its request's timeout (true/false)",
    "max_pending_per_session": "pending client requests one session may have",
    "max_pending_total": "pending client requests across all sessions",
    "max_sessions": "open sessions",
    "on_session_limit": "at max_sessions: evict (the least recently active) or refuse",
    "soft_limit_ratio": "fraction of a limit that logs a warning",
    "rate_per_session": "requests per second per session; 0 = unlimited",
    "rate_burst": "token bucket size of the request rate",
    "open_rate_per_client": "sessions one client may open per second; 0 = unlimited",
    "open_burst": "token bucket size of the opening rate",
    "open_rate_total": "sessions the daemon opens per second, all clients together; 0 = unlimited",
    "open_burst_total": "token bucket size of the daemon-wide opening rate",
    "evict_after_idle": "seconds a session must be idle before it may be evicted; 0 = any session",
    "max_sessions_per_client": "sessions one client connection may hold; 0 = unlimited",
    "idle_timeout": "seconds without traffic before a session is closed; 0 = never",
    "long_running_after": "session age (s) that tags it long-running",
    "high_volume_frames": "frames that tag a session high-volume",
    "reattach_grace": "seconds a session waits for its client to attach again after its connection ends; 0 = none",
    "reattach_buffer": "frames a detached session keeps for its client's return",
    "passivate_after": "seconds idle before a session is passivated (server stopped until its next message); 0 = off",
    "max_passivated": "passivated sessions kept at once; beyond, idle sessions stay active",
    "max_passivated_bytes": "bytes of records the passivated sessions may hold together; beyond, they stay active",
}
"""One line per `Limits` field, for ``--help``; docs/limits.rst has the full story."""
