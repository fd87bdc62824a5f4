"""`Daemon`: wires the hub, the dispatcher and the adapter processes together.

Start-up binds the back socket first, starts one adapter process per
configured server (``troupe adapter ...`` as a child), waits for them to
register, and only then binds the front socket, so a client that can reach
the daemon can use every configured server. Shutdown runs the other way:
refuse new sessions, close the open ones (clients told, pending requests
answered), stop the adapters (which stop their servers), then the hub.
"""

from __future__ import annotations

import logging
import os
import secrets
import select
import signal
import sqlite3
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from functools import partial
from pathlib import Path
from typing import IO, Any

import pykka

from mcp_troupe.actors.core.options import ServerPolicy
from mcp_troupe.actors.core.records import RECORD_VERSION, read_rows
from mcp_troupe.actors.core.supervision import ChildSpec
from mcp_troupe.actors.daemon.adapter_processes import AdapterProcesses
from mcp_troupe.actors.daemon.config import DaemonConfig, example_unavailable
from mcp_troupe.actors.daemon.dispatcher import Dispatcher, DispatcherOptions
from mcp_troupe.actors.daemon.http_front import HttpFrontProcess
from mcp_troupe.actors.daemon.launch import DaemonError, Launch, lock_sockets
from mcp_troupe.actors.shells.evictor import Evictor
from mcp_troupe.actors.shells.janitor import Janitor
from mcp_troupe.actors.shells.store_writer import StoreWriter
from mcp_troupe.actors.shells.supervisor import ChildContext, Supervisor
from mcp_troupe.actors.telemetry.metrics import LoopCollector, Metrics
from mcp_troupe.actors.telemetry.observe import AuditLog, Observers, hub_publisher
from mcp_troupe.transport import discovery
from mcp_troupe.transport.hub.loop import BACK, EVENTS, FRONT, Hub, HubOptions
from mcp_troupe.transport.keys import (
    ANY_SERVER,
    DAEMON_KEY,
    ENV_HTTP_SECRET,
    ENV_KEY_FILE,
    ENV_SERVER_KEY,
    OPERATOR,
    Grant,
    KeyFileError,
    KeyRing,
    ServerKeys,
    load_ring,
    load_server_keys,
    state_key_paths,
)
from mcp_troupe.transport.runtime import ensure_private_dir, state_dir
from mcp_troupe.transport.store.sqlite import STORE_FILE, SqliteStore

log = logging.getLogger("troupe.daemon")


SERVER_FRAME_MARGIN = 64 * 1024
"""Bytes an adapter's ``mcp`` frame may take beyond the server's message: the envelope around it."""

EXIT_ESCALATED = 70
"""Exit status after the supervisor escalated (EX_SOFTWARE)."""
HTTP_SECRET_FILE = "http_front.secret"
"""In the state directory: the HTTP front's secret (``ENV_HTTP_SECRET``), 0600."""
LOST_REASON = "its server process ended with the previous daemon (orphan_grace is 0)"


