"""``troupe http``: the Streamable HTTP front, a process of its own that is a client of the daemon.

``troupe serve`` starts it (and restarts it) when ``[http] address`` is set; it can also be run by
hand against a running daemon, as many times as there are cores, on different ports. It uses
uvicorn and Starlette: a well-kept ASGI server whose HTTP/1.1 parsing (h11 or httptools) and
SSE streaming troupe need not write, with asyncio and ``zmq.asyncio`` on one loop, so the front
holds no lock and never stalls the daemon's hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette

from mcp_troupe.transport.http.app import AppOptions, build
from mcp_troupe.transport.http.rules import LOOPBACK_HOSTS, host_name, split_address
from mcp_troupe.transport.http.sessions import FrontOptions, Sessions
from mcp_troupe.transport.keys import ENV_HTTP_SECRET, Credentials

log = logging.getLogger("troupe.http")


@dataclass(frozen=True)
class FrontSettings:
    endpoint: str
    host: str
    port: int
    app: AppOptions
    front: FrontOptions
    exit_with_parent: bool = False


__all__ = ["FrontSettings", "is_loopback", "run", "split_address"]


def is_loopback(host: str) -> bool:
    return host_name(host) in LOOPBACK_HOSTS or host.startswith("127.")


def run(settings: FrontSettings, credentials: Credentials | None = None) -> int:
    secret = os.environ.get(ENV_HTTP_SECRET, "")
    try:
        key = bytes.fromhex(secret) if secret else None
    except ValueError:
        log.warning("%s is not hex; this front's sessions cannot be attached by the next one", ENV_HTTP_SECRET)
        key = None
    sessions = Sessions(settings.endpoint, settings.front, credentials, key)
    sessions.on_lost = lambda: signal.raise_signal(signal.SIGTERM)
    app = build(sessions, settings.app)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await sessions.start()
        watcher = asyncio.create_task(_watch_parent()) if settings.exit_with_parent else None
        log.info("HTTP front serving on http://%s:%d%s/<server>", settings.host, settings.port, settings.app.prefix)
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
            await sessions.stop()

    app.router.lifespan_context = lifespan
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http="httptools" if _has("httptools") else "h11",
        loop="uvloop" if _has("uvloop") else "asyncio",
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 3


def _has(module: str) -> bool:
    """uvloop and httptools are faster than asyncio's loop and h11 (measured in docs/performance.rst);
    without them (a platform with no wheel) the front still runs."""
    return importlib.util.find_spec(module) is not None


async def _watch_parent() -> None:
    parent = os.getppid()
    while True:
        await asyncio.sleep(0.5)
        if os.getppid() != parent:
            log.warning("the daemon that started this front is gone; stopping")
            signal.raise_signal(signal.SIGTERM)
            return
