"""`HttpFrontProcess`: the ``troupe http`` child process of ``troupe serve``, supervised.

The front is a client of the daemon's front socket like any other (so it never stalls the hub), started
when ``[http] address`` is set and restarted with the same OTP policy as the adapters (permanent,
an intensity within a period, a backoff). When it keeps dying, troupe gives up on HTTP only: it
logs why, and the daemon carries on serving its ZeroMQ clients.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping

from mcp_troupe.actors.core.supervision import (
    Action,
    ChildSpec,
    Escalate,
    StartChild,
    StopChild,
    SupervisorCore,
    SupervisorPolicy,
)
from mcp_troupe.actors.daemon.config import DaemonConfig

log = logging.getLogger("troupe.daemon")


def http_command(config: DaemonConfig, front: str) -> list[str]:
    """The command line of the HTTP front for this configuration, connecting to ``front``."""
    http = config.http
    assert http.address is not None
    cmd = [sys.executable, "-m", "mcp_troupe.actors", "http", "--endpoint", front, "--listen", http.address]
    cmd += ["--prefix", http.prefix, "--exit-with-parent"]
    cmd += ["--log-format", config.log_format, "--log-level", config.log_level]
    cmd += ["--replay-events", str(http.replay_events), "--replay-bytes", str(http.replay_bytes)]
    cmd += ["--pool-size", str(http.pool_size), "--pool-queue", str(http.pool_queue)]
    cmd += ["--max-body-bytes", str(http.max_body_bytes or config.max_frame_bytes)]
    cmd += ["--sse-poll-after", str(http.sse_poll_after), "--json-within", str(http.json_within)]
    if http.default_server:
        cmd += ["--default-server", http.default_server]
    if http.tokens_file is not None:
        cmd += ["--tokens-file", str(http.tokens_file)]
    for origin in http.allowed_origins:
        cmd += ["--allowed-origin", origin]
    return cmd


class HttpFrontProcess:
    """Owned by the daemon's main thread, which calls `check` about once a second."""

    def __init__(self, config: DaemonConfig, front: str, env: Mapping[str, str] | None = None) -> None:
        policy = SupervisorPolicy(
            intensity=config.adapter_intensity, period=config.adapter_period, backoff_initial=0.5, backoff_max=10.0
        )
        self._core = SupervisorCore([ChildSpec("http")], policy)
        self._command = http_command(config, front)
        self._env = {**os.environ, **(env or {})}
        self._process: tuple[int, subprocess.Popen[bytes]] | None = None
        self.given_up = False

    @property
    def pid(self) -> int | None:
        return self._process[1].pid if self._process is not None else None

    def start(self) -> None:
        self._run(self._core.start_all())

    def check(self) -> None:
        now = time.monotonic()
        if self._process is not None:
            incarnation, process = self._process
            code = process.poll()
            if code is not None:
                self._process = None
                reason = f"the HTTP front (pid {process.pid}) exited with code {code}"
                log.error("%s", reason)
                self._run(self._core.child_exited("http", incarnation, True, reason, now))
        self._run(self._core.tick(now))

    def stop(self, deadline: float) -> None:
        if self._process is None:
            return
        process = self._process[1]
        process.terminate()
        try:
            process.wait(timeout=max(0.5, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("the HTTP front did not stop; killing it")
            process.kill()
            process.wait()

    def _run(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case StartChild(_, incarnation, _):
                    process = subprocess.Popen(self._command, env=self._env, stdin=subprocess.DEVNULL)
                    self._process = (incarnation, process)
                    log.info(
                        "started the HTTP front on %s (pid %d)",
                        self._command[self._command.index("--listen") + 1],
                        process.pid,
                    )
                case StopChild():
                    if self._process is not None:
                        self._process[1].terminate()
                case Escalate(reason):
                    self.given_up = True
                    log.critical("giving up on the HTTP front: %s", reason)
