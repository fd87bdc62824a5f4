"""`Admission`: the daemon-wide rules for opening sessions and admitting requests (sans-IO).

Per client: at most ``max_sessions_per_client`` sessions, opened no faster
than ``open_rate_per_client``; for the daemon: opened no faster than
``open_rate_total``, at most ``max_sessions`` open (room is made by evicting a
session idle for ``evict_after_idle``, chosen by the caller, or the open is
refused), at most ``max_pending_total`` requests pending. A refusal is a
`FrameError` with the code, the message a client shows and the data it can act
on (``retry_after_ms``, ``current``, ``limit``). The time is passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mcp_troupe.actors.core.limits import GlobalPending, SoftLimit, TokenBucket
from mcp_troupe.actors.core.options import Limits
from mcp_troupe.transport.wire.frames import ErrorCode, FrameError


@dataclass(eq=False)
class ClientLink:
    """A client connection: its sessions and its session-opening rate."""

    bucket: TokenBucket
    label: str
    """How operators see the connection (``#12 pid 4242``): routing ids are never shown."""
    sessions: set[str] = field(default_factory=set)
    blocked: bool = False
    """Frames for this client wait in the hub: its sessions' servers are paused."""


class Admission:
    def __init__(self, limits: Limits, now: float) -> None:
        self.limits = limits
        self.pending = GlobalPending(limits.max_pending_total)
        self._total = TokenBucket(limits.open_rate_total, limits.open_burst_total, now)
        self._pending_soft = SoftLimit(limits.max_pending_total, limits.soft_limit_ratio)
        self._sessions_soft = SoftLimit(limits.max_sessions, limits.soft_limit_ratio)

    def new_client(self, label: str, now: float) -> ClientLink:
        limits = self.limits
        return ClientLink(TokenBucket(limits.open_rate_per_client, limits.open_burst, now), label)

    def check_open(self, client: ClientLink, ref: int | str, now: float) -> None:
        """Refuse (`FrameError`) a session ``client`` may not open now; else take its tokens."""
        limits = self.limits
        held = len(client.sessions)
        if limits.max_sessions_per_client and held >= limits.max_sessions_per_client:
            raise FrameError(
                ErrorCode.TOO_MANY_SESSIONS,
                f"this client holds {held} sessions, its limit (max_sessions_per_client); close one first",
                ref=ref,
                data={"scope": "client", "current": held, "limit": limits.max_sessions_per_client},
            )
        for bucket, what, rate, scope in (
            (client.bucket, "this client opens", limits.open_rate_per_client, "client"),
            (self._total, "clients open", limits.open_rate_total, "global"),
        ):
            wait = bucket.take(now)
            if wait > 0:
                raise FrameError(
                    ErrorCode.RATE_LIMITED,
                    f"{what} sessions faster than {rate:g}/s; retry after data.retry_after_ms",
                    ref=ref,
                    data={"retry_after_ms": max(1, round(wait * 1000)), "scope": scope},
                )

    def room(self, open_sessions: int, victim: Callable[[], str | None], ref: int | str) -> str | None:
        """At ``max_sessions``: the session to evict (``victim()``, when evicting is the policy), or refused.

        None: there is room without evicting.
        """
        limits = self.limits
        if open_sessions < limits.max_sessions:
            return None
        evicting = limits.on_session_limit == "evict"
        chosen = victim() if evicting else None
        if chosen is not None:
            return chosen
        why = (
            f"and none has been idle for {limits.evict_after_idle:g}s (evict_after_idle)"
            if evicting
            else "(on_session_limit = refuse)"
        )
        raise FrameError(
            ErrorCode.TOO_MANY_SESSIONS,
            f"the daemon has {open_sessions} sessions open, its limit (max_sessions), {why}; "
            "close one first or retry later",
            ref=ref,
            data={"scope": "global", "current": open_sessions, "limit": limits.max_sessions},
        )

    def sessions_alarm(self, open_sessions: int) -> bool:
        """True once each time the open sessions cross the soft limit upwards."""
        return self._sessions_soft.crossed(open_sessions)

    def pending_alarm(self) -> bool:
        """True once each time the pending requests cross the soft limit upwards."""
        return self._pending_soft.crossed(self.pending.count)