class Daemon:
    def __init__(self, config: DaemonConfig, version: str = "", launched: Launch | None = None) -> None:
        """``launched``: the socket locks taken and the adapters started before the daemon's imports
        (`mcp_troupe.actors.daemon.launch`); without it, `start` does both."""
        self.config = config
        self.server_keys, curve = _curve(config)
        self.keys = self._read_keys() if self.server_keys is not None else KeyRing()
        self.hub = Hub(
            HubOptions(
                heartbeat_ms=config.heartbeat_ms,
                client_timeout_ms=round(config.client_timeout * 1000),
                backlog_bytes=config.send_backlog_bytes,
                backlog_total=config.send_backlog_total,
                front_max_message=4 * config.max_frame_bytes,
                back_max_message=2 * (config.max_server_frame_bytes + SERVER_FRAME_MARGIN),
                max_connections=(config.max_client_connections, HubOptions().max_connections[1]),
                server_keys=self.server_keys,
                curve=curve,
                keys=self.keys,
            )
        )
        policies = {s.name: ServerPolicy(s.on_exit, s.max_restarts, s.passivate) for s in config.servers.values()}
        options = DispatcherOptions(
            max_frame_bytes=config.max_frame_bytes,
            max_frame_items=config.max_frame_items,
            max_server_frame_bytes=config.max_server_frame_bytes + SERVER_FRAME_MARGIN,
            max_server_frame_items=config.max_server_frame_items,
            limits=config.limits,
            fault_injection=config.fault_injection,
            server_policies=policies,
            pass_env={s.name: frozenset(s.pass_env) for s in config.servers.values()},
            adapter_timeout=config.adapter_timeout,
            respawn_timeout=config.respawn_timeout,
            persist=config.store != "none",
            store_queue=config.store_queue,
            store_batch=config.store_batch,
            orphan_grace=config.orphan_grace,
        )
        self.observers = self._observers()
        self.dispatcher = Dispatcher(self.hub, options, observers=self.observers, version=version)
        if self.server_keys is not None:
            self.dispatcher.reload_keys = self._reload_in_background
        self._reload_requested = False
        self.supervisor: pykka.ActorRef[Supervisor] | None = None
        self.exit_code = 0
        self.adapters: AdapterProcesses | None = launched.adapters if launched is not None else None
        self.http: HttpFrontProcess | None = None
        self._locks: list[IO[str]] = launched.locks if launched is not None else []
        self._stop_requested: list[int] = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.front_endpoint = config.front
        self.back_endpoint = config.back
        self._shutdown_reason = "shutdown"

    # -- start ---------------------------------------------------------------------

    def _observers(self) -> Observers:
        metrics = Metrics()
        audit = AuditLog.start(Path(self.config.audit_log)).tell if self.config.audit_log else lambda _record: None
        return Observers(metrics, hub_publisher(self.hub.publish), audit)

    # -- keys ----------------------------------------------------------------------

    def _read_keys(self) -> KeyRing:
        """The keys let in, from the security directories; the daemon's own key serves its adapters."""
        sec = self.config.security
        try:
            ring = load_ring(sec.clients_dir, sec.operators_dir, sec.adapters_dir)
        except KeyFileError as exc:
            raise DaemonError(str(exc)) from None
        assert self.server_keys is not None
        back = {**ring.back, self.server_keys.public: Grant(DAEMON_KEY, frozenset({ANY_SERVER}))}
        front = {**ring.front, self.server_keys.public: Grant(DAEMON_KEY + " (http front)", frozenset())}
        return KeyRing(front, back)

    def reload_keys(self) -> dict[str, Any]:
        """Read the key directories again and let in exactly their keys from now on; live sessions of
        keys still allowed carry on. Raises `DaemonError` (the old keys stay) if a file is bad."""
        keys = self._read_keys()
        self.keys = keys
        self.hub.set_keys(keys)
        operators = sum(1 for g in keys.front.values() if OPERATOR in g.rights)
        # the daemon's own key (its HTTP front and its adapters use it) is counted in neither
        counts = {"clients": len(keys.front) - operators - 1, "operators": operators, "adapters": len(keys.back) - 1}
        log.info("keys reloaded: %(clients)d client, %(operators)d operator, %(adapters)d adapter key(s)", counts)
        return counts

    def _reload_in_background(self, done: Callable[[dict[str, Any] | str], None]) -> None:
        """For the ``security.reload`` operation: files are read on a thread of their own, not the hub's."""

        def run() -> None:
            try:
                result: dict[str, Any] | str = self.reload_keys()
            except DaemonError as exc:
                log.error("keys not reloaded: %s", exc)
                result = f"keys not reloaded (the old ones stay): {exc}"
            done(result)

        threading.Thread(target=run, name="troupe-keys", daemon=True).start()

    def _reload_now(self) -> None:
        """SIGHUP, on the main thread."""
        self._reload_requested = False
        if self.server_keys is None:
            log.info("SIGHUP: no CurveZMQ keys in use; nothing to reload")
            return
        try:
            self.reload_keys()
        except DaemonError as exc:
            log.error("keys not reloaded (the old ones stay): %s", exc)

    def adapter_env(self, endpoint: str | None = None) -> dict[str, str]:
        """What the adapter processes (or the HTTP front) this daemon starts need to reach a CurveZMQ socket."""
        if self.server_keys is None or not (endpoint or self.config.back).startswith("tcp://"):
            return {}
        _public, secret = state_key_paths(self.config.state_dir or state_dir())
        return {ENV_SERVER_KEY: self.server_keys.public.decode(), ENV_KEY_FILE: str(secret)}

    def start(self) -> None:
        if self.config.fault_injection:
            log.warning(
                "FAULT INJECTION IS ON: operators may crash the janitor, the evictor and sessions (inject_fault)"
            )
        self._prepare_ipc()
        self._read_store()
        self._start_supervisor()
        self.hub.start(self.dispatcher)
        self.back_endpoint = self.hub.bind(BACK, self.config.back)
        self.events_endpoint = self.hub.bind(EVENTS, self.config.events)
        self.observers.metrics.registry.register(
            LoopCollector(lambda: self.hub.ask(self.dispatcher.metrics_snapshot, 2.0))
        )
        if self.config.metrics_address:
            self.observers.metrics.serve(self.config.metrics_address)
            log.info("metrics at http://%s/metrics", self.config.metrics_address)
        for server in self.config.servers.values():
            if (why := example_unavailable(server)) is not None:
                log.warning("server %r: %s; its sessions fail until then", server.name, why)
        if self.adapters is None:
            self.adapters = AdapterProcesses(self.config, self.back_endpoint, env=self.adapter_env())
            self.adapters.start()
        self.adapters.on_exit = self._adapter_exited
        self.dispatcher.on_adapter_lost = self._adapter_silent
        self._await_adapters()
        self.front_endpoint = self.hub.bind(FRONT, self.config.front)
        if (
            self.config.discoverable
            and discovery.write_pointer(self.front_endpoint, self.back_endpoint, self.events_endpoint) is None
        ):
            log.warning(
                "could not write %s: clients given no endpoint may not find this daemon", discovery.pointer_path()
            )
        if self.config.http.address is not None:
            env = {**self.adapter_env(self.front_endpoint), ENV_HTTP_SECRET: self._http_secret()}
            self.http = HttpFrontProcess(self.config, self.front_endpoint, env)
            self.http.start()
        log.info(
            "serving on %s (adapters on %s); servers: %s",
            self.front_endpoint,
            self.back_endpoint,
            ", ".join(self.config.servers) or "none configured",
        )

    def _http_secret(self) -> str:
        """The HTTP front's secret, kept in the state directory so that the front of the next daemon derives
        the same resume tokens (and so attaches the sessions the store brought back)."""
        path = (self.config.state_dir or state_dir()) / HTTP_SECRET_FILE
        try:
            ensure_private_dir(path.parent)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text().strip()
        except OSError as exc:
            raise DaemonError(f"cannot keep the HTTP front's secret in {path}: {exc}; fix [daemon] state_dir") from exc
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        return path.read_text().strip()

    def _start_supervisor(self) -> None:
        """The janitor and the evictor, under a supervisor whose escalation stops the daemon."""
        timeout = self.config.child_shutdown_timeout
        children = [
            (ChildSpec("janitor", shutdown_timeout=timeout), self._start_janitor),
            (ChildSpec("evictor", shutdown_timeout=timeout), self._start_evictor),
        ]
        if self.config.store != "none":
            children.append((ChildSpec("store", shutdown_timeout=timeout), self._start_store_writer))
        self.supervisor = Supervisor.start(children, self.config.supervisor, self._escalated, observers=self.observers)
        self.dispatcher.supervisor = self.supervisor.tell

    def _start_janitor(self, context: ChildContext) -> pykka.ActorRef[Janitor]:
        return Janitor.start(context, lambda now: self.hub.call(partial(self.dispatcher.janitor_pass, now)))

    def _start_evictor(self, context: ChildContext) -> pykka.ActorRef[Evictor]:
        return Evictor.start(context, lambda: self.hub.call(self.dispatcher.enforce_session_limit))

    def _store_path(self) -> Path:
        assert self.config.state_dir is not None  # config.load fills it in
        return self.config.state_dir / STORE_FILE

    def _read_store(self) -> None:
        """What the previous daemon stored: restored as their adapters report back within ``orphan_grace``,
        or (with no grace) reported lost at once."""
        if self.config.store == "none":
            return
        path = self._store_path()
        try:
            store = SqliteStore(path)
            try:
                records, skipped = read_rows(store.load())
                corrupt = [(sid, version, None) for sid, version, _ in skipped if version == RECORD_VERSION]
                grace = self.config.orphan_grace > 0
                lost = {} if grace else {r.sid: LOST_REASON for r in records}
                store.write([*corrupt, *((sid, RECORD_VERSION, None) for sid in lost)])
            finally:
                store.close()
        except (OSError, sqlite3.Error) as exc:
            raise DaemonError(
                f"cannot use the session store {path}: {exc}; "
                "fix its directory ([daemon] state_dir) or run without one ([daemon] store = 'none')"
            ) from exc
        for sid, version, why in skipped:
            action = "removed" if version == RECORD_VERSION else "kept for the troupe that wrote it"
            log.warning("stored session %s skipped (%s): %s", sid, action, why)
        if lost:
            log.warning("%d stored sessions were lost with the previous daemon: %s", len(lost), LOST_REASON)
        self.dispatcher.forget_lost(lost)
        if records and not lost:
            log.info(
                "%d stored sessions wait up to %gs (orphan_grace) for their adapters to report back",
                len(records),
                self.config.orphan_grace,
            )
            self.dispatcher.expect_restores(records)

    def _start_store_writer(self, context: ChildContext) -> pykka.ActorRef[StoreWriter]:
        dispatcher, hub, path = self.dispatcher, self.hub, self._store_path()
        return StoreWriter.start(
            context,
            lambda: SqliteStore(path),
            lambda: hub.ask(dispatcher.take_store_batch),
            lambda batch: hub.call(partial(dispatcher.store_queue.requeue, batch)),
            lambda why: hub.call(partial(dispatcher.store_failed, why)),
        )

    def _escalated(self, reason: str) -> None:
        """The top supervisor gave up: stop as gracefully as SIGTERM does, but exit non-zero."""
        log.critical("shutting down: the supervisor escalated: %s", reason)
        self.request_stop(signal.SIGTERM, exit_code=EXIT_ESCALATED, reason="escalation")

    def _prepare_ipc(self) -> None:
        if not self._locks:
            self._locks = lock_sockets(self.config)

    def _adapter_silent(self, adapter_id: str | None, _reason: str) -> None:
        """On the hub's thread: hand the id to the main thread, which kills and restarts that child."""
        if adapter_id is not None and self.adapters is not None:
            self.adapters.lost.put(adapter_id)

    def _adapter_exited(self, adapter_id: str, reason: str) -> None:
        self.hub.call(partial(self.dispatcher.adapter_gone, adapter_id, reason))

    def _await_adapters(self) -> None:
        expected = Counter(self.adapters.expected())  # type: ignore[union-attr]
        ready = self.hub.ask(lambda: self.dispatcher.expect(expected))
        try:
            ready.result(timeout=self.config.startup_timeout)
        except FutureTimeout:
            have = self.hub.ask(lambda: Counter(a.server for a in self.dispatcher.adapters.values()))
            missing = sorted(name for name, n in expected.items() if have[name] < n)
            log.warning(
                "adapters for %s did not register within %.1fs (startup_timeout); serving anyway",
                ", ".join(missing),
                self.config.startup_timeout,
            )

    # -- run -----------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT, then shut down cleanly. Returns the exit status."""
        self._install_signal_handlers()
        sys.setswitchinterval(self.config.gil_switch_interval)
        self.start()
        while not self._stop_requested:
            readable, _, _ = select.select([self._wake_r], [], [], 1.0)
            if readable:
                _drain(self._wake_r)
            if self._reload_requested:
                self._reload_now()
            self.adapters.check()  # type: ignore[union-attr]
            if self.http is not None:
                self.http.check()
        if self.exit_code == 0:
            log.info("received %s: shutting down", signal.Signals(self._stop_requested[0]).name)
        self.shutdown()
        return self.exit_code

    def request_stop(self, signum: int = signal.SIGTERM, *, exit_code: int = 0, reason: str = "shutdown") -> None:
        """Ask `run` to shut down (safe from a signal handler and from any thread)."""
        if exit_code:
            self.exit_code = exit_code
            self._shutdown_reason = reason
        self._stop_requested.append(signum)
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass

    def _install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda n, _frame: self.request_stop(n))
        signal.signal(signal.SIGHUP, lambda _n, _frame: self._request_reload())

    def _request_reload(self) -> None:
        self._reload_requested = True
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass

    # -- stop ----------------------------------------------------------------------

    def shutdown(self) -> None:
        deadline = time.monotonic() + self.config.shutdown_timeout
        reason = self._shutdown_reason
        drained = self.hub.ask(lambda: self.dispatcher.begin_shutdown(reason))
        try:
            drained.result(timeout=max(0.1, deadline - time.monotonic()))
        except FutureTimeout:
            log.warning("sessions did not all close within shutdown_timeout; stopping them")
        if self.http is not None:
            self.http.stop(deadline)
        if self.adapters is not None:
            self.adapters.stop(deadline)
        for actor in self.hub.ask(self.dispatcher.actors):
            actor.stop(block=False)
        if self.supervisor is not None:
            self.supervisor.stop(block=True, timeout=self.config.child_shutdown_timeout * 2 + 1)
        pykka.ActorRegistry.stop_all(block=True, timeout=2)
        self.hub.stop()
        if self.config.discoverable:
            discovery.remove_pointer()
        for lock in self._locks:
            Path(lock.name.removesuffix(".lock")).unlink(missing_ok=True)
            lock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        log.info("stopped")


