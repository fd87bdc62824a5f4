"""`RequestLimits`: a session's own limits on the client's requests, and the words of their refusals (pure).

At most ``max_pending_per_session`` requests pending, at most
``rate_per_session`` a second (``rate_burst`` saved up); the daemon-wide
pending limit is decided by the dispatcher and passed in. A warning is due once
each time the pending count crosses ``soft_limit_ratio`` of its limit.
"""

from __future__ import annotations

from typing import Any

from mcp_troupe.actors.core.answers import too_many_pending
from mcp_troupe.actors.core.limits import SoftLimit, TokenBucket
from mcp_troupe.actors.core.options import Limits
from mcp_troupe.transport.wire import jsonrpc
from mcp_troupe.transport.wire.jsonrpc import RequestId


class RequestLimits:
    def __init__(self, limits: Limits, now: float) -> None:
        self.limits = limits
        self._bucket = TokenBucket(limits.rate_per_session, limits.rate_burst, now)
        self._soft = SoftLimit(limits.max_pending_per_session, limits.soft_limit_ratio)

    def refusal(
        self, request_id: RequestId, pending: int, now: float, over_global: tuple[int, int] | None
    ) -> tuple[dict[str, Any], str] | None:
        """The error for a request over a limit, and which limit (``global``, ``session``, ``rate``); else None.

        ``pending``: the session's requests pending before this one; ``over_global``: ``(current, limit)``
        when the dispatcher found the daemon-wide limit reached.
        """
        if over_global is not None:
            return too_many_pending(request_id, "global", *over_global), "global"
        limits = self.limits
        if pending >= limits.max_pending_per_session:
            return too_many_pending(request_id, "session", pending, limits.max_pending_per_session), "session"
        wait = self._bucket.take(now)
        if wait <= 0:
            return None
        answer = jsonrpc.error(
            request_id,
            jsonrpc.RATE_LIMITED,
            f"rate limit of {limits.rate_per_session:g} requests/s exceeded; retry after the delay in data",
            {"retry_after_ms": max(1, round(wait * 1000)), "rate": limits.rate_per_session, "burst": limits.rate_burst},
        )
        return answer, "rate"

    def warning(self, pending: int) -> str | None:
        """What to warn, once each time ``pending`` crosses the soft limit upwards."""
        if not self._soft.crossed(pending):
            return None
        percent = round(self.limits.soft_limit_ratio * 100)
        return f"{pending} requests pending, {percent}% or more of the limit {self.limits.max_pending_per_session}"
