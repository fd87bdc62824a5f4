"""Which connections a ROUTER socket has, sans-IO.

libzmq tells a ROUTER's owner little about its peers: a socket monitor
reports each connection accepted and each one that ended, by file
descriptor; ZAP (see `mcp_troupe.transport.hub.zap`) reports each connection let in, with
its address and the routing id the daemon gave it; a received message says
which descriptor it came from (``ZMQ_SRCFD``). `PeerTable` puts the three
together, so the hub knows, for every routing id it sees, which connection it
is, and can tell the daemon when that connection ends (a client process that
was killed, or one silent past its heartbeat timeout).

Ordering makes the join sound: libzmq reports a connection's end before the
same descriptor can be accepted again, and accepts it before the handshake
(and so before ZAP, and before any message), so the hub reads the monitor up
to date before it binds a routing id to a descriptor.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

ADMISSION_TTL: Final = 60.0
"""Seconds a ZAP admission waits for its connection's first message before it is forgotten."""
ENDED_KEPT: Final = 8192
"""Routing ids of ended connections remembered, so a message of theirs read late is not taken
for a new connection's (ids the daemon gives are never given again)."""


@dataclass(slots=True)
class Connection:
    """One connection of a peer to a ROUTER socket."""

    number: int
    """Shown to operators in place of the routing id, which is never disclosed."""
    fd: int | None = None
    identity: bytes | None = None
    """The routing id, once a message from the connection has been seen."""
    address: str = ""
    mechanism: str = ""
    user: str = ""
    """The name of the peer's CurveZMQ key (its file's name), or empty."""
    key: bytes = b""
    """The peer's CurveZMQ public key (Z85), or empty."""
    rights: frozenset[str] = frozenset()
    """What the peer may do, decided when ZAP let it in (`mcp_troupe.transport.keys`)."""
    assigned: bool = False
    """The routing id is the one the daemon gave through ZAP (False: the peer kept its own)."""

    @property
    def label(self) -> str:
        """``#12 pid 4242`` for a local peer, ``#12 10.0.0.3`` for a remote one (``#12 alice@10.0.0.3`` with
        its CurveZMQ key's name), ``#12`` if unknown."""
        pid = address_pid(self.address)
        if pid is not None:
            return f"#{self.number} pid {pid}"
        where = f"{self.user}@{self.address}" if self.user else self.address
        return f"#{self.number} {where}" if where else f"#{self.number}"


@dataclass(frozen=True, slots=True)
class Admission:
    """What ZAP learnt of a connection it let in."""

    address: str
    mechanism: str
    user: str = ""
    key: bytes = b""
    rights: frozenset[str] = frozenset()


@dataclass(slots=True)
class _Admitted:
    admission: Admission
    at: float