def _curve(config: DaemonConfig) -> tuple[ServerKeys | None, frozenset[int]]:
    """The daemon's key pair and the sockets that use CurveZMQ (those on tcp); refuses insecure tcp."""
    endpoints = {FRONT: config.front, BACK: config.back, EVENTS: config.events}
    tcp = frozenset(which for which, endpoint in endpoints.items() if endpoint.startswith("tcp://"))
    if not tcp:
        return None, frozenset()
    try:
        keys = load_server_keys(config.state_dir or state_dir())
    except KeyFileError as exc:
        raise DaemonError(str(exc)) from None
    names = ", ".join(endpoints[w] for w in sorted(tcp))
    if keys is not None:
        log.info("CurveZMQ on %s (daemon key %s...)", names, keys.public[:12].decode())
        return keys, tcp
    if not config.security.allow_insecure_tcp:
        raise DaemonError(
            f"{names} is a tcp endpoint, and the daemon has no CurveZMQ key pair in {config.state_dir or state_dir()}: "
            "anyone who can reach the port could use every server. Run `troupe keys generate` (docs/security.rst), "
            "or set [security] allow_insecure_tcp = true to serve it unauthenticated"
        )
    log.warning(
        "INSECURE: serving %s without authentication ([security] allow_insecure_tcp); tcp clients get no operator "
        "rights, and any adapter that reaches the back socket may register",
        names,
    )
    return None, frozenset()


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
