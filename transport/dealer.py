"""What every DEALER that talks to the daemon shares: its socket options, a reachability check, `DealerLink`.

Options (see docs/protocol.rst, "Transport"):

* ``ZMQ_HEARTBEAT_IVL`` = 1 s: the peer's own ZMTP pings tell the daemon it
  is alive even while its application reads nothing (a client silent past
  the daemon's ``client_timeout`` is taken to be gone, its sessions closed);
* ``ZMQ_HEARTBEAT_TIMEOUT`` off by default: a client that stops reading must
  not drop its own connection (its sessions would go with it); a daemon that
  exits is noticed at once anyway, by the connection ending.
"""

from __future__ import annotations

import errno
import socket
from collections import deque
from collections.abc import Iterator
from typing import Final

import zmq
from zmq.utils.monitor import recv_monitor_message

from mcp_troupe.transport.keys import Credentials
from mcp_troupe.transport.runtime import ipc_path

HEARTBEAT_MS: Final = 1000
_HANDSHAKE_FAILED: Final = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_WATCHED: Final = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | _HANDSHAKE_FAILED


def configure(sock: zmq.Socket[bytes], *, heartbeat_ms: int = HEARTBEAT_MS, timeout_ms: int = 0) -> None:
    sock.setsockopt(zmq.HEARTBEAT_IVL, heartbeat_ms)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, timeout_ms)


def unreachable(endpoint: str) -> str | None:
    """Why nobody can be listening at an ``ipc://`` endpoint, or None if someone may be.

    A socket file with no daemon behind it (left by one that was killed)
    refuses a connection at once; libzmq would instead retry it quietly
    forever, so this is checked before connecting.
    """
    path = ipc_path(endpoint)
    if path is None:
        return None
    if not path.exists():
        return f"no troupe daemon at {endpoint} (socket file missing)"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except ConnectionRefusedError:
        return f"no troupe daemon at {endpoint} (the socket file is left from one that is gone)"
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
            return f"no troupe daemon at {endpoint} ({exc.strerror})"
        if exc.errno == errno.EACCES:
            return f"cannot reach {endpoint}: permission denied (the daemon runs as another user?)"
        return None
    finally:
        probe.close()
    return None


class DealerLink:
    """A DEALER to the daemon with its socket monitor and its outbox: the part of a peer's loop that the
    client library, ``troupe adapter`` and ``troupe connect`` share. One thread uses it, the program's loop.

    ``send`` never blocks and never drops: what the socket does not take now waits in `outbox`, in order,
    and goes when the socket reports room (``POLLOUT``, which `register` asks for while frames wait).
    `events` reads the monitor: `connected` once a connection is made (its ZMTP handshake done),
    `disconnected` once one is lost, `handshake_failure` when the daemon's handshake fails.
    """

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        endpoint: str,
        *,
        heartbeat_ms: int = HEARTBEAT_MS,
        timeout_ms: int = 0,
        linger_ms: int = 1000,
        reconnect_ivl_ms: int | None = None,
        reconnect_ivl_max_ms: int | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.socket: zmq.Socket[bytes] = context.socket(zmq.DEALER)
        self.socket.linger = linger_ms
        configure(self.socket, heartbeat_ms=heartbeat_ms, timeout_ms=timeout_ms)
        if reconnect_ivl_ms is not None:
            self.socket.reconnect_ivl = reconnect_ivl_ms
        if reconnect_ivl_max_ms is not None:
            self.socket.reconnect_ivl_max = reconnect_ivl_max_ms
        self.secure = credentials is not None and endpoint.startswith("tcp://")
        """CurveZMQ is used: keys were given and the endpoint is tcp (ipc relies on the runtime directory)."""
        if self.secure:
            credentials.apply(self.socket)  # type: ignore[union-attr]  # secure implies credentials
        self.monitor: zmq.Socket[bytes] = self.socket.get_monitor_socket(_WATCHED)
        self.outbox: deque[bytes] = deque()
        self.connected = False
        """A connection to the daemon was made (and maybe lost since)."""
        self.disconnected = False
        """A connection to the daemon was lost."""
        self.handshake_failure: str | None = None
        """Why the daemon's handshake failed, the last time it did (its key, or ours, is wrong)."""

    def connect(self) -> None:
        """Start connecting (libzmq connects, and reconnects, in the background); `zmq.ZMQError` if malformed."""
        self.socket.connect(self.endpoint)

    def register(self, poller: zmq.Poller) -> None:
        """Watch the socket (for room too, while frames wait) and the monitor; call before each poll."""
        poller.register(self.socket, zmq.POLLIN | (zmq.POLLOUT if self.outbox else 0))
        poller.register(self.monitor, zmq.POLLIN)

    def send(self, data: bytes) -> None:
        self.outbox.append(data)
        self.flush()

    def flush(self) -> None:
        """Send, in order, what the socket takes now."""
        outbox, send = self.outbox, self.socket.send
        while outbox:
            try:
                send(outbox[0], zmq.NOBLOCK)
            except zmq.Again:
                return
            outbox.popleft()

    def events(self) -> list[int]:
        """The monitor's events since the last call (``zmq.EVENT_CONNECTED``, ``zmq.EVENT_DISCONNECTED``)."""
        seen = []
        while self.monitor.poll(0):
            message = recv_monitor_message(self.monitor)
            event = message["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.connected = True
                self.handshake_failure = None
            elif event == zmq.EVENT_DISCONNECTED:
                self.disconnected = self.connected
            elif event & _HANDSHAKE_FAILED:
                self.handshake_failure = self._why(event, int(message["value"]))
            seen.append(event)
        return seen

    def _why(self, event: int, value: int) -> str:
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return (
                f"the daemon at {self.endpoint} refused this peer's key (status {value}): its public key must be "
                "in the daemon's keys directory (docs/security.rst)"
            )
        if self.secure:
            return (
                f"the CurveZMQ handshake with {self.endpoint} failed: is the daemon's public key "
                "(--server-key, TROUPE_SERVER_KEY) the one `troupe keys show` prints there?"
            )
        return (
            f"the handshake with {self.endpoint} failed (ZMQ monitor event {event}); a daemon on tcp takes only "
            "CurveZMQ peers unless told otherwise: give its public key and a key file (--server-key/--key-file, "
            "or TROUPE_SERVER_KEY/TROUPE_KEY_FILE)"
        )

    def receive(self, limit: int) -> Iterator[bytes]:
        """Up to ``limit`` frames that have arrived, without waiting (the last part of each message)."""
        recv, more = self.socket.recv, self.socket.get
        for _ in range(limit):
            try:
                data = recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            while more(zmq.RCVMORE):
                data = recv(zmq.NOBLOCK)
            yield data

    def has_input(self) -> bool:
        """A frame waits to be read (checked before taking a lost connection for the end)."""
        return bool(self.socket.poll(0, zmq.POLLIN))

    def close(self, linger_ms: int | None = None) -> None:
        if self.socket.closed:
            return
        self.socket.disable_monitor()
        self.monitor.close(linger=0)
        self.socket.close(linger=linger_ms)
