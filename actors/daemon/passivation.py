"""`Passivated`: what the daemon keeps of a passivated session (its record, encoded), and how operators see it.

A passivated session has no actor and no server process: the dispatcher keeps this entry, the
store keeps its record (state ``passivated``). The record is kept encoded, about a kilobyte,
because idle sessions are many and decoding is needed only to bring one back or to list it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mcp_troupe.actors.core.adapters import AdapterLink
from mcp_troupe.actors.core.records import RECORD_VERSION, SessionRecord, decode_record


@dataclass(eq=False, slots=True)
class Passivated:
    record: bytes
    """`encode_record` of the session's record."""
    server: str
    client: bytes
    """The client connection that owns it; b"": none yet (restored from the store, waiting for an ``attach``)."""
    token_sha256: str = field(repr=False)
    owner_key: bytes
    since: float
    """When it was passivated (the daemon's clock)."""
    created: float
    """When it was opened, on the daemon's clock (for one restored from the store: when it was restored)."""
    env: dict[str, str] | None = field(default=None, repr=False)
    """The values the session brought for its server (kept in memory only, for its next process)."""
    stopping: AdapterLink | None = None
    """The adapter whose server process for it has not reported ``exited`` yet."""
    seq: int = 0
    """The ``seq`` of the last frame its client was sent: the next actor goes on from it."""
    stderr: bool = False
    """Its client asked for its server's stderr lines (``open`` ``stderr``)."""

    def decoded(self, sid: str) -> SessionRecord:
        """The record; `RecordError` if it cannot be used."""
        return decode_record(sid, RECORD_VERSION, self.record)


def snapshot(sid: str, entry: Passivated, now: float, *, detached: bool) -> dict[str, Any]:
    """A passivated session as ``sessions.list`` shows it: the keys of an active one's snapshot."""
    record = entry.decoded(sid)
    return {
        "sid": sid,
        "server": record.server,
        "state": "passivated",
        "failure": None,
        "era": record.era,
        "era_confirmed": True,
        "protocol_version": record.protocol_version,
        "client_info": record.client_info,
        "server_info": record.server_info,
        "pid": None,
        "age_s": round(now - entry.created, 3),
        "idle_s": round(now - entry.since, 3),
        "frames": {"client_to_server": 0, "server_to_client": 0},
        "dropped": 0,
        "pending_count": {"client_to_server": 0, "server_to_client": 0},
        "pending": [],
        "tags": ["passivated"],
        "client": record.client_label,
        "opened_at": record.created_at,
        "restarts": record.restarts,
        "detached": detached,
        "restored": False,
    }
