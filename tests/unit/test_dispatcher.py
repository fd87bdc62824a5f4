"""The dispatcher's own decisions, driven in one thread: a fake hub (the test's thread is its loop) and a fake clock.

Frames go in as bytes, as the hub hands them over; what the dispatcher and the
session actors send is read back decoded, per socket and peer. Time moves
only when a test moves it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pykka
import pytest
from record_support import session_record

from mcp_troupe.actors.core.options import Limits, ServerPolicy
from mcp_troupe.actors.core.outputs import RespawnServer, ToServer
from mcp_troupe.actors.core.records import RecordError, SessionRecord, token_digest
from mcp_troupe.actors.core.session import SessionCore
from mcp_troupe.actors.daemon import dispatcher as dispatcher_module
from mcp_troupe.actors.daemon.dispatcher import Dispatcher, DispatcherOptions
from mcp_troupe.transport.hub.loop import BACK, FRONT, HubStats
from mcp_troupe.transport.hub.peers import Connection
from mcp_troupe.transport.keys import ANY_SERVER, OPERATOR, VOUCH
from mcp_troupe.transport.wire import frames, jsonrpc
from mcp_troupe.transport.wire.frames import ErrorCode

INITIALIZE = jsonrpc.request(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}})


class FakeHub:
    """The hub's side the dispatcher uses; calls wait in a queue until `run`, as on the real loop."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict[str, Any]]] = []
        self.soon: deque[Callable[[], object]] = deque()
        self.ident = threading.get_ident()
        self.connections: dict[tuple[int, bytes], Connection] = {}
        """What ZAP decided per connection; a peer not listed is taken as the hub takes a local (ipc) one."""

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self.ident

    def call(self, fn: Callable[[], object]) -> None:
        self.soon.append(fn)

    def run(self) -> None:
        while self.soon:
            self.soon.popleft()()

    def send_front(self, peer: bytes, data: bytes) -> None:
        self.sent.append(("front", peer, msgpack.unpackb(data)))

    def send_back(self, peer: bytes, data: bytes) -> None:
        self.sent.append(("back", peer, msgpack.unpackb(data)))

    def stats_now(self) -> HubStats:
        return HubStats()

    def connection(self, which: int, peer: bytes) -> Connection:
        if (which, peer) not in self.connections:
            rights = frozenset({ANY_SERVER}) if which == BACK else frozenset({OPERATOR})
            self.connections[which, peer] = Connection(len(self.connections) + 1, rights=rights)
        return self.connections[which, peer]

    def take(self, socket: str | None = None) -> list[tuple[bytes, dict[str, Any]]]:
        """What was sent (on ``socket``, or both) since the last take."""
        self.run()
        taken = [(peer, frame) for where, peer, frame in self.sent if socket in (None, where)]
        self.sent = [entry for entry in self.sent if socket not in (None, entry[0])]
        return taken


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Daemon:
    """A dispatcher over a fake hub and clock, with the steps the tests repeat."""

    def __init__(self, limits: Limits | None = None, **options: Any) -> None:
        self.hub, self.clock = FakeHub(), Clock()
        _HUBS.append(self.hub)
        self.dispatcher = Dispatcher(
            self.hub,  # type: ignore[arg-type]
            DispatcherOptions(limits=limits or Limits(), **options),
            clock=self.clock,
        )

    def register(self, peer: bytes = b"a1", capacity: int = 0, adapter_id: str | None = None) -> None:
        fields = {"server": "example", "capacity": capacity, "adapter_id": adapter_id}
        self.dispatcher.on_back(peer, frames.encode("register", **fields))
        assert [f["t"] for _, f in self.hub.take("back")] == ["registered"]

    def open(self, client: bytes = b"c1", ref: int = 1) -> dict[str, Any]:
        """Open a session, its adapter answering ``spawned``: the client's ``opened``, or an ``error`` frame."""
        self.dispatcher.on_front(client, frames.encode("open", ref=ref, server="example"))
        self.hub.run()
        spawns = [(peer, f) for where, peer, f in self.hub.sent if where == "back" and f["t"] == "spawn"]
        self.hub.sent = [entry for entry in self.hub.sent if entry[0] != "back" or entry[2]["t"] != "spawn"]
        if spawns:
            [(adapter, spawn)] = spawns
            self.spawned_on = adapter
            self.dispatcher.on_back(adapter, frames.encode("spawned", sid=spawn["sid"], pid=4242))
        self.hub.run()
        answers = [entry for entry in self.hub.sent if entry[:2] == ("front", client) and entry[2].get("ref") == ref]
        assert len(answers) == 1, answers
        self.hub.sent.remove(answers[0])
        return answers[0][2]

    def handshake(self, sid: str, client: bytes = b"c1", adapter: bytes = b"a1") -> None:
        self.dispatcher.on_front(client, frames.encode("mcp", sid=sid, msg=INITIALIZE))
        result = jsonrpc.result(0, {"protocolVersion": "2025-11-25", "capabilities": {}, "serverInfo": {}})
        self.dispatcher.on_back(adapter, frames.encode("mcp", sid=sid, msg=result))
        initialized = jsonrpc.notification("notifications/initialized")
        self.dispatcher.on_front(client, frames.encode("mcp", sid=sid, msg=initialized))
        self.hub.take()


