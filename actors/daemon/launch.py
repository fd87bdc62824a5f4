"""What ``troupe serve`` does before it imports the daemon: take its socket paths, start its adapters.

The interpreter's start and the daemon's imports are most of the daemon's start-up, and each adapter
is a Python process with a start of its own. Started first, the adapters start beside the daemon
instead of after it, and the daemon's wait for them to register is mostly over by the time it is
ready to hear them (``docs/performance.rst``, start-up). This module imports only what that takes.

Only adapters of an ipc back socket start early: its path is known before the daemon binds it (a tcp
port 0 is not), and the 0700 runtime directory, whose sockets this module has just locked, is what
tells them they reach this daemon and no other.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from mcp_troupe.actors.daemon.adapter_processes import AdapterProcesses
from mcp_troupe.actors.daemon.config import DaemonConfig
from mcp_troupe.transport.runtime import ensure_private_dir, ipc_path


class DaemonError(RuntimeError):
    """The daemon cannot start or serve as configured; the message says what to change."""


@dataclass
class Launch:
    """The socket locks the daemon holds for its life, and its adapters if they started already."""

    locks: list[IO[str]] = field(default_factory=list)
    adapters: AdapterProcesses | None = None


def launch(config: DaemonConfig) -> Launch:
    """Lock the ipc socket paths (`DaemonError` if another daemon serves one), then start the adapters
    if the back socket is ipc."""
    started = Launch(locks=lock_sockets(config))
    if ipc_path(config.back) is not None and config.servers:
        started.adapters = AdapterProcesses(config, config.back)
        started.adapters.start()
    return started


def lock_sockets(config: DaemonConfig) -> list[IO[str]]:
    locks = []
    for endpoint in (config.front, config.back, config.events):
        path = ipc_path(endpoint)
        if path is None:
            continue
        ensure_private_dir(path.parent)
        locks.append(_lock_socket(path))
    return locks


def _lock_socket(path: Path) -> IO[str]:
    """Hold ``<socket>.lock`` so a second daemon cannot steal a live socket path."""
    lock = open(f"{path}.lock", "a+")  # noqa: SIM115 - held for the daemon's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise DaemonError(
            f"another troupe daemon (pid {holder}) is serving {path}; stop it, or give this one "
            "another runtime directory (TROUPE_RUNTIME_DIR) or endpoints"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    return lock
