"""The separate virtual environment for the peer, mcp-proxy 0.13.0 (PyPI).

mcp-proxy 0.13.0 requires ``mcp<2`` while troupe's example server needs
``mcp>=2``, so the peer lives in its own environment, ``bench/.venv-mcp-proxy``
(git-ignored), made on first use with ``python -m venv`` and ``pip install
mcp-proxy==0.13.0``. That environment's own SDK (mcp 1.x) is the client of
the peer, through ``bench/sdk_driver.py`` run with that environment's Python.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.common import BENCH

MCP_PROXY_VERSION = "0.13.0"
VENV = BENCH / ".venv-mcp-proxy"
_MARKER = VENV / f".mcp-proxy-{MCP_PROXY_VERSION}"


def python() -> Path:
    return VENV / "bin" / "python"


def executable() -> Path:
    return VENV / "bin" / "mcp-proxy"


def ensure(log: Path | None = None) -> Path:
    """Create the environment unless it is there already; returns its Python."""
    if _MARKER.exists() and python().exists() and executable().exists():
        return python()
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    try:
        if not python().exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, stdout=out, stderr=out, timeout=300)
        subprocess.run(
            [
                str(python()),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                f"mcp-proxy=={MCP_PROXY_VERSION}",
            ],
            check=True,
            stdout=out,
            stderr=out,
            timeout=600,
        )
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]
    _MARKER.touch()
    return python()