_HUBS: list[FakeHub] = []


@pytest.fixture(autouse=True)
def _no_actors_left() -> Iterator[None]:
    """Stop the sessions the test started: their loop is the test's thread, so run it until they have."""
    yield
    for hub in _HUBS:
        for ref in pykka.ActorRegistry.get_all():
            ref.stop(block=False)
        hub.run()
    _HUBS.clear()
    assert pykka.ActorRegistry.get_all() == []


def test_an_open_for_a_server_nobody_serves_is_refused_with_the_servers_known() -> None:
    d = Daemon()
    refused = d.open()
    assert (refused["t"], refused["code"]) == ("error", ErrorCode.UNKNOWN_SERVER)
    assert "known servers: none" in refused["message"]
    d.register()
    assert d.open(ref=2)["t"] == "opened"


def test_an_open_spawns_the_server_on_the_least_loaded_adapter_with_room() -> None:
    d = Daemon()
    d.register(b"a1", capacity=1)
    d.register(b"a2", capacity=2)
    spawned_on = []
    for ref in (1, 2, 3):
        assert d.open(ref=ref)["t"] == "opened"
        spawned_on.append(d.spawned_on)
    assert sorted(spawned_on) == [b"a1", b"a2", b"a2"]
    busy = d.open(ref=4)
    assert (busy["code"], "session capacity" in busy["message"]) == (ErrorCode.SERVER_BUSY, True)


def test_opening_faster_than_the_client_rate_is_refused_with_the_wait_then_allowed() -> None:
    d = Daemon(Limits(open_rate_per_client=1.0, open_burst=1))
    d.register()
    assert d.open(ref=1)["t"] == "opened"
    refused = d.open(ref=2)
    assert refused["code"] == ErrorCode.RATE_LIMITED
    assert refused["data"] == {"retry_after_ms": 1000, "scope": "client"}
    assert d.open(b"c2", ref=3)["t"] == "opened", "another client has its own rate"
    d.clock.now += 0.5
    assert d.open(ref=4)["data"]["retry_after_ms"] == 500
    d.clock.now += 0.5
    assert d.open(ref=5)["t"] == "opened"


def test_at_max_sessions_an_idle_session_is_evicted_and_without_one_the_open_is_refused() -> None:
    d = Daemon(Limits(max_sessions=2, evict_after_idle=10.0))
    d.register()
    first, second = d.open(ref=1)["sid"], d.open(ref=2)["sid"]
    d.hub.take()
    refused = d.open(ref=3)
    assert refused["code"] == ErrorCode.TOO_MANY_SESSIONS
    assert refused["data"] == {"scope": "global", "current": 2, "limit": 2}
    assert "none has been idle for 10s" in refused["message"]
    d.clock.now += 11
    d.dispatcher.on_front(b"c1", frames.encode("mcp", sid=second, msg=jsonrpc.notification("notifications/x")))
    assert d.open(ref=4)["t"] == "opened", "the session idle for 11 s made room"
    closed = [f for _, f in d.hub.take("front") if f["t"] == "closed"]
    assert [(f["sid"], f["reason"]) for f in closed] == [(first, "evicted")], "the least recently active one"
    assert d.dispatcher.evictions == 1


