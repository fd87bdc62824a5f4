"""Finding the daemon from a client that was given no endpoint, in the environment MCP clients give.

MCP clients start ``troupe connect`` with a minimal environment (the Python
and TypeScript SDKs pass only ``HOME``, ``LOGNAME``, ``PATH``, ``SHELL``,
``TERM`` and ``USER``), so a client cannot count on finding the variables the
daemon was started with. It looks, in order, and takes the first daemon that
answers:

1. the runtime directory its own environment names (``TROUPE_RUNTIME_DIR``,
   else ``$XDG_RUNTIME_DIR/troupe``: see `mcp_troupe.transport.runtime`);
2. ``/run/user/<uid>/troupe``, when ``/run/user/<uid>`` exists and is the
   user's (where a desktop session's ``XDG_RUNTIME_DIR`` points);
3. ``<tmp>/troupe-<uid>``, the daemon's own fallback;
4. the *pointer file* ``~/.local/state/troupe/daemon.json``, which every
   daemon writes when it starts serving (its endpoints, its pid) and removes
   when it stops: it finds a daemon started with ``TROUPE_RUNTIME_DIR`` or
   an unusual ``XDG_RUNTIME_DIR``, or on tcp endpoints.

``TROUPE_RUNTIME_DIR`` in the client's own environment is taken as the one
place to look. When nothing answers, `NotFound` says every place looked at
and what to pass instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from mcp_troupe.transport import dealer
from mcp_troupe.transport.runtime import FRONT_SOCKET, IPC_PATH_MAX, RuntimeDirError, candidate_dirs, ipc_endpoint

POINTER: Final = Path(".local") / "state" / "troupe" / "daemon.json"
"""Relative to the home directory: not to ``XDG_STATE_HOME``, which a minimal environment lacks."""


class NotFound(RuntimeDirError):
    """No daemon answers in any of the places looked at; the message lists them."""


def pointer_path() -> Path:
    return Path.home() / POINTER


def write_pointer(front: str, back: str, events: str) -> Path | None:
    """Record where this process serves (the daemon, once its front is bound); None if it cannot."""
    path = pointer_path()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"front": front, "back": back, "events": events, "pid": os.getpid()}))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError:
        return None
    return path


def remove_pointer() -> None:
    """Remove the pointer file if it is this process's (a later daemon may have replaced it)."""
    path = pointer_path()
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def find(socket: str = FRONT_SOCKET, environ: Mapping[str, str] | None = None) -> str:
    """The endpoint of the daemon's ``front`` (or ``back``, ``events``) socket, as ``FRONT_SOCKET`` names it;
    raises `NotFound` with every place looked at."""
    env = os.environ if environ is None else environ
    looked: list[str] = []
    for directory in candidate_dirs(env):
        path = directory / socket
        if len(str(path).encode()) > IPC_PATH_MAX:
            looked.append(f"{path} (path too long for a unix socket)")
            continue
        endpoint = ipc_endpoint(directory, socket)
        problem = dealer.unreachable(endpoint)
        if problem is None:
            return endpoint
        looked.append(_where(problem, endpoint))
    if not env.get("TROUPE_RUNTIME_DIR"):
        pointed, note = _from_pointer(socket)
        if pointed is not None:
            return pointed
        looked.append(note)
    raise NotFound(
        "no troupe daemon found; looked at " + "; ".join(looked) + ". Start one with `troupe serve`, or say where "
        "it serves: --endpoint ENDPOINT (e.g. ipc:///run/user/1000/troupe/front.sock) or --runtime-dir DIR"
        " (its runtime directory), or TROUPE_RUNTIME_DIR in the environment"
    )


def _from_pointer(socket: str) -> tuple[str | None, str]:
    path = pointer_path()
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"{path} (absent: no daemon is serving)"
    except (OSError, ValueError) as exc:
        return None, f"{path} (unreadable: {exc})"
    key = socket.removesuffix(".sock")
    endpoint = record.get(key) if isinstance(record, dict) else None
    if not isinstance(endpoint, str):
        return None, f"{path} (names no {socket} endpoint)"
    problem = dealer.unreachable(endpoint)
    if problem is not None:
        return None, f"{path}, which names {endpoint} ({_reason(problem)})"
    return endpoint, ""


def _where(problem: str, endpoint: str) -> str:
    return f"{endpoint} ({_reason(problem)})"


def _reason(problem: str) -> str:
    """The parenthesised part of `dealer.unreachable`'s message, or all of it."""
    start, end = problem.find("("), problem.rfind(")")
    return problem[start + 1 : end] if 0 <= start < end else problem
