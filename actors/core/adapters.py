"""`AdapterTable`: the adapters registered on the back socket, where sessions go, and who is waiting (sans-IO).

An adapter is known by its connection (``peer``) and, when it gives one, by
its ``adapter_id``: an adapter that reconnects with the same id keeps its
sessions. New sessions go to the least loaded adapter of their server that
has room. A session whose adapter was lost waits ("parked") for another
adapter of its server, up to a deadline. The table decides; the dispatcher
carries out what it decides (frames, messages to sessions), passing the time in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from mcp_troupe.transport.wire.frames import ErrorCode, FrameError


@dataclass(eq=False)
class AdapterLink:
    """A registered adapter: the peer id on the back socket and its sessions."""

    peer: bytes
    server: str
    capacity: int
    """Sessions it takes at most; 0: no limit."""
    pid: int | None = None
    adapter_id: str | None = None
    sessions: set[str] = field(default_factory=set)
    last_seen: float = 0.0
    retiring: bool = False
    """It outlived the daemon that started it: it keeps the sessions it has, and is given no new one."""
    vouches: bool = False
    """Its ``checked`` messages are taken as plain JSON unwalked (its connection has the ``vouch`` right)."""

    @property
    def full(self) -> bool:
        return self.capacity > 0 and len(self.sessions) >= self.capacity


@dataclass(frozen=True, slots=True)
class Registration:
    link: AdapterLink
    new: bool
    """No adapter with this ``adapter_id`` was known: a new one."""
    reconnected: bool
    """An adapter known by its ``adapter_id`` came back on a new connection: its sessions follow it."""
    replaced: AdapterLink | None
    """The adapter this connection was registered as before, now gone (its sessions with it)."""


class AdapterTable:
    def __init__(self, adapter_timeout: float, respawn_timeout: float) -> None:
        self.adapter_timeout = adapter_timeout
        """Seconds of silence (no frame, no heartbeat) after which an adapter counts as lost."""
        self.respawn_timeout = respawn_timeout
        """Seconds a parked session waits for an adapter of its server."""
        self._by_peer: dict[bytes, AdapterLink] = {}
        self._parked: dict[str, tuple[str, float]] = {}

    # -- the table -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_peer)

    def __iter__(self) -> Iterator[AdapterLink]:
        return iter(list(self._by_peer.values()))

    def get(self, peer: bytes) -> AdapterLink | None:
        return self._by_peer.get(peer)

    def servers(self) -> list[str]:
        return sorted({link.server for link in self._by_peer.values()})

    def register(
        self,
        peer: bytes,
        server: str,
        capacity: int,
        pid: int | None,
        adapter_id: str | None,
        now: float,
        *,
        retiring: bool = False,
    ) -> Registration:
        known = next((a for a in self._by_peer.values() if adapter_id and a.adapter_id == adapter_id), None)
        replaced = self._by_peer.get(peer)
        if replaced is not None and replaced is not known:
            self.remove(replaced)  # one connection, one adapter
        else:
            replaced = None
        reconnected = known is not None and known.peer != peer
        if known is not None:
            if reconnected:
                del self._by_peer[known.peer]
                known.peer = peer
                self._by_peer[peer] = known
            link = known
        else:
            link = self._by_peer[peer] = AdapterLink(peer, server, max(0, capacity), pid, adapter_id)
        link.last_seen = now
        link.retiring = link.retiring or retiring
        return Registration(link, known is None, reconnected, replaced)

    def seen(self, link: AdapterLink, now: float) -> None:
        link.last_seen = now

    def remove(self, link: AdapterLink) -> None:
        if self._by_peer.get(link.peer) is link:
            del self._by_peer[link.peer]

    def silent(self, now: float) -> list[AdapterLink]:
        """Adapters not heard from for longer than ``adapter_timeout``: lost, for the caller to forget."""
        return [a for a in self._by_peer.values() if now - a.last_seen > self.adapter_timeout]

    # -- placement -------------------------------------------------------------------

    def pick(self, server: str, ref: int | str) -> AdapterLink:
        """Where a new session of ``server`` goes; refused (`FrameError`) if nowhere."""
        if not any(a.server == server for a in self._by_peer.values()):
            known = ", ".join(self.servers()) or "none"
            raise FrameError(
                ErrorCode.UNKNOWN_SERVER, f"no server named {server!r} is registered; known servers: {known}", ref=ref
            )
        adapter = self.free(server)
        if adapter is None:
            message = f"every adapter of server {server!r} is at its session capacity; close a session or add adapters"
            raise FrameError(ErrorCode.SERVER_BUSY, message, ref=ref)
        return adapter

    def free(self, server: str) -> AdapterLink | None:
        """The adapter of ``server`` with the fewest sessions and room for one more."""
        free = [a for a in self._by_peer.values() if a.server == server and not a.full and not a.retiring]
        return min(free, key=lambda a: len(a.sessions)) if free else None

    def is_live(self, link: AdapterLink) -> bool:
        return self._by_peer.get(link.peer) is link

    # -- sessions waiting for an adapter ----------------------------------------------

    def park(self, sid: str, server: str, now: float) -> bool:
        """``sid`` waits for an adapter of ``server``; False if it was waiting already."""
        if sid in self._parked:
            return False
        self._parked[sid] = (server, now + self.respawn_timeout)
        return True

    def unpark(self, sid: str) -> None:
        self._parked.pop(sid, None)

    def parked_for(self, server: str) -> list[str]:
        return [sid for sid, (name, _deadline) in self._parked.items() if name == server]

    def expired(self, now: float) -> list[tuple[str, str]]:
        """Parked sessions whose wait is over, with their server: taken off the table."""
        due = [(sid, server) for sid, (server, deadline) in self._parked.items() if now >= deadline]
        for sid, _server in due:
            del self._parked[sid]
        return due