def test_a_session_is_its_clients_alone() -> None:
    d = Daemon()
    d.register()
    sid = d.open()["sid"]
    d.hub.take()
    d.dispatcher.on_front(b"intruder", frames.encode("mcp", sid=sid, msg=INITIALIZE))
    [(peer, refused)] = d.hub.take("front")
    assert (peer, refused["code"], refused["id"]) == (b"intruder", ErrorCode.NOT_OWNER, 0)
    d.dispatcher.on_front(b"intruder", frames.encode("close", sid=sid, ref=9))
    [(_, refused)] = d.hub.take("front")
    assert (refused["code"], refused["ref"]) == (ErrorCode.NOT_OWNER, 9)
    assert sid in d.dispatcher.sessions


def test_the_global_pending_limit_refuses_requests_beyond_it_and_counts_the_rest() -> None:
    d = Daemon(Limits(max_pending_total=2))
    d.register()
    sid = d.open()["sid"]
    d.handshake(sid)
    for n in (1, 2, 3):
        d.dispatcher.on_front(b"c1", frames.encode("mcp", sid=sid, msg=jsonrpc.request(n, "tools/call", {"name": "x"})))
    d.hub.run()
    refused = [f["msg"] for _, f in d.hub.take("front") if f["t"] == "mcp" and "error" in f["msg"]]
    assert [(m["id"], m["error"]["code"]) for m in refused] == [(3, jsonrpc.TOO_MANY_PENDING)]
    assert d.dispatcher.pending.count == 2


def test_an_adapter_that_reconnects_with_its_id_keeps_its_sessions() -> None:
    d = Daemon()
    d.register(b"a1", adapter_id="7e51d2b8")
    sid = d.open()["sid"]
    d.register(b"a2", adapter_id="7e51d2b8")
    assert list(d.dispatcher.adapters) == [b"a2"]
    d.dispatcher.on_back(b"a2", frames.encode("mcp", sid=sid, msg=jsonrpc.notification("notifications/message")))
    assert [f["t"] for _, f in d.hub.take("front")] == ["mcp"], "the session takes its server's frames from a2"


def test_a_silent_adapter_is_lost_and_a_restartable_session_waits_for_another_until_its_deadline() -> None:
    lost: list[tuple[str | None, str]] = []
    d = Daemon(server_policies={"example": ServerPolicy("restart", 3)}, adapter_timeout=5.0, respawn_timeout=15.0)
    d.dispatcher.on_adapter_lost = lambda adapter_id, reason: lost.append((adapter_id, reason))
    d.register(b"a1", adapter_id="first")
    sid = d.open()["sid"]
    d.hub.take()
    d.clock.now += 6
    d.dispatcher.on_tick(d.clock.now)
    d.hub.run()
    assert lost == [("first", "no frame or heartbeat for 6.0s")]
    assert d.dispatcher.adapter_table.parked_for("example") == [sid], "waiting for an adapter of its server"
    d.clock.now += 16
    d.dispatcher.on_tick(d.clock.now)
    d.hub.run()
    closed = [f for _, f in d.hub.take("front") if f["t"] == "closed"]
    assert [f["sid"] for f in closed] == [sid]
    assert "no adapter of server 'example' came back within 15s" in closed[0]["message"]


def test_a_parked_session_is_respawned_on_the_next_adapter_of_its_server() -> None:
    d = Daemon(server_policies={"example": ServerPolicy("restart", 3)}, adapter_timeout=5.0)
    d.register(b"a1", adapter_id="first")
    sid = d.open()["sid"]
    d.hub.take()
    d.clock.now += 6
    d.dispatcher.on_tick(d.clock.now)
    d.hub.run()
    d.hub.take()
    d.dispatcher.on_back(b"a9", frames.encode("register", server="example", capacity=0, adapter_id="second"))
    back = d.hub.take("back")
    assert [(peer, f["t"]) for peer, f in back] == [(b"a9", "registered"), (b"a9", "spawn")]
    assert back[1][1]["sid"] == sid and d.dispatcher.adapter_table.parked_for("example") == []


# -- sessions of the previous daemon ---------------------------------------------------------------


def stored_record(sid: str = "s-stored", adapter_id: str = "orphan", **changes: Any) -> SessionRecord:
    fields = {"server": "example", "initialize": INITIALIZE, "pid": 777, "env_names": ()}
    return session_record(sid, adapter_id=adapter_id, token_sha256=token_digest(b"the-token"), **{**fields, **changes})


