"""Control operations (``ctl`` frames): the operator's view of the daemon.

Runs on the hub's loop thread, as part of the `Dispatcher` (which owns the tables
read here). Operations that need every session's state gather snapshots
asynchronously: each session actor is told `Describe(reply)`, its reply comes
back to the loop thread through the hub's mailbox, and the answer goes out
once all have replied or after `GATHER_TIMEOUT`, so a slow or dead session
never blocks the loop.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import pykka

from mcp_troupe.actors.core.adapters import AdapterLink
from mcp_troupe.actors.core.limits import GlobalPending
from mcp_troupe.actors.core.records import RecordError
from mcp_troupe.actors.daemon import passivation
from mcp_troupe.actors.daemon.passivation import Passivated
from mcp_troupe.actors.daemon.tables import Route
from mcp_troupe.actors.shells.session import CloseSession, Describe
from mcp_troupe.actors.shells.supervisor import Crash, InjectFault, Status
from mcp_troupe.actors.telemetry.observe import Observers
from mcp_troupe.transport.hub.loop import HubStats
from mcp_troupe.transport.keys import OPERATOR
from mcp_troupe.transport.wire.frames import ErrorCode, encode

log = logging.getLogger("troupe.control")

MAX_HTTP_COUNTS = 200
MAX_HTTP_FRONTS = 64
ACTING = frozenset({"sessions.close", "sessions.cleanup", "inject_fault", "security.reload"})
"""Operations that change something: they need operator rights. The others only read."""
OPERATOR_HELP = (
    "on ipc, run it as the user who owns the daemon's runtime directory; on tcp, with a key in the daemon's "
    "operators_dir (docs/security.rst)"
)

GATHER_TIMEOUT = 2.0
"""Seconds a control operation waits for session snapshots before answering with what it has."""
MAX_AGE = 365 * 24 * 3600.0
"""Longest ``older_than_s`` ``sessions.cleanup`` accepts (365 days)."""

Ref = int | str
Handler = Callable[[bytes, Ref, dict[str, Any]], None]


class ControlError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Gather:
    expected: int
    deadline: float
    finish: Callable[[list[dict[str, Any]], int], None]
    """Called with the snapshots and how many sessions did not answer."""
    results: list[dict[str, Any]] = field(default_factory=list)


class DaemonView(Protocol):
    """What control operations read and do, and all they may: the dispatcher implements it."""

    @property
    def now(self) -> float:
        """The time of the frame or tick being handled: control reads no clock of its own."""
        ...

    @property
    def version(self) -> str: ...
    @property
    def stopping(self) -> bool: ...
    @property
    def closing(self) -> int: ...
    @property
    def evictions(self) -> int: ...
    @property
    def fault_injection(self) -> bool: ...
    @property
    def sessions(self) -> Mapping[str, Route]: ...
    @property
    def adapters(self) -> Mapping[bytes, AdapterLink]: ...
    @property
    def pending(self) -> GlobalPending: ...
    @property
    def errors(self) -> Mapping[str, int]: ...
    @property
    def persist(self) -> bool:
        """The daemon keeps a session store (and so a ``store`` child)."""
        ...

    def store_stats(self) -> dict[str, int]: ...
    def passivation_stats(self) -> dict[str, int]: ...
    @property
    def passivated(self) -> Mapping[str, Passivated]: ...

    def end_passivated(self, sid: str, reason: str) -> None: ...
    @property
    def detached(self) -> Mapping[str, float]: ...
    @property
    def observers(self) -> Observers: ...
    @property
    def pass_env(self) -> Mapping[str, frozenset[str]]: ...
    @property
    def open_sessions(self) -> int: ...

    def to_supervisor(self, message: object) -> bool: ...

    def client_label(self, peer: bytes) -> str: ...

    def rights(self, peer: bytes) -> frozenset[str]:
        """What the client behind ``peer`` may do: ``operator`` for acting operations."""
        ...

    def owns(self, peer: bytes, route: Route) -> bool:
        """The client behind ``peer`` opened the session (its connection, or its CurveZMQ key)."""
        ...

    @property
    def reload_keys(self) -> Callable[[Callable[[dict[str, Any] | str], None]], None] | None:
        """Reads the key directories again off this thread, then calls back with counts (or what failed)."""
        ...


class Outbox(Protocol):
    """What control uses of the hub: sending and calling from any thread, its counters from the loop thread."""

    def send_front(self, peer: bytes, data: bytes) -> None: ...

    def call(self, fn: Callable[[], object]) -> Any: ...

    def stats_now(self) -> HubStats: ...


class ControlPlane:
    def __init__(self, daemon: DaemonView, hub: Outbox) -> None:
        self._dispatcher = daemon
        self._hub = hub
        self._gathers: dict[int, _Gather] = {}
        self._ids = itertools.count()
        self.started = daemon.now
        self.requests = 0
        self._rate: list[tuple[float, int]] = []
        self.handlers: dict[str, Handler] = {
            "health": self._health,
            "status": self._status,
            "stats": self._stats,
            "sessions.list": self._sessions_list,
            "sessions.show": self._sessions_show,
            "sessions.logs": self._sessions_logs,
            "servers": self._servers,
            "sessions.close": self._sessions_close,
            "sessions.cleanup": self._sessions_cleanup,
            "inject_fault": self._inject_fault,
            "security.reload": self._security_reload,
            "http.report": self._http_report,
        }
        self.http_reports: dict[bytes, dict[str, int]] = {}
        """The HTTP fronts' counters (refusals, replay drops...), by connection: each sends all of its own."""

    # -- dispatch ------------------------------------------------------------------

    def handle(self, peer: bytes, ref: Ref, op: str, args: dict[str, Any]) -> None:
        handler = self.handlers.get(op)
        try:
            if handler is None:
                raise ControlError(ErrorCode.UNKNOWN_OP, f"unknown control op {op!r}; known: {sorted(self.handlers)}")
            if op in ACTING and OPERATOR not in self._dispatcher.rights(peer):
                self._dispatcher.observers.metrics.forbidden.labels(op).inc()
                self._audit(peer, op, refused="forbidden")
                raise ControlError(ErrorCode.FORBIDDEN, f"{op} needs operator rights: {OPERATOR_HELP}")
            handler(peer, ref, args)
        except ControlError as exc:
            self.error(peer, ref, exc.code, exc.message)

    def _visible(self, peer: bytes, route: Route) -> bool:
        """Operators see every session; a plain client, its own."""
        return OPERATOR in self._dispatcher.rights(peer) or self._dispatcher.owns(peer, route)

    def reply(self, peer: bytes, ref: Ref, result: dict[str, Any]) -> None:
        """Any thread: the frame goes through the hub's mailbox."""
        self._hub.send_front(peer, encode("ctl", ref=ref, ok=True, result=result))

    def error(self, peer: bytes, ref: Ref, code: ErrorCode, message: str) -> None:
        self._hub.send_front(peer, encode("ctl", ref=ref, ok=False, error={"code": str(code), "message": message}))

    def on_tick(self, now: float) -> None:
        for gid, gather in list(self._gathers.items()):
            if now >= gather.deadline:
                del self._gathers[gid]
                gather.finish(gather.results, gather.expected - len(gather.results))
        self._rate.append((now, self.requests))
        while self._rate and now - self._rate[0][0] > 10.0:
            self._rate.pop(0)

    # -- gathering snapshots ---------------------------------------------------------

    def gather(
        self, routes: list[Route], finish: Callable[[list[dict[str, Any]], int], None], *, stderr: bool = False
    ) -> None:
        gid = next(self._ids)
        gather = _Gather(0, self._dispatcher.now + GATHER_TIMEOUT, finish)
        self._gathers[gid] = gather
        for route in routes:
            try:
                route.actor.tell(Describe(partial(self._from_actor, gid), stderr))
            except pykka.ActorDeadError:
                continue
            gather.expected += 1
        self._check(gid)

    def _from_actor(self, gid: int, snapshot: dict[str, Any]) -> None:
        """Called on a session's thread: hop to the loop thread, the gather's owner."""
        self._hub.call(partial(self._gathered, gid, snapshot))

    def _gathered(self, gid: int, snapshot: dict[str, Any]) -> None:
        gather = self._gathers.get(gid)
        if gather is not None:
            gather.results.append(snapshot)
            self._check(gid)

    def _check(self, gid: int) -> None:
        gather = self._gathers[gid]
        if len(gather.results) >= gather.expected:
            del self._gathers[gid]
            gather.finish(gather.results, 0)

    # -- operations ------------------------------------------------------------------

    def _health(self, peer: bytes, ref: Ref, _args: dict[str, Any]) -> None:
        dispatcher = self._dispatcher
        servers: Counter[str] = Counter(a.server for a in dispatcher.adapters.values())
        self.reply(
            peer,
            ref,
            {
                "status": "stopping" if dispatcher.stopping else "serving",
                "version": dispatcher.version,
                "sessions": len(dispatcher.sessions),
                "open": dispatcher.open_sessions,
                "closing": dispatcher.closing,
                "pending": dispatcher.pending.count,
                "servers": dict(servers),
            },
        )

    def _status(self, peer: bytes, ref: Ref, _args: dict[str, Any]) -> None:
        """The supervision tree; the supervisor answers from its own thread."""
        sessions = len(self._dispatcher.sessions)

        def reply(tree: dict[str, Any]) -> None:
            self.reply(peer, ref, {"supervisor": tree, "sessions": sessions})

        if not self._dispatcher.to_supervisor(Status(reply)):
            raise ControlError(ErrorCode.SHUTTING_DOWN, "the supervisor has stopped; the daemon is shutting down")

    def _stats(self, peer: bytes, ref: Ref, _args: dict[str, Any]) -> None:
        self.reply(peer, ref, self.stats())

    def _http_report(self, peer: bytes, ref: Ref, args: dict[str, Any]) -> None:
        counts = args.get("counts")
        if not isinstance(counts, dict) or len(counts) > MAX_HTTP_COUNTS:
            raise ControlError(ErrorCode.BAD_ARGS, f"http.report takes counts: a map of at most {MAX_HTTP_COUNTS}")
        if not all(isinstance(k, str) and len(k) <= 64 and type(v) is int and v >= 0 for k, v in counts.items()):
            raise ControlError(ErrorCode.BAD_ARGS, "http.report counts map names (<= 64 characters) to integers >= 0")
        if peer not in self.http_reports and len(self.http_reports) >= MAX_HTTP_FRONTS:
            raise ControlError(ErrorCode.BAD_ARGS, f"at most {MAX_HTTP_FRONTS} HTTP fronts report to one daemon")
        self.http_reports[peer] = dict(counts)
        self.reply(peer, ref, {})

    def http_counts(self) -> dict[str, int]:
        """Every HTTP front's counters, summed."""
        total: dict[str, int] = {}
        for counts in self.http_reports.values():
            for name, value in counts.items():
                total[name] = total.get(name, 0) + value
        return total

    def stats(self) -> dict[str, Any]:
        dispatcher, metrics = self._dispatcher, self._dispatcher.observers.metrics
        hub = self._hub.stats_now()
        (t0, n0), (t1, n1) = (self._rate[0], self._rate[-1]) if self._rate else ((0.0, 0), (0.0, 0))
        return {
            "uptime_s": round(self._dispatcher.now - self.started, 3),
            "sessions": {
                "open": dispatcher.open_sessions,
                "closing": dispatcher.closing,
                "evicted": dispatcher.evictions,
                "opened": int(metrics.value("troupe_sessions_opened_total")),
                "closed": {k: int(v) for k, v in metrics.by_label("troupe_sessions_closed", "reason").items()},
            },
            "pending": dispatcher.pending.count,
            "requests": {"total": self.requests, "per_second": round((n1 - n0) / (t1 - t0), 2) if t1 > t0 else 0.0},
            "refused": {k: int(v) for k, v in metrics.by_label("troupe_requests_refused", "reason").items()},
            "forbidden": {k: int(v) for k, v in metrics.by_label("troupe_forbidden", "what").items()},
            "errors": dict(dispatcher.errors),
            "store": dispatcher.store_stats(),
            "passivation": dispatcher.passivation_stats(),
            "http": self.http_counts(),
            "frames": {
                "in": dict(hub.frames_in),
                "out": dict(hub.frames_out),
                "dropped": dict(hub.dropped),
                "held": dict(hub.held),
            },
            "connections": {"open": dict(hub.open_connections), **dict(hub.connections)},
            "backlog_bytes": hub.backlog_bytes,
            "longest_turn_ms": hub.longest_turn_ms,
            "adapters": len(dispatcher.adapters),
        }

    def _sessions_list(self, peer: bytes, ref: Ref, args: dict[str, Any]) -> None:
        server, state = args.get("server"), args.get("state")
        routes = [
            r
            for r in self._dispatcher.sessions.values()
            if (server is None or r.adapter.server == server) and self._visible(peer, r)
        ]

        def finish(snapshots: list[dict[str, Any]], missing: int) -> None:
            snapshots += self._passivated_snapshots(peer, server)
            chosen = [s for s in snapshots if state is None or s["state"] == state]
            chosen.sort(key=lambda s: s["idle_s"])
            self.reply(peer, ref, {"sessions": chosen, "missing": missing})

        self.gather(routes, finish)

    def _passivated_snapshots(self, peer: bytes, server: str | None) -> list[dict[str, Any]]:
        dispatcher = self._dispatcher
        operator = OPERATOR in dispatcher.rights(peer)
        snapshots = []
        for sid, entry in dispatcher.passivated.items():
            if (server is None or entry.server == server) and (operator or entry.client == peer):
                try:
                    snapshots.append(
                        passivation.snapshot(sid, entry, dispatcher.now, detached=sid in dispatcher.detached)
                    )
                except RecordError as exc:  # never stored so: shown by id, not hidden, not fatal
                    log.warning("passivated session %s: its record cannot be read: %s", sid, exc)
        return snapshots

    def _sessions_show(self, peer: bytes, ref: Ref, args: dict[str, Any]) -> None:
        route = self._route(args, peer)

        def finish(snapshots: list[dict[str, Any]], _missing: int) -> None:
            if snapshots:
                self.reply(peer, ref, {"session": snapshots[0]})
            else:
                self.error(peer, ref, ErrorCode.UNKNOWN_SESSION, f"session {args['sid']!r} ended meanwhile")

        self.gather([route], finish)

    def _sessions_logs(self, peer: bytes, ref: Ref, args: dict[str, Any]) -> None:
        """The last lines the session's server wrote to stderr (at most ``STDERR_KEPT``)."""
        route = self._route(args, peer)

        def finish(snapshots: list[dict[str, Any]], _missing: int) -> None:
            if snapshots:
                self.reply(peer, ref, {"sid": args["sid"], "lines": snapshots[0].get("stderr", [])})
            else:
                self.error(peer, ref, ErrorCode.UNKNOWN_SESSION, f"session {args['sid']!r} ended meanwhile")

        self.gather([route], finish, stderr=True)

    def _servers(self, peer: bytes, ref: Ref, _args: dict[str, Any]) -> None:
        """The servers served now: adapters registered, and the variables a session may bring (pass_env)."""
        dispatcher = self._dispatcher
        adapters: Counter[str] = Counter(a.server for a in dispatcher.adapters.values())
        names = set(adapters) | set(dispatcher.pass_env)
        servers = {
            name: {"adapters": adapters[name], "pass_env": sorted(dispatcher.pass_env.get(name, ()))}
            for name in sorted(names)
        }
        self.reply(peer, ref, {"servers": servers})

    def _sessions_close(self, peer: bytes, ref: Ref, args: dict[str, Any]) -> None:
        if args.get("sid") in self._dispatcher.passivated:
            self._audit(peer, "sessions.close", sid=args["sid"])
            self._dispatcher.end_passivated(args["sid"], "operator")
            self.reply(peer, ref, {"closed": [args["sid"]]})
            return
        route = self._route(args)
        self._audit(peer, "sessions.close", sid=args["sid"])  # before acting: the log reads in causal order
        route.actor.tell(CloseSession("operator"))
        self.reply(peer, ref, {"closed": [args["sid"]]})

    def _sessions_cleanup(self, peer: bytes, ref: Ref, args: dict[str, Any]) -> None:
        older = args.get("older_than_s")
        if (
            not isinstance(older, (int, float))
            or isinstance(older, bool)
            or not math.isfinite(older)
            or not 0 <= older <= MAX_AGE
        ):
            raise ControlError(ErrorCode.BAD_ARGS, "args.older_than_s must be a number of seconds from 0 to 365 days")
        idle = bool(args.get("idle", False))
        key = "idle_s" if idle else "age_s"

        def finish(snapshots: list[dict[str, Any]], _missing: int) -> None:
            snapshots += self._passivated_snapshots(peer, None)
            states = ("initializing", "active", "passivated")
            closed = [s["sid"] for s in snapshots if s[key] >= older and s["state"] in states]
            self._audit(peer, "sessions.cleanup", older_than_s=older, idle=idle, closed=closed)
            for sid in closed:
                if sid in self._dispatcher.passivated:
                    self._dispatcher.end_passivated(sid, "cleanup")
                    continue
                route = self._dispatcher.sessions.get(sid)
                if route is not None:
                    route.actor.tell(CloseSession("cleanup"))
            self.reply(peer, ref, {"closed": closed})

        self.gather(list(self._dispatcher.sessions.values()), finish)

    def _inject_fault(self, peer: bytes, ref: Ref, args: dict[str, Any]) -> None:
        dispatcher = self._dispatcher
        if not dispatcher.fault_injection:
            message = "fault injection is off; start the daemon with --enable-fault-injection to allow it"
            raise ControlError(ErrorCode.FORBIDDEN, message)
        target, when = str(args.get("target")), args.get("when", "now")
        if when not in ("now", "start", "both"):
            raise ControlError(ErrorCode.BAD_ARGS, "args.when must be 'now', 'start' or 'both'")
        is_child = target in ("janitor", "evictor") or (target == "store" and dispatcher.persist)
        is_session = target == "session" and isinstance(args.get("sid"), str) and args["sid"] in dispatcher.sessions
        if not (is_child or is_session):
            message = (
                "args.target must be 'janitor', 'evictor', 'store' (when the daemon keeps a store), "
                "or 'session' with args.sid of an open session"
            )
            raise ControlError(ErrorCode.BAD_ARGS, message)
        self._audit(peer, "inject_fault", target=target, when=when, sid=args.get("sid"))
        if is_child:
            dispatcher.to_supervisor(
                InjectFault(target, now=when in ("now", "both"), next_start=when in ("start", "both"))
            )
        else:
            dispatcher.sessions[args["sid"]].actor.tell(Crash())
        self.reply(peer, ref, {"injected": target, "when": when})

    def _route(self, args: dict[str, Any], peer: bytes | None = None) -> Route:
        """The session ``args.sid`` names; with ``peer``, only if that client may see it (others are told
        it does not exist: a session id is no proof of anything)."""
        sid = args.get("sid")
        if not isinstance(sid, str):
            raise ControlError(ErrorCode.BAD_ARGS, "args.sid must be a session id string")
        route = self._dispatcher.sessions.get(sid)
        if route is None or (peer is not None and not self._visible(peer, route)):
            raise ControlError(ErrorCode.UNKNOWN_SESSION, f"no open session {sid[:64]!r}")
        return route

    def _security_reload(self, peer: bytes, ref: Ref, _args: dict[str, Any]) -> None:
        reload = self._dispatcher.reload_keys
        if reload is None:
            raise ControlError(ErrorCode.BAD_ARGS, "this daemon uses no CurveZMQ keys (no tcp endpoint with keys)")
        self._audit(peer, "security.reload")

        def done(result: dict[str, Any] | str) -> None:
            if isinstance(result, str):
                self.error(peer, ref, ErrorCode.BAD_ARGS, result)
            else:
                self.reply(peer, ref, result)

        reload(done)

    def _audit(self, peer: bytes, action: str, **fields: Any) -> None:
        self._dispatcher.observers.audit(
            {"event": "control", "action": action, "client": self._dispatcher.client_label(peer), **fields}
        )
