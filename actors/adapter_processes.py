"""`AdapterProcesses`: the adapter child processes of ``troupe serve``, supervised.

Each configured server gets ``adapters`` processes (``troupe adapter NAME ...``).
One `SupervisorCore` per server decides restarts with OTP semantics
(permanent children, one_for_one, an intensity within a period, a backoff so
a crash loop does not spin). When a server's adapters keep dying past the
intensity, troupe gives up on that server only: it logs why and stops
restarting them, and the rest of the daemon carries on.

Owned by the daemon's main thread, which calls `check` about once a second.
An adapter that is alive but silent (frozen, unreachable) is reported by the
router; `kill_lost` kills it so that `check` restarts it.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from actors.config import DaemonConfig, ServerConfig
from actors.supervision import ChildSpec, Escalate, StartChild, StopChild, SupervisorCore, SupervisorPolicy

log = logging.getLogger("troupe.daemon")


def adapter_command(server: ServerConfig, back: str, log_format: str = "text", log_level: str = "info") -> list[str]:
    """The command line of the adapter child process for ``server``."""
    cmd = [sys.executable, "-m", "actors", "adapter", server.name, "--endpoint", back]
    cmd += ["--log-format", log_format, "--log-level", log_level]
    cmd += ["--capacity", str(server.capacity), "--stop-timeout", str(server.stop_timeout)]
    cmd += ["--term-timeout", str(server.term_timeout), "--exit-with-parent"]
    if server.cwd:
        cmd += ["--cwd", server.cwd]
    return [*cmd, "--", *server.command]


@dataclass(eq=False)
class _Group:
    server: ServerConfig
    core: SupervisorCore
    processes: dict[str, tuple[int, subprocess.Popen[bytes]]] = field(default_factory=dict)
    given_up: bool = False


class AdapterProcesses:
    def __init__(self, config: DaemonConfig, back: str, on_exit: Callable[[int, str], None]) -> None:
        """``on_exit(pid, reason)`` is told when an adapter process ends (its sessions are gone)."""
        policy = SupervisorPolicy(
            intensity=config.adapter_intensity, period=config.adapter_period, backoff_initial=0.5, backoff_max=10.0
        )
        self._groups = [
            _Group(server, SupervisorCore([ChildSpec(str(i)) for i in range(server.adapters)], policy))
            for server in config.servers.values()
        ]
        self._back = back
        self._logging = (config.log_format, config.log_level)
        self._on_exit = on_exit
        self.lost: queue.SimpleQueue[int] = queue.SimpleQueue()
        """Pids of adapters the router found silent (put from the hub's thread)."""

    def start(self) -> None:
        for group in self._groups:
            self._run(group, group.core.start_all())

    def check(self) -> None:
        """Notice dead adapters, restart them per policy, kill silent ones."""
        self.kill_lost()
        now = time.monotonic()
        for group in self._groups:
            for child_id, (incarnation, process) in list(group.processes.items()):
                code = process.poll()
                if code is None:
                    continue
                del group.processes[child_id]
                reason = f"adapter for server {group.server.name!r} (pid {process.pid}) exited with code {code}"
                log.error("%s", reason)
                self._on_exit(process.pid, reason)
                self._run(group, group.core.child_exited(child_id, incarnation, True, reason, now))
            self._run(group, group.core.tick(now))

    def kill_lost(self) -> None:
        mine = {p.pid: p for g in self._groups for _, p in g.processes.values()}
        while not self.lost.empty():
            pid = self.lost.get_nowait()
            if pid in mine and mine[pid].poll() is None:
                log.error("killing unresponsive adapter pid %d; it will be restarted", pid)
                os.kill(pid, signal.SIGKILL)

    def stop(self, deadline: float) -> None:
        processes = [p for g in self._groups for _, p in g.processes.values()]
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
        return {g.server.name: g.server.adapters for g in self._groups}

    def _run(self, group: _Group, actions: list) -> None:
        for action in actions:
            match action:
                case StartChild(child_id, incarnation, _):
                    group.processes[child_id] = (incarnation, self._spawn(group.server))
                case StopChild(child_id, _, _):
                    entry = group.processes.pop(child_id, None)
                    if entry is not None:
                        entry[1].terminate()
                case Escalate(reason):
                    group.given_up = True
                    log.critical("giving up on server %r: %s", group.server.name, reason)

    def _spawn(self, server: ServerConfig) -> subprocess.Popen[bytes]:
        env = {**os.environ, **server.env}
        process = subprocess.Popen(
            adapter_command(server, self._back, *self._logging), env=env, stdin=subprocess.DEVNULL
        )
        log.info("started adapter for server %r (pid %d)", server.name, process.pid)
        return process
