"""A stateful hypothesis test: several sessions, the dispatcher's global count, random interleavings.

It drives `SessionCore` the way `Dispatcher` and `SessionActor` do (the dispatcher admits
a request into the global count, the session reports how its count moved beyond
that) with requests, responses, cancels, timeouts, server exits and closes in
both directions, and checks after every step that no request is answered twice,
no limit is exceeded, a finished session holds nothing, and the global count is
the sum of the sessions' counts.
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from mcp_troupe.actors.core.limits import GlobalPending
from mcp_troupe.actors.core.options import PRIORITY_METHODS, Limits
from mcp_troupe.actors.core.outputs import ToClient, ToServer
from mcp_troupe.actors.core.session import SessionCore
from mcp_troupe.transport.wire import jsonrpc

LIMITS = Limits(
    request_timeout=5,
    timeouts={"tools/call": 10},
    max_pending_per_session=3,
    max_pending_total=5,
    rate_per_session=0,
    idle_timeout=30,
)
SESSIONS = st.integers(min_value=0, max_value=2)
IDS = st.integers(min_value=1, max_value=5)
SERVER_IDS = st.sampled_from(["a", "b", "c"])


class SessionsModel(RuleBasedStateMachine):
    @initialize()
    def open_sessions(self) -> None:
        self.now = 0.0
        self.global_pending = GlobalPending(LIMITS.max_pending_total)
        self.sessions = [SessionCore(f"s{i}", "example", 0.0, LIMITS) for i in range(3)]
        self.outstanding: list[set[int]] = [set() for _ in self.sessions]
        self.server_outstanding: list[set[str]] = [set() for _ in self.sessions]
        for i, core in enumerate(self.sessions):
            core.server_started(100 + i, 0.0)
        for core in self.sessions[:2]:  # two sessions finish the handshake; the third never does
            core.receive_from_client(jsonrpc.request(0, "initialize", {"protocolVersion": "2025-11-25"}), 0.0)
            core.receive_from_server(jsonrpc.result(0, {"protocolVersion": "2025-11-25"}), 0.0)
            core.receive_from_client(jsonrpc.notification("notifications/initialized"), 0.0)

    # -- the dispatcher's and actor's bookkeeping ----------------------------------------------

    def step(self, i: int, event: str, *args: Any, counted: bool = False) -> list[Any]:
        core = self.sessions[i]
        before = len(core.from_client)
        out = getattr(core, event)(*args)
        self.global_pending.apply(len(core.from_client) - before - (1 if counted else 0))
        self.check_answers(i, out)
        return out

    def check_answers(self, i: int, out: list[Any]) -> None:
        for o in out:
            if isinstance(o, ToClient) and "method" not in o.msg:
                request_id = o.msg["id"]
                assert request_id in self.outstanding[i], f"answer to {request_id} nobody waits for: {o.msg}"
                self.outstanding[i].discard(request_id)
            if isinstance(o, ToServer) and "method" not in o.msg:
                assert o.msg["id"] in self.server_outstanding[i], o.msg
                self.server_outstanding[i].discard(o.msg["id"])

    # -- rules ----------------------------------------------------------------------------

    @rule(i=SESSIONS, request_id=IDS, method=st.sampled_from(["tools/call", "tools/list", "ping"]))
    def client_request(self, i: int, request_id: int, method: str) -> None:
        core = self.sessions[i]
        counted, over = False, None
        if method not in PRIORITY_METHODS:
            over = self.global_pending.admit()
            counted = over is None
        before = set(self.outstanding[i])
        self.outstanding[i].add(request_id)  # an immediate refusal answers this submission
        out = self.step(i, "receive_from_client", jsonrpc.request(request_id, method), self.now, over, counted=counted)
        forwarded = any(isinstance(o, ToServer) and o.msg.get("id") == request_id for o in out)
        if forwarded or request_id in before:  # a refused duplicate id leaves the original waiting
            self.outstanding[i].add(request_id)
        else:
            self.outstanding[i].discard(request_id)
        assert forwarded or len(core.from_client) == len(before) or core.state.terminal

    @rule(i=SESSIONS, request_id=IDS, ok=st.booleans())
    def server_answers(self, i: int, request_id: int, ok: bool) -> None:
        msg = jsonrpc.result(request_id, {}) if ok else jsonrpc.error(request_id, -32603, "boom")
        self.step(i, "receive_from_server", msg, self.now)

    @rule(i=SESSIONS, request_id=IDS)
    def client_cancels(self, i: int, request_id: int) -> None:
        note = jsonrpc.notification("notifications/cancelled", {"requestId": request_id})
        out = self.step(i, "receive_from_client", note, self.now)
        if any(isinstance(o, ToServer) for o in out):
            self.outstanding[i].discard(request_id)

    @rule(i=SESSIONS, request_id=SERVER_IDS)
    def server_request(self, i: int, request_id: str) -> None:
        before = set(self.server_outstanding[i])
        self.server_outstanding[i].add(request_id)  # an immediate refusal answers this submission
        out = self.step(i, "receive_from_server", jsonrpc.request(request_id, "roots/list"), self.now)
        if any(isinstance(o, ToClient) and o.msg.get("id") == request_id for o in out) or request_id in before:
            self.server_outstanding[i].add(request_id)
        else:
            self.server_outstanding[i].discard(request_id)

    @rule(i=SESSIONS, request_id=SERVER_IDS)
    def client_answers(self, i: int, request_id: str) -> None:
        out = self.step(i, "receive_from_client", jsonrpc.result(request_id, {"roots": []}), self.now)
        if any(isinstance(o, ToServer) for o in out):
            assert request_id not in self.sessions[i].from_server

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 6.0, 12.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        for i, core in enumerate(self.sessions):
            wake_at = core.next_wake()
            if wake_at is not None and wake_at <= self.now:
                out = self.step(i, "wake", self.now)
                for o in out:  # a timed-out server request is answered to the server, cancelled to the client
                    if isinstance(o, ToServer) and "error" in o.msg:
                        assert o.msg["error"]["code"] == jsonrpc.REQUEST_TIMEOUT or core.state.name != "ACTIVE"

    @rule(i=SESSIONS)
    def client_closes(self, i: int) -> None:
        self.step(i, "close", "client", self.now)
        self.step(i, "server_exited", 0, "exited with code 0", self.now)

    @rule(i=SESSIONS)
    def server_dies(self, i: int) -> None:
        self.step(i, "server_exited", -9, "killed by signal SIGKILL", self.now)

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def pending_matches_the_model(self) -> None:
        for i, core in enumerate(self.sessions):
            assert {p.id for p in core.from_client} == self.outstanding[i]
            assert {p.id for p in core.from_server} == self.server_outstanding[i]

    @invariant()
    def limits_hold(self) -> None:
        """Priority requests (ping, initialize) bypass the limits; nothing else gets past them."""
        limited = [sum(p.method not in PRIORITY_METHODS for p in core.from_client) for core in self.sessions]
        assert all(n <= LIMITS.max_pending_per_session for n in limited)
        assert sum(limited) <= LIMITS.max_pending_total

    @invariant()
    def finished_sessions_hold_nothing(self) -> None:
        for core in self.sessions:
            if core.state.terminal or core.state.name == "SHUTTING_DOWN":
                assert len(core.from_client) == len(core.from_server) == 0
                assert core.next_wake() is None

    @invariant()
    def global_count_is_the_sum(self) -> None:
        assert self.global_pending.count == sum(len(core.from_client) for core in self.sessions)


TestSessionsModel = SessionsModel.TestCase
TestSessionsModel.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