def register_with(d: Daemon, peer: bytes, adapter_id: str, sessions: dict[str, int], **fields: Any) -> list[Any]:
    frame = frames.encode("register", server="example", capacity=0, adapter_id=adapter_id, sessions=sessions, **fields)
    d.dispatcher.on_back(peer, frame)
    return [(f["t"], f.get("sid")) for _, f in d.hub.take("back")]


def test_an_adapter_that_names_a_stored_session_gets_it_restored_and_one_not_stored_stopped() -> None:
    d = Daemon(orphan_grace=30.0)
    d.dispatcher.expect_restores([stored_record("s1"), stored_record("s2", adapter_id="someone-else")])
    back = register_with(d, b"o1", "orphan", {"s1": 777, "s2": 778, "stray": 779}, retiring=True)
    assert back == [("close", "s2"), ("close", "stray"), ("registered", None)], "only what was stored for it"
    assert set(d.dispatcher.sessions) == {"s1"} and set(d.dispatcher.restorable) == {"s2"}
    d.dispatcher.on_front(b"c9", frames.encode("attach", ref=1, sid="s1", token="wrong"))
    assert [f["code"] for _, f in d.hub.take("front")] == ["not_owner"]
    d.dispatcher.on_front(b"c9", frames.encode("attach", ref=2, sid="s1", token="the-token"))
    assert [f["t"] for _, f in d.hub.take("front")] == ["attached"]
    d.dispatcher.on_front(b"c9", frames.encode("mcp", sid="s1", msg=jsonrpc.request(5, "tools/list")))
    sent = [f["msg"]["method"] for _, f in d.hub.take("back") if f["t"] == "mcp"]
    assert sent == ["tools/list"], "Active at once: no handshake asked for"
    assert d.dispatcher.store_stats()["restored"] == 1


def test_a_stored_session_no_adapter_reports_is_restoring_then_lost_after_orphan_grace() -> None:
    d = Daemon(orphan_grace=30.0)
    d.dispatcher.expect_restores([stored_record("s1")])
    d.dispatcher.on_front(b"c9", frames.encode("attach", ref=1, sid="s1", token="the-token"))
    [(_, busy)] = d.hub.take("front")
    assert busy["code"] == "server_busy" and busy["data"] == {"reason": "restoring"}
    d.clock.now += 31
    d.dispatcher.on_tick(d.clock.now)
    assert d.dispatcher.take_store_batch() == [("s1", None)], "removed from the store"
    d.dispatcher.on_front(b"c9", frames.encode("attach", ref=2, sid="s1", token="the-token"))
    [(_, lost)] = d.hub.take("front")
    assert lost["code"] == "unknown_session" and "within orphan_grace (30s)" in lost["message"]
    assert register_with(d, b"o1", "orphan", {"s1": 777}) == [("close", "s1"), ("registered", None)]


def test_a_retiring_adapter_is_given_no_new_session() -> None:
    d = Daemon()
    register_with(d, b"o1", "orphan", {}, retiring=True)
    d.register(b"a1", adapter_id="fresh")
    d.open()
    assert d.spawned_on == b"a1"


def test_a_restored_session_replays_its_handshake_when_its_server_restarts() -> None:
    core = SessionCore.restored(stored_record(), 0.0, Limits(), ServerPolicy("restart", 3))
    assert core.ready and core.started and core.info.pid == 777
    outputs = core.server_exited(1, "crashed", 1.0)
    assert any(isinstance(o, RespawnServer) for o in outputs)
    [replay] = core.server_started(888, 2.0)
    assert isinstance(replay, ToServer) and replay.msg["method"] == "initialize"


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"state": "initializing"}, "cannot be restored"),
        ({"era": "unknown"}, "cannot be restored"),
        ({"era": "medieval"}, "unknown era"),
        ({"initialize": None}, "without its initialize"),
    ],
)
def test_a_record_that_is_not_an_active_session_is_not_restored(changes: dict[str, Any], why: str) -> None:
    with pytest.raises(RecordError, match=why):
        SessionCore.restored(stored_record(**changes), 0.0)


# -- passivation -----------------------------------------------------------------------------------


def passivated_daemon(**limits: Any) -> tuple[Daemon, str]:
    d = Daemon(limits=Limits(passivate_after=10.0, **limits))
    d.register(b"a1", adapter_id="first")
    sid = d.open()["sid"]
    d.handshake(sid)
    d.clock.now += 11
    d.dispatcher.janitor_pass(d.clock.now)
    d.hub.run()
    return d, sid


