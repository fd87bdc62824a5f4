"""ZAP (ZeroMQ Authentication Protocol, RFC 27) messages, sans-IO.

The hub answers libzmq's ZAP requests for its ROUTER sockets itself. It uses
ZAP for one thing libzmq offers no other way to do: to give every connection
a routing id of the daemon's making. A ZAP reply may carry ZMTP metadata, and
libzmq takes an ``Identity`` property in it as the peer's routing id,
overriding whatever the peer chose with ``ZMQ_ROUTING_ID``. Peer-chosen ids
are not to be trusted: libzmq 4.3.5 aborts the whole process when the id it
auto-assigns to a new connection is one a peer chose already (the auto ids
are a zero byte and a counter, so a peer can pick the next ones). Ids the
daemon assigns are 16 random bytes whose first byte is never zero, so they
can be neither guessed nor collide with libzmq's own.

This module only builds and parses the messages; `mcp_troupe.transport.hub.loop` owns the
socket.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass
from typing import Final

from zmq.utils import z85

ENDPOINT: Final = "inproc://zeromq.zap.01"
"""Where libzmq sends the ZAP requests of every socket of a context (RFC 27)."""
VERSION: Final = b"1.0"
IDENTITY_BYTES: Final = 16


class ZapError(ValueError):
    """A ZAP request that does not follow RFC 27; it gets no reply."""


@dataclass(frozen=True, slots=True)
class ZapRequest:
    """One connection asking to be let in, as libzmq describes it."""

    envelope: tuple[bytes, ...]
    """The routing parts before the empty delimiter, needed to answer."""
    request_id: bytes
    domain: str
    address: str
    """The peer's address: an IP address for tcp; ``localhost:UID:GID:PID`` for ipc on Linux."""
    mechanism: str
    credentials: tuple[bytes, ...]


def parse_request(parts: list[bytes]) -> ZapRequest:
    """A ZAP request as read from a ROUTER bound at `ENDPOINT`."""
    try:
        split = parts.index(b"")
    except ValueError:
        raise ZapError("no empty delimiter part") from None
    body = parts[split + 1 :]
    if len(body) < 6 or body[0] != VERSION:
        raise ZapError(f"not a ZAP {VERSION.decode()} request ({len(body)} parts)")
    _version, request_id, domain, address, _identity, mechanism, *credentials = body
    return ZapRequest(
        tuple(parts[:split]),
        request_id,
        domain.decode("utf-8", "replace"),
        address.decode("utf-8", "replace"),
        mechanism.decode("ascii", "replace"),
        tuple(credentials),
    )


def z85_key(request: ZapRequest) -> bytes:
    """A CURVE request's client public key in Z85 (as key files hold it), else empty."""
    if request.mechanism != "CURVE" or not request.credentials or len(request.credentials[0]) != 32:
        return b""
    return z85.encode(request.credentials[0])


def new_identity() -> bytes:
    """A routing id no peer can guess and libzmq never assigns (those start with a zero byte)."""
    while True:
        identity = secrets.token_bytes(IDENTITY_BYTES)
        if identity[0] != 0:
            return identity


def property_bytes(name: str, value: bytes) -> bytes:
    """One ZMTP metadata property: name length (1 byte), name, value length (4 bytes), value."""
    encoded = name.encode("ascii")
    return bytes((len(encoded),)) + encoded + struct.pack(">I", len(value)) + value


def reply(
    request: ZapRequest, *, identity: bytes | None, user_id: str = "", status: int = 200, text: str = "OK"
) -> list[bytes]:
    """The reply parts: accept (200, with the routing id to use) or refuse (400)."""
    metadata = property_bytes("Identity", identity) if identity is not None else b""
    return [
        *request.envelope,
        b"",
        VERSION,
        request.request_id,
        str(status).encode(),
        text.encode("utf-8"),
        user_id.encode("utf-8"),
        metadata,
    ]
