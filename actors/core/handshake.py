"""`Handshake`: how a session's protocol era is chosen and confirmed, and what it learned on the way (pure).

A legacy session is chosen by ``initialize`` and confirmed by its result; a
2026-07-28 session by its first stateless request and its answer. Until the
answer comes, the choice can be undone (an error answer). The legacy
``initialize`` is kept: a restarted server process is given it again. What
the peers said of themselves (client and server info, capabilities, the
negotiated version) is kept in `SessionInfo`, for operators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mcp_troupe.actors.core.answers import as_map, as_str, id_of
from mcp_troupe.actors.core.era import MODERN_VERSIONS, Era, modern_version, params_of, request_era
from mcp_troupe.actors.core.pending import PendingTable
from mcp_troupe.actors.core.records import RecordError, SessionRecord
from mcp_troupe.transport.wire import jsonrpc
from mcp_troupe.transport.wire.jsonrpc import Kind, Message, RequestId


@dataclass
class SessionInfo:
    """What the session learned about its peers, and its traffic."""

    era: Era = Era.UNKNOWN
    era_confirmed: bool = False
    protocol_version: str | None = None
    client_info: dict[str, Any] | None = None
    server_info: dict[str, Any] | None = None
    client_capabilities: dict[str, Any] | None = None
    server_capabilities: dict[str, Any] | None = None
    pid: int | None = None
    frames: dict[str, int] = field(default_factory=lambda: {"client_to_server": 0, "server_to_client": 0})


class Handshake:
    def __init__(self, info: SessionInfo) -> None:
        self.info = info
        self.initialize_id: RequestId | None = None
        """The legacy ``initialize`` request's id, once sent."""
        self.initialize_msg: dict[str, Any] | None = None
        self.initialized_result = False
        """The server answered ``initialize`` with a result."""
        self._deciding_id: RequestId | None = None

    def restore(self, record: SessionRecord) -> None:
        """What a stored session had learned, confirmed: `RecordError` unless it was active (or passivated)."""
        try:
            era = Era(record.era)
        except ValueError:
            raise RecordError(f"unknown era {record.era!r}") from None
        if record.state not in ("active", "passivated") or era is Era.UNKNOWN:
            raise RecordError(f"a {record.state} session of era {record.era} cannot be restored")
        if era is Era.LEGACY and record.initialize is None:
            raise RecordError("a legacy session stored without its initialize request")
        info = self.info
        info.era, info.era_confirmed, info.protocol_version = era, True, record.protocol_version
        info.client_info, info.client_capabilities = record.client_info, record.client_capabilities
        info.server_info, info.server_capabilities = record.server_info, record.server_capabilities
        info.pid = record.pid
        self.initialize_msg = record.initialize
        self.initialized_result = era is Era.LEGACY

    def pending(self, from_client: PendingTable) -> bool:
        """The legacy ``initialize`` is out and its result has not come back yet."""
        return self.initialize_id is not None and not self.initialized_result and self.initialize_id in from_client

    def cancels_initialize(self, body: object) -> bool:
        """A ``notifications/cancelled`` for the ``initialize``: refused at once, never held."""
        if not isinstance(body, dict) or body.get("method") != "notifications/cancelled":
            return False
        params = body.get("params")
        return isinstance(params, dict) and id_of({"id": params.get("requestId")}) == self.initialize_id

    def note(self, msg: Message) -> None:
        """A client request on its way to the server: it may choose the era."""
        era = request_era(msg)
        info = self.info
        if era is Era.UNKNOWN or info.era_confirmed:
            return
        info.era = era
        self._deciding_id = msg.id
        params = params_of(msg)
        if era is Era.LEGACY:
            self.initialize_id = msg.id
            self.initialize_msg = msg.body
            info.client_info = as_map(params.get("clientInfo"))
            info.client_capabilities = as_map(params.get("capabilities"))
            info.protocol_version = as_str(params.get("protocolVersion"))
        else:
            info.protocol_version = modern_version(msg) or info.protocol_version
            meta = as_map(params.get("_meta")) or {}
            info.client_info = as_map(meta.get("io.modelcontextprotocol/clientInfo")) or info.client_info

    def answered(self, msg: Message) -> bool:
        """The server's response ``msg``: if it answers the request that chose the era, confirm or undo it.

        True when it confirms the 2026-07-28 era: the session is then ready, with no handshake of its own.
        """
        if msg.id != self._deciding_id:
            return False
        self._deciding_id = None
        info = self.info
        if msg.kind is Kind.ERROR:
            info.era = Era.UNKNOWN
            self.initialize_id = None
            return False
        info.era_confirmed = True
        if info.era is not Era.LEGACY:
            return True
        result = as_map(msg.body.get("result")) or {}
        info.protocol_version = as_str(result.get("protocolVersion")) or info.protocol_version
        info.server_info = as_map(result.get("serverInfo"))
        info.server_capabilities = as_map(result.get("capabilities"))
        self.initialized_result = True
        return False

    def era_refusal(self, msg: Message) -> dict[str, Any] | None:
        """The error for a request of the other era than the one this session confirmed, else None."""
        era, info = request_era(msg), self.info
        if not info.era_confirmed or era is Era.UNKNOWN or era is info.era:
            return None
        if info.era is Era.LEGACY:
            return jsonrpc.error(
                msg.id,
                jsonrpc.INVALID_REQUEST,
                "this session completed the legacy initialize handshake; 2026-07-28 (stateless) requests are "
                "refused: open a new session to use that protocol version",
            )
        requested = params_of(msg).get("protocolVersion")
        return jsonrpc.error(
            msg.id,
            jsonrpc.UNSUPPORTED_PROTOCOL_VERSION,
            "this session speaks the stateless 2026-07-28 protocol; initialize is refused: open a new session "
            "for the legacy handshake",
            {"supported": list(MODERN_VERSIONS), "requested": requested},
        )

    def replay(self, replay_id: str) -> dict[str, Any] | None:
        """The ``initialize`` to give a new server process of a legacy session, under ``replay_id``; else None."""
        if self.info.era is Era.LEGACY and self.initialized_result and self.initialize_msg is not None:
            return {**self.initialize_msg, "id": replay_id}
        return None