def test_an_idle_session_is_passivated_and_a_message_brings_it_back_once_its_old_process_exited() -> None:
    d, sid = passivated_daemon()
    assert [(f["t"], f.get("reason")) for _, f in d.hub.take("back")] == [("close", "passivated")]
    assert sid not in d.dispatcher.sessions and sid in d.dispatcher.passivated
    assert d.dispatcher.take_store_batch()[-1][1].state == "passivated"  # type: ignore[union-attr]
    d.dispatcher.on_front(b"c1", frames.encode("mcp", sid=sid, msg=jsonrpc.request(7, "tools/list")))
    assert d.hub.take("back") == [], "no new process while the old one has not exited"
    d.dispatcher.on_back(b"a1", frames.encode("exited", sid=sid, code=0, reason="stopped"))
    assert [f["t"] for _, f in d.hub.take("back")] == ["spawn"]
    d.dispatcher.on_back(b"a1", frames.encode("spawned", sid=sid, pid=5555))
    [(_, replay)] = d.hub.take("back")
    assert replay["msg"]["method"] == "initialize", "the handshake is replayed to the new process"
    result = jsonrpc.result(replay["msg"]["id"], {"protocolVersion": "2025-11-25", "capabilities": {}})
    d.dispatcher.on_back(b"a1", frames.encode("mcp", sid=sid, msg=result))
    sent = [f["msg"].get("method") for _, f in d.hub.take("back")]
    assert sent == ["notifications/initialized", "tools/list"], "then what the client sent, in order"
    d.dispatcher.on_back(b"a1", frames.encode("mcp", sid=sid, msg=jsonrpc.result(7, {"tools": []})))
    [(_, answer)] = d.hub.take("front")
    assert answer["msg"] == jsonrpc.result(7, {"tools": []})
    assert answer["seq"] == 2, "the client's frame sequence goes on (1 was initialize's result)"
    assert d.dispatcher.passivation_stats() == {"passivated": 0, "passivations": 1, "reactivations": 1}


def test_a_passivated_session_is_closed_by_its_client_and_by_nobody_else() -> None:
    d, sid = passivated_daemon()
    d.hub.take()
    d.dispatcher.on_front(b"c2", frames.encode("mcp", sid=sid, msg=jsonrpc.request(1, "ping")))
    assert [f["code"] for _, f in d.hub.take("front")] == ["not_owner"]
    d.dispatcher.on_front(b"c1", frames.encode("close", sid=sid, ref=9))
    [(peer, closed)] = d.hub.take("front")
    assert peer == b"c1" and closed["t"] == "closed" and closed["ref"] == 9
    assert sid not in d.dispatcher.passivated and (sid, None) in d.dispatcher.take_store_batch()


def test_a_full_passivation_table_keeps_the_session_active() -> None:
    d, sid = passivated_daemon(max_passivated=1)
    other = d.open(ref=2)["sid"]
    d.handshake(other)
    d.clock.now += 11
    d.dispatcher.janitor_pass(d.clock.now)
    d.hub.run()
    assert set(d.dispatcher.passivated) == {sid} and other in d.dispatcher.sessions


def test_a_passivated_session_ends_with_its_clients_connection_and_when_its_idle_timeout_comes() -> None:
    d, sid = passivated_daemon()
    d.hub.take()
    d.dispatcher.on_peer_lost(FRONT, b"c1", "disconnected")
    assert sid not in d.dispatcher.passivated and (sid, None) in d.dispatcher.take_store_batch()
    d.dispatcher.on_front(b"c1", frames.encode("open", ref=5, server="example", expire_idle=True))
    d.hub.run()
    [(_, spawn)] = [(p, f) for p, f in d.hub.take("back") if f["t"] == "spawn"]
    d.dispatcher.on_back(b"a1", frames.encode("spawned", sid=spawn["sid"], pid=1))
    d.handshake(spawn["sid"])
    d.clock.now += 11
    d.dispatcher.janitor_pass(d.clock.now)
    d.hub.run()
    assert spawn["sid"] in d.dispatcher.passivated
    d.hub.take()
    d.clock.now += 300  # idle_timeout (300 s) after its last activity
    d.dispatcher.janitor_pass(d.clock.now)
    assert [(f["t"], f["reason"]) for _, f in d.hub.take("front")] == [("closed", "idle")]
    assert spawn["sid"] not in d.dispatcher.passivated


