"""`Upstream`: an adapter's HTTP side, one asyncio loop on a thread of its own with one pooled httpx client.

The adapter's loop owns the daemon's socket and blocks in ``zmq.Poller``; HTTP wants an event loop.
So each has its thread and they meet only through thread-safe hand-offs: the adapter schedules work
with ``call_soon_threadsafe`` (`UpstreamSession`), the sessions report through the adapter's
`Mailbox`, exactly as a server process's threads do. Everything the sessions share (the client and
its connection pool, the credentials, the tool schemas) belongs to this loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, Final

import httpx

from mcp_troupe.transport.upstream.credentials import UpstreamCredentials
from mcp_troupe.transport.upstream.rules import redact_url
from mcp_troupe.transport.upstream.session import Shared, UpstreamSession

log = logging.getLogger("troupe.adapter")

POOL_CONNECTIONS: Final = 100
"""Connections kept open to the upstream at most (httpx pool); each open response stream holds one."""
_CLOSE_TIMEOUT: Final = 5.0


class Upstream:
    """Start with `start`, open sessions with `open` (from the adapter's thread), end with `close`."""

    def __init__(
        self,
        server: str,
        url: str,
        credentials: UpstreamCredentials,
        report: Callable[[Any], object],
        *,
        timeout: float = 30.0,
        max_message_bytes: int = 32 * 1024 * 1024,
        verify: bool | str = True,
    ) -> None:
        self.server, self.url = server, url
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"upstream-{server}", daemon=True)
        self._settings = (credentials, report, timeout, max_message_bytes, verify)
        self._shared: Shared | None = None

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._make_shared(), self._loop).result(timeout=_CLOSE_TIMEOUT)
        log.info("adapter for %r serves upstream %s", self.server, redact_url(self.url))

    def open(self, sid: str, **_: Any) -> UpstreamSession:
        """A new upstream session for ``sid``; its first message decides its era."""
        assert self._shared is not None, "start() first"
        return UpstreamSession(self._loop, sid, self.url, self._shared)

    def close(self) -> None:
        if self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._end(), self._loop)
            try:
                future.result(timeout=_CLOSE_TIMEOUT)
            except (TimeoutError, RuntimeError) as exc:
                log.warning("upstream client did not close cleanly: %s", exc)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=_CLOSE_TIMEOUT)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()
        self._loop.close()

    async def _make_shared(self) -> None:
        credentials, report, timeout, max_bytes, verify = self._settings
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=POOL_CONNECTIONS, max_keepalive_connections=POOL_CONNECTIONS // 5),
            follow_redirects=False,
            verify=verify,
            trust_env=False,
        )
        self._shared = Shared(self.server, client, credentials, report, timeout, max_bytes)

    async def _end(self) -> None:
        current = asyncio.current_task()
        for task in asyncio.all_tasks():
            if task is not current:
                task.cancel()
        if self._shared is not None:
            await self._shared.client.aclose()