@dataclass
class PeerTable:
    """Connections of one ROUTER, by descriptor and by routing id."""

    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _by_fd: dict[int, Connection] = field(default_factory=dict)
    _by_identity: dict[bytes, Connection] = field(default_factory=dict)
    max_admitted: int = 8192
    """Admissions kept at most (a peer that connects and leaves without a word leaves one for
    `ADMISSION_TTL`); beyond, the oldest is forgotten."""
    _admitted: dict[bytes, _Admitted] = field(default_factory=dict)
    _ended: OrderedDict[bytes, None] = field(default_factory=OrderedDict)
    accepted: int = 0
    ended: int = 0

    def accepted_fd(self, fd: int) -> Connection | None:
        """The monitor saw a connection accepted on ``fd``; returns a connection it replaces, if any."""
        self.accepted += 1
        stale = self._by_fd.pop(fd, None)
        self._by_fd[fd] = Connection(next(self._numbers), fd)
        return self._forget(stale)

    def admitted(self, identity: bytes, admission: Admission, now: float) -> None:
        """ZAP let a connection in under ``identity``."""
        self._admitted[identity] = _Admitted(admission, now)
        if len(self._admitted) > self.max_admitted:
            del self._admitted[next(iter(self._admitted))]

    def seen(self, identity: bytes, fd: int | None, user: str | None = None) -> Connection | None:
        """The first message from ``identity`` came in on ``fd``: bind them.

        None if ``identity`` is that of a connection that has ended (its last
        messages, read after its end was): there is nobody to serve. A connection that kept a routing id
        of its own (its handshake was read after the daemon's reply, on a loaded machine) still gets its
        admission: the oldest one ZAP gave to the same user id (``user``, from the message's metadata:
        the key's name over CurveZMQ; empty otherwise, where every admission of a socket grants alike).
        """
        if identity in self._ended and identity not in self._admitted:
            return None
        self._ended.pop(identity, None)
        conn = self._by_fd.get(fd) if fd is not None else None
        if conn is None or conn.identity is not None:
            conn = Connection(next(self._numbers), fd)
            if fd is not None:
                self._by_fd[fd] = conn
        conn.identity = identity
        admitted = self._admitted.pop(identity, None)
        assigned = admitted is not None
        if admitted is None and user is not None:
            match = next((i for i, a in self._admitted.items() if a.admission.user == user), None)
            admitted = self._admitted.pop(match) if match is not None else None
        if admitted is not None:
            a = admitted.admission
            conn.address, conn.mechanism, conn.user, conn.key, conn.rights = (
                a.address,
                a.mechanism,
                a.user,
                a.key,
                a.rights,
            )
            conn.assigned = assigned
        self._by_identity[identity] = conn
        return conn

    def get(self, identity: bytes) -> Connection | None:
        return self._by_identity.get(identity)

    def __contains__(self, identity: object) -> bool:
        return identity in self._by_identity

    def disconnected(self, fd: int) -> Connection | None:
        """The monitor saw the connection on ``fd`` end; returns it if a routing id was bound to it."""
        conn = self._by_fd.pop(fd, None)
        if conn is not None:
            self.ended += 1
        return self._forget(conn)

    def revoke(self, allowed: Callable[[bytes], frozenset[str] | None]) -> list[Connection]:
        """Keys changed: ``allowed(key)`` gives a key's rights now, or None if it is no longer let in.

        Connections (and admissions) of keys no longer let in are forgotten, their routing ids
        remembered as ended so that what they send is dropped; returns those connections. The
        others take their keys' rights now.
        """
        revoked = []
        for identity, admitted in list(self._admitted.items()):
            if admitted.admission.key and allowed(admitted.admission.key) is None:
                del self._admitted[identity]
        for conn in list(self._by_identity.values()):
            if not conn.key:
                continue
            rights = allowed(conn.key)
            if rights is not None:
                conn.rights = rights
                continue
            self._forget(conn)
            self._ended[conn.identity] = None  # type: ignore[index]  # bound: it was in _by_identity
            revoked.append(Connection(conn.number, conn.fd, conn.identity, conn.address, conn.mechanism, conn.user))
            conn.identity = None
        return revoked

    def expire(self, now: float) -> int:
        """Forget admissions whose connection never sent anything; returns how many."""
        stale = [identity for identity, a in self._admitted.items() if now - a.at >= ADMISSION_TTL]
        for identity in stale:
            del self._admitted[identity]
        return len(stale)

    def _forget(self, conn: Connection | None) -> Connection | None:
        if conn is None or conn.identity is None:
            return None
        if self._by_identity.get(conn.identity) is conn:
            del self._by_identity[conn.identity]
        if conn.assigned:
            self._ended[conn.identity] = None
            if len(self._ended) > ENDED_KEPT:
                self._ended.popitem(last=False)
        return conn

    @property
    def open(self) -> int:
        """Connections accepted and not yet ended."""
        return len(self._by_fd)

    def __len__(self) -> int:
        return len(self._by_identity)


def address_pid(address: str) -> int | None:
    """The peer's process id from an ipc peer address (``localhost:UID:GID:PID`` on Linux), else None."""
    fields = address.split(":")
    return int(fields[3]) if len(fields) == 4 and fields[3].isdigit() else None


def address_uid(address: str) -> int | None:
    """The peer's user id from an ipc peer address, else None."""
    fields = address.split(":")
    return int(fields[1]) if len(fields) == 4 and fields[1].isdigit() else None