def test_a_session_with_a_message_waiting_is_not_passivated_and_the_message_is_served() -> None:
    d = Daemon(limits=Limits(passivate_after=10.0))
    d.register(b"a1", adapter_id="first")
    sid = d.open()["sid"]
    d.handshake(sid)
    d.clock.now += 11
    d.dispatcher.janitor_pass(d.clock.now)  # Wake is told first ...
    d.dispatcher.on_front(b"c1", frames.encode("close", sid=sid, ref=4))  # ... then the client's close waits
    d.hub.run()
    assert sid not in d.dispatcher.passivated
    assert [(f["t"], f.get("ref")) for _, f in d.hub.take("front")] == [("closed", 4)]


def test_bringing_back_a_passivated_session_respects_max_sessions() -> None:
    d, sid = passivated_daemon(max_sessions=1, on_session_limit="refuse")
    d.hub.take()
    other = d.open(ref=2)["sid"]
    d.handshake(other)
    d.dispatcher.on_front(b"c1", frames.encode("mcp", sid=sid, msg=jsonrpc.request(3, "ping")))
    [(_, refused)] = d.hub.take("front")
    assert refused["code"] == "too_many_sessions" and refused["id"] == 3 and refused["sid"] == sid
    assert sid in d.dispatcher.passivated and d.dispatcher.open_sessions == 1


def test_an_operator_closes_a_passivated_session_and_its_client_is_told() -> None:
    d, sid = passivated_daemon()
    d.hub.take()
    d.dispatcher.on_front(b"op", frames.encode("ctl", ref=1, op="sessions.close", args={"sid": sid}))
    sent = dict(d.hub.take("front"))
    assert sent[b"c1"]["t"] == "closed" and sent[b"c1"]["reason"] == "operator"
    assert sent[b"op"]["ok"] and sent[b"op"]["result"] == {"closed": [sid]}
    assert sid not in d.dispatcher.passivated


def test_a_session_id_never_starts_with_a_dash_so_the_cli_takes_it_as_an_argument() -> None:
    ids = [dispatcher_module._session_id() for _ in range(10_000)]
    assert not [sid for sid in ids if sid.startswith("-")]
    assert len(set(ids)) == len(ids) and {len(sid) for sid in ids} == {22}


@pytest.mark.parametrize(("rights", "walked"), [({ANY_SERVER, VOUCH}, False), ({ANY_SERVER}, True)])
def test_a_checked_message_is_taken_unwalked_only_from_an_adapter_with_the_vouch_right(
    rights: set[str], walked: bool
) -> None:
    daemon = Daemon()
    daemon.hub.connections[BACK, b"a1"] = Connection(1, rights=frozenset(rights))
    daemon.register()
    sid = daemon.open()["sid"]
    daemon.handshake(sid)
    daemon.dispatcher.on_front(b"c1", frames.encode("mcp", sid=sid, msg=jsonrpc.request(7, "tools/list")))
    assert [f["msg"]["id"] for _, f in daemon.hub.take("back")] == [7]
    binary = jsonrpc.result(7, {"blob": b"\x00not JSON"})  # msgpack carries it; JSON cannot
    daemon.dispatcher.on_back(b"a1", frames.encode("mcp", sid=sid, msg=binary, checked=True))
    [(_, frame)] = daemon.hub.take("front")
    if walked:  # refused, and the request it answered is answered with an error, not left waiting
        assert frame["msg"]["error"]["code"] == jsonrpc.INTERNAL_ERROR
    else:  # the adapter vouched: its message went on as it was
        assert frame["msg"]["result"] == {"blob": b"\x00not JSON"}


def test_a_checked_message_still_has_its_json_rpc_structure_checked() -> None:
    daemon = Daemon()
    daemon.hub.connections[BACK, b"a1"] = Connection(1, rights=frozenset({ANY_SERVER, VOUCH}))
    daemon.register()
    sid = daemon.open()["sid"]
    daemon.handshake(sid)
    daemon.dispatcher.on_front(b"c1", frames.encode("mcp", sid=sid, msg=jsonrpc.request(8, "tools/list")))
    daemon.hub.take()
    daemon.dispatcher.on_back(b"a1", frames.encode("mcp", sid=sid, msg={"jsonrpc": "1.0", "id": 8}, checked=True))
    [(_, frame)] = daemon.hub.take("front")
    assert frame["msg"]["error"]["code"] == jsonrpc.INTERNAL_ERROR
