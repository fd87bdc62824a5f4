"""`AdapterProcesses`: the adapter child processes of ``troupe serve``, supervised.

Each configured server gets ``adapters`` processes (``troupe adapter NAME ...``).
One `SupervisorCore` per server decides restarts with OTP semantics
(permanent children, one_for_one, an intensity within a period, a backoff so
a crash loop does not spin). When a server's adapters keep dying past the
intensity, troupe gives up on that server only: it logs why and stops
restarting them, and the rest of the daemon carries on.

Owned by the daemon's main thread, which calls `check` about once a second.
An adapter that is alive but silent (frozen, unreachable) is reported by the
dispatcher; `kill_lost` kills it so that `check` restarts it.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mcp_troupe.actors.core.supervision import (
    Action,
    ChildSpec,
    Escalate,
    StartChild,
    StopChild,
    SupervisorCore,
    SupervisorPolicy,
)
from mcp_troupe.actors.daemon.config import DaemonConfig, ServerConfig

log = logging.getLogger("troupe.daemon")


def adapter_command(
    server: ServerConfig, back: str, adapter_id: str, config: DaemonConfig, url: str | None = None
) -> list[str]:
    """The command line of the adapter child process for ``server`` (for a remote one, serving ``url``).

    A remote server's header templates go on it as they are written (``${NAME}`` unexpanded), so no
    secret is on a command line unless the config wrote it in plain."""
    cmd = [
        sys.executable,
        "-m",
        "mcp_troupe.actors",
        "adapter",
        server.name,
        "--endpoint",
        back,
        "--adapter-id",
        adapter_id,
    ]
    cmd += ["--log-format", config.log_format, "--log-level", config.log_level]
    cmd += ["--heartbeat-ms", str(config.heartbeat_ms)]
    cmd += ["--capacity", str(server.capacity), "--stop-timeout", str(server.stop_timeout)]
    cmd += ["--term-timeout", str(server.term_timeout), "--exit-with-parent"]
    cmd += ["--orphan-grace", str(config.orphan_grace if config.store != "none" else 0)]
    cmd += ["--max-message-bytes", str(config.max_server_frame_bytes)]
    cmd += ["--max-message-items", str(config.max_server_frame_items)]
    if server.cwd:
        cmd += ["--cwd", server.cwd]
    if url is not None:
        cmd += ["--url", url, "--timeout", str(server.timeout)]
        for name, template in server.headers.items():
            cmd += ["--header", f"{name}: {template}"]
        return cmd
    return [*cmd, "--", *server.command]


@dataclass(eq=False)
class _Group:
    server: ServerConfig
    core: SupervisorCore
    processes: dict[str, tuple[int, str, subprocess.Popen[bytes]]] = field(default_factory=dict)
    """child id -> (incarnation, adapter id, process)"""
    given_up: bool = False


class AdapterProcesses:
    def __init__(
        self,
        config: DaemonConfig,
        back: str,
        on_exit: Callable[[str, str], None] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``on_exit(adapter_id, reason)`` is told when an adapter process ends (its sessions are gone; the
        daemon sets it when the adapters started before it, `mcp_troupe.actors.daemon.launch`);
        ``env``: variables every adapter process gets besides the daemon's (its CurveZMQ keys).

        Each child gets an adapter id of the daemon's making (``--adapter-id``), so
        children are matched by id, never by a pid a remote adapter might share.
        """
        self._config = config
        policy = SupervisorPolicy(
            intensity=config.adapter_intensity, period=config.adapter_period, backoff_initial=0.5, backoff_max=10.0
        )
        self._groups = [
            _Group(server, SupervisorCore([ChildSpec(str(i)) for i in range(len(server.adapter_urls))], policy))
            for server in config.servers.values()
        ]
        self._back = back
        self.on_exit = on_exit
        self._env = dict(env or {})
        self.lost: queue.SimpleQueue[str] = queue.SimpleQueue()
        """Ids of adapters the dispatcher found silent (put from the hub's thread)."""

    def start(self) -> None:
        for group in self._groups:
            self._run(group, group.core.start_all())

    def check(self) -> None:
        """Notice dead adapters, restart them per policy, kill silent ones."""
        self.kill_lost()
        now = time.monotonic()
        for group in self._groups:
            for child_id, (incarnation, adapter_id, process) in list(group.processes.items()):
                code = process.poll()
                if code is None:
                    continue
                del group.processes[child_id]
                reason = f"adapter for server {group.server.name!r} (pid {process.pid}) exited with code {code}"
                log.error("%s", reason)
                if self.on_exit is not None:
                    self.on_exit(adapter_id, reason)
                self._run(group, group.core.child_exited(child_id, incarnation, True, reason, now))
            self._run(group, group.core.tick(now))

    def kill_lost(self) -> None:
        mine = {adapter_id: p for g in self._groups for _, adapter_id, p in g.processes.values()}
        while not self.lost.empty():
            process = mine.get(self.lost.get_nowait())
            if process is not None and process.poll() is None:
                log.error("killing unresponsive adapter pid %d; it will be restarted", process.pid)
                os.kill(process.pid, signal.SIGKILL)

    def stop(self, deadline: float) -> None:
        processes = [p for g in self._groups for _, _, p in g.processes.values()]
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=max(0.5, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("adapter %d did not stop; killing it", process.pid)
                process.kill()
                process.wait()

    def expected(self) -> dict[str, int]:
        return {g.server.name: len(g.server.adapter_urls) for g in self._groups}

    def _run(self, group: _Group, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case StartChild(child_id, incarnation, _):
                    adapter_id = secrets.token_hex(8)
                    url = group.server.adapter_urls[int(child_id)]
                    group.processes[child_id] = (incarnation, adapter_id, self._spawn(group.server, adapter_id, url))
                case StopChild(child_id, _, _):
                    entry = group.processes.pop(child_id, None)
                    if entry is not None:
                        entry[2].terminate()
                case Escalate(reason):
                    group.given_up = True
                    log.critical("giving up on server %r: %s", group.server.name, reason)

    def _spawn(self, server: ServerConfig, adapter_id: str, url: str | None) -> subprocess.Popen[bytes]:
        env = {**os.environ, **server.env, **self._env}
        command = adapter_command(server, self._back, adapter_id, self._config, url)
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
        log.info("started adapter for server %r (pid %d)", server.name, process.pid)
        return process
