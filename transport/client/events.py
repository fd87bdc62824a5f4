"""Subscribe to the daemon's event stream (a ZMQ PUB socket; see docs/operations.rst)."""

from __future__ import annotations

from collections.abc import Iterator

import zmq

from mcp_troupe.transport import discovery
from mcp_troupe.transport.keys import Credentials
from mcp_troupe.transport.runtime import EVENTS_SOCKET


def subscribe(endpoint: str | None = None, prefix: str = "", credentials: Credentials | None = None) -> Iterator[bytes]:
    """Yield each event's JSON payload whose topic starts with ``prefix``, forever.

    PUB/SUB drops what is published before the subscription reaches the daemon
    (ZeroMQ's slow joiner), so start listening before the events of interest.
    On a tcp endpoint, ``credentials`` (default: `Credentials.resolve` from the
    environment) must be an operator's: the stream tells of every session.
    """
    endpoint = endpoint or discovery.find(EVENTS_SOCKET)
    credentials = credentials or Credentials.resolve()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt_string(zmq.SUBSCRIBE, prefix)
    if credentials is not None and endpoint.startswith("tcp://"):
        credentials.apply(sock)
    try:
        sock.connect(endpoint)
        while True:
            _topic, payload = sock.recv_multipart()
            yield payload
    finally:
        sock.close()
        ctx.term()
