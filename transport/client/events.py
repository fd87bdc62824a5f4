"""Subscribe to the daemon's event stream (a ZMQ PUB socket; see docs/operations.rst)."""

from __future__ import annotations

from collections.abc import Iterator

import zmq

from mcp_troupe.transport import discovery
from mcp_troupe.transport.runtime import EVENTS_SOCKET


def subscribe(endpoint: str | None = None, prefix: str = "") -> Iterator[bytes]:
    """Yield each event's JSON payload whose topic starts with ``prefix``, forever.

    PUB/SUB drops what is published before the subscription reaches the daemon
    (ZeroMQ's slow joiner), so start listening before the events of interest.
    """
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt_string(zmq.SUBSCRIBE, prefix)
    try:
        sock.connect(endpoint or discovery.find(EVENTS_SOCKET))
        while True:
            _topic, payload = sock.recv_multipart()
            yield payload
    finally:
        sock.close()
        ctx.term()
