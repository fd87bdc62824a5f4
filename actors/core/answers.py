"""What a session says in the server's place, and the few fields it reads from messages (pure).

The JSON-RPC answers a session gives itself (a timeout, a refusal over a
limit, a duplicate id, the cancellation a timed-out request sends on) live
here, so their codes, texts and data are in one place; docs/protocol.rst's
"JSON-RPC errors from the daemon" quotes them.
"""

from __future__ import annotations

from typing import Any

from mcp_troupe.actors.core.era import params_of
from mcp_troupe.actors.core.pending import PendingRequest
from mcp_troupe.transport.wire import jsonrpc
from mcp_troupe.transport.wire.jsonrpc import Message, RequestId


def cancel_notice(request_id: RequestId, reason: str) -> dict[str, Any]:
    return jsonrpc.notification("notifications/cancelled", {"requestId": request_id, "reason": reason})


def timed_out(p: PendingRequest) -> dict[str, Any]:
    timeout_ms = round(p.timeout * 1000)
    return jsonrpc.error(
        p.id, jsonrpc.REQUEST_TIMEOUT, "Request timed out", {"method": p.method, "timeout_ms": timeout_ms}
    )


def timeout_cancel(p: PendingRequest) -> dict[str, Any]:
    reason = f"troupe: request timed out after {round(p.timeout * 1000)} ms"
    return jsonrpc.notification("notifications/cancelled", {"requestId": p.id, "reason": reason})


def too_many_pending(request_id: RequestId, scope: str, current: int, limit: int) -> dict[str, Any]:
    what = "this session" if scope == "session" else "the daemon"
    return jsonrpc.error(
        request_id,
        jsonrpc.TOO_MANY_PENDING,
        f"too many pending requests in {what} ({current} of {limit}); wait for answers or cancel some",
        {"scope": scope, "current": current, "limit": limit},
    )


def duplicate_id(request_id: RequestId) -> dict[str, Any]:
    return jsonrpc.error(
        request_id,
        jsonrpc.INVALID_REQUEST,
        f"request id {request_id!r} is already pending in this session; use a new id for each request",
    )


def progress_token(msg: Message) -> RequestId | None:
    meta = params_of(msg).get("_meta")
    return id_of({"id": meta.get("progressToken")}) if isinstance(meta, dict) else None


def cancelled_id(msg: Message) -> RequestId | None:
    return id_of({"id": params_of(msg).get("requestId")})


def id_of(body: object) -> RequestId | None:
    """The ``id`` of a message (or any map), if it is one a JSON-RPC id can be."""
    return as_id(body.get("id") if isinstance(body, dict) else None)


def as_id(value: object) -> RequestId | None:
    return value if jsonrpc.is_id(value) else None


def as_map(value: object) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def as_str(value: object) -> str | None:
    return value if isinstance(value, str) else None
