"""Print, as JSON, the project files the daemon runs code of while it carries one request and its response.

``python -m bench.frame_path``. A daemon runs in this process (default config: the example server), a client
library session calls ``tools/call add`` once to warm up, then once traced:
every Python function call on the daemon's threads (not the client's) is
recorded by file. Output: ``{"files": [...sorted], "sequence": [...]}``, the
sequence being the files in the order entered, repeats collapsed.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

runtime = Path(tempfile.mkdtemp(prefix="trp-path-"))
os.environ["TROUPE_RUNTIME_DIR"] = str(runtime)
os.environ["HOME"] = str(runtime)

import mcp_troupe.actors  # noqa: E402
import mcp_troupe.transport  # noqa: E402
from mcp_troupe.actors.daemon.config import load  # noqa: E402
from mcp_troupe.actors.daemon.service import Daemon  # noqa: E402
from mcp_troupe.transport.client import Client, DaemonUnavailable  # noqa: E402

FOLDERS = {Path(mcp_troupe.actors.__file__).parent: "actors", Path(mcp_troupe.transport.__file__).parent: "transport"}
capturing = threading.Event()
sequence: list[str] = []
client_thread = threading.main_thread()
names: dict[str, str | None] = {}


def project_name(filename: str) -> str | None:
    if filename not in names:
        path, name = Path(filename), None
        for folder, top in FOLDERS.items():
            if path.is_relative_to(folder):
                name = f"{top}/{path.relative_to(folder)}"
        names[filename] = name
    return names[filename]


def profiler(frame: FrameType, event: str, _arg: Any) -> None:
    if not capturing.is_set() or event != "call" or threading.current_thread() is client_thread:
        return
    name = project_name(frame.f_code.co_filename)
    if name is not None and (not sequence or sequence[-1] != name):
        sequence.append(name)


def main() -> None:
    threading.setprofile(profiler)
    daemon = Daemon(load(None))
    daemon.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            client = Client(f"ipc://{runtime}/front.sock", timeout=30)
            break
        except DaemonUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    session = client.open("example")
    session.initialize()
    add = {"name": "add", "arguments": {"a": 1, "b": 2}}
    session.request("tools/call", add)
    capturing.set()
    session.request("tools/call", add)
    capturing.clear()
    print(json.dumps({"files": sorted(set(sequence)), "sequence": sequence}))
    sys.stdout.flush()
    os._exit(0)  # the daemon's threads and its adapter (which exits when its parent does) need no goodbye


if __name__ == "__main__":
    main()
