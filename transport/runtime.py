"""Where the daemon's embedded default endpoints live.

With no configuration the daemon binds ipc endpoints in a private runtime
directory, and client commands look for it in the same place:

1. ``$TROUPE_RUNTIME_DIR`` if set;
2. else ``$XDG_RUNTIME_DIR/troupe`` if ``XDG_RUNTIME_DIR`` is set;
3. else ``/run/user/<uid>/troupe`` if ``/run/user/<uid>`` exists and is the user's;
4. else ``<tempdir>/troupe-<uid>``.

Clients that were given no endpoint look in all of these, and at the daemon's
pointer file (`mcp_troupe.transport.discovery`).

The directory is created with mode 0700 and refused if another user owns it
or others can reach it, since anyone who can open the sockets can use every
server behind the daemon.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Final

FRONT_SOCKET: Final = "front.sock"
BACK_SOCKET: Final = "back.sock"
EVENTS_SOCKET: Final = "events.sock"
IPC_PATH_MAX: Final = 107
"""Longest socket path the kernel accepts for a unix socket (sun_path less its NUL)."""


class RuntimeDirError(RuntimeError):
    """The runtime directory cannot be used safely."""


def runtime_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The runtime directory path (not created): the first of `candidate_dirs`."""
    return candidate_dirs(environ)[0]


def candidate_dirs(environ: Mapping[str, str] | None = None) -> list[Path]:
    """Where a daemon's runtime directory may be, in order (see the module docstring).

    ``TROUPE_RUNTIME_DIR`` set: that one alone. Otherwise ``$XDG_RUNTIME_DIR/troupe`` if set, then
    ``/run/user/<uid>/troupe`` if ``/run/user/<uid>`` exists and is the user's, then the temp-dir
    fallback: a client started with a minimal environment still finds a daemon started from a desktop
    session, whose ``XDG_RUNTIME_DIR`` is that ``/run/user/<uid>``.
    """
    env = os.environ if environ is None else environ
    if env.get("TROUPE_RUNTIME_DIR"):
        return [Path(env["TROUPE_RUNTIME_DIR"])]
    dirs = []
    if env.get("XDG_RUNTIME_DIR"):
        dirs.append(Path(env["XDG_RUNTIME_DIR"]) / "troupe")
    run_user = Path(f"/run/user/{os.getuid()}")
    try:
        if run_user.stat().st_uid == os.getuid():
            dirs.append(run_user / "troupe")
    except OSError:
        pass
    dirs.append(Path(tempfile.gettempdir()) / f"troupe-{os.getuid()}")
    return list(dict.fromkeys(dirs))


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The daemon's state directory (its keys; not created): ``$TROUPE_STATE_DIR``, else
    ``$XDG_STATE_HOME/troupe``, else ``~/.local/state/troupe``."""
    env = os.environ if environ is None else environ
    if env.get("TROUPE_STATE_DIR"):
        return Path(env["TROUPE_STATE_DIR"])
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "troupe"
    return Path(env.get("HOME") or Path.home()) / ".local" / "state" / "troupe"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` with mode 0700 if needed and check nobody else can use it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise RuntimeDirError(
            f"runtime directory {path} belongs to uid {info.st_uid}, not to you (uid {os.getuid()}); "
            "set TROUPE_RUNTIME_DIR to a directory of your own"
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


def ipc_endpoint(directory: Path, name: str) -> str:
    """``ipc://`` endpoint for a socket file in ``directory``; refuses over-long paths."""
    path = str(directory / name)
    if len(path.encode()) > IPC_PATH_MAX:
        raise RuntimeDirError(
            f"socket path {path} is {len(path.encode())} bytes, over the {IPC_PATH_MAX}-byte limit for unix "
            "sockets; set TROUPE_RUNTIME_DIR to a shorter directory"
        )
    return f"ipc://{path}"


def ipc_path(endpoint: str) -> Path | None:
    """The socket file behind an ``ipc://`` endpoint, else None."""
    return Path(endpoint[len("ipc://") :]) if endpoint.startswith("ipc://") else None
