"""What every DEALER that talks to the daemon shares: its socket options and a reachability check.

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
from typing import Final

import zmq

from mcp_troupe.transport.runtime import ipc_path

HEARTBEAT_MS: Final = 1000


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
