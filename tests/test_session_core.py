"""The sans-IO session core, driven directly: no threads, sockets or clocks."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.session_core import (
    Dropped,
    Era,
    Finished,
    Opened,
    OpenFailed,
    Refuse,
    SessionClosed,
    SessionCore,
    StopServer,
    ToClient,
    ToServer,
)
from actors.state import State
from transport import jsonrpc
from transport.frames import ErrorCode


def started() -> SessionCore:
    core = SessionCore("sid-1", "example", now=0.0)
    assert core.server_started(pid=42, now=0.0) == [Opened(42)]
    return core


def req(i: int | str, method: str = "tools/list", params: dict[str, Any] | None = None) -> dict[str, Any]:
    return jsonrpc.request(i, method, params)


def legacy_active() -> SessionCore:
    core = started()
    init = req(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t"}})
    assert core.receive_from_client(init, 1.0) == [ToServer(init)]
    answer = jsonrpc.result(
        0, {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "s"}}
    )
    assert core.receive_from_server(answer, 1.1) == [ToClient(answer)]
    note = jsonrpc.notification("notifications/initialized")
    assert core.receive_from_client(note, 1.2) == [ToServer(note)]
    return core


def test_legacy_handshake_records_both_sides_and_activates() -> None:
    core = legacy_active()
    assert core.state is State.ACTIVE
    assert core.info.era is Era.LEGACY
    assert core.info.protocol_version == "2025-06-18"
    assert core.info.client_info == {"name": "t"}
    assert core.info.server_info == {"name": "s"}
    assert core.info.server_capabilities == {"tools": {}}
    assert len(core.from_client) == 0


def test_modern_request_activates_without_handshake() -> None:
    core = started()
    msg = req(1, "server/discover", {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}})
    assert core.receive_from_client(msg, 1.0) == [ToServer(msg)]
    assert core.state is State.ACTIVE
    assert core.info.era is Era.MODERN
    assert core.info.protocol_version == "2026-07-28"


def test_server_started_only_once() -> None:
    core = started()
    assert core.server_started(43, 1.0) == []
    assert core.info.pid == 42


def test_response_matched_by_id_and_direction() -> None:
    core = legacy_active()
    core.receive_from_client(req(7), 2.0)
    server_req = req(7, "roots/list")  # same id, other direction: its own id space
    assert core.receive_from_server(server_req, 2.1) == [ToClient(server_req)]
    assert len(core.from_client) == 1 and len(core.from_server) == 1
    answer_to_server = jsonrpc.result(7, {"roots": []})
    assert core.receive_from_client(answer_to_server, 2.2) == [ToServer(answer_to_server)]
    assert len(core.from_server) == 0 and len(core.from_client) == 1
    answer_to_client = jsonrpc.result(7, {"tools": []})
    assert core.receive_from_server(answer_to_client, 2.3) == [ToClient(answer_to_client)]
    assert len(core.from_client) == 0


def test_unknown_and_repeated_responses_are_dropped_not_forwarded() -> None:
    core = legacy_active()
    core.receive_from_client(req(1), 2.0)
    answer = jsonrpc.result(1, {})
    assert core.receive_from_server(answer, 2.1) == [ToClient(answer)]
    out = core.receive_from_server(answer, 2.2)
    assert len(out) == 1 and isinstance(out[0], Dropped)
    out = core.receive_from_client(jsonrpc.result(99, {}), 2.3)
    assert len(out) == 1 and isinstance(out[0], Dropped)
    assert core.dropped == 2


def test_duplicate_pending_id_is_refused_with_32600() -> None:
    core = legacy_active()
    core.receive_from_client(req(5), 2.0)
    [out] = core.receive_from_client(req(5, "tools/call"), 2.1)
    assert isinstance(out, ToClient)
    assert out.msg["id"] == 5 and out.msg["error"]["code"] == jsonrpc.INVALID_REQUEST
    assert core.from_client.get(5).method == "tools/list"  # the original stays


def test_cancel_removes_pending_and_a_racing_response_is_dropped() -> None:
    core = legacy_active()
    core.receive_from_client(req(3, "tools/call"), 2.0)
    cancel = jsonrpc.notification("notifications/cancelled", {"requestId": 3, "reason": "user"})
    assert core.receive_from_client(cancel, 2.1) == [ToServer(cancel)]
    assert 3 not in core.from_client
    [late] = core.receive_from_server(jsonrpc.result(3, {}), 2.2)
    assert isinstance(late, Dropped)


def test_cancel_with_unhashable_request_id_is_harmless() -> None:
    core = legacy_active()
    cancel = jsonrpc.notification("notifications/cancelled", {"requestId": {"x": 1}})
    assert core.receive_from_client(cancel, 2.0) == [ToServer(cancel)]


def test_invalid_json_rpc_from_client_is_refused_with_code() -> None:
    core = legacy_active()
    [out] = core.receive_from_client({"jsonrpc": "1.0", "id": 4, "method": "x"}, 2.0)
    assert isinstance(out, Refuse)
    assert out.code is ErrorCode.INVALID_MESSAGE and out.id == 4
    assert "2.0" in out.message


def test_invalid_json_rpc_from_server_is_dropped() -> None:
    core = legacy_active()
    [out] = core.receive_from_server({"nonsense": True}, 2.0)
    assert isinstance(out, Dropped)


def test_close_answers_every_pending_request_both_ways() -> None:
    core = legacy_active()
    core.receive_from_client(req(1, "tools/call"), 2.0)
    core.receive_from_client(req(2, "tools/list"), 2.0)
    core.receive_from_server(req("s1", "sampling/createMessage"), 2.0)
    out = core.close("client", 3.0)
    to_client = [o.msg for o in out if isinstance(o, ToClient)]
    to_server = [o.msg for o in out if isinstance(o, ToServer)]
    assert sorted(m["id"] for m in to_client) == [1, 2]
    assert [m["id"] for m in to_server] == ["s1"]
    for msg in to_client + to_server:
        assert msg["error"]["code"] == jsonrpc.CONNECTION_CLOSED
        assert msg["error"]["data"]["reason"] == "client"
    assert {m["error"]["data"]["method"] for m in to_client} == {"tools/call", "tools/list"}
    assert SessionClosed("client", "session closed (client)") in out
    assert StopServer("client") in out
    assert core.state is State.SHUTTING_DOWN
    assert len(core.from_client) == len(core.from_server) == 0


def test_shutting_down_refuses_client_and_drops_server_traffic() -> None:
    core = legacy_active()
    core.close("client", 3.0)
    [refused] = core.receive_from_client(req(9), 3.1)
    assert isinstance(refused, Refuse) and refused.code is ErrorCode.SESSION_CLOSED and refused.id == 9
    [dropped] = core.receive_from_server(jsonrpc.notification("notifications/message"), 3.1)
    assert isinstance(dropped, Dropped)
    assert core.close("client", 3.2) == [SessionClosed("client", "session already shutting_down")]


def test_server_exit_after_close_finishes_the_session() -> None:
    core = legacy_active()
    core.close("client", 3.0)
    assert core.server_exited(0, "exited with code 0", 3.5) == [Finished()]
    assert core.state is State.CLOSED
    assert core.server_exited(0, "again", 3.6) == []


def test_server_exit_while_active_fails_pending_and_tells_client() -> None:
    core = legacy_active()
    core.receive_from_client(req(1, "tools/call"), 2.0)
    out = core.server_exited(-9, "killed by signal SIGKILL", 2.5)
    [error] = [o.msg for o in out if isinstance(o, ToClient)]
    assert error["id"] == 1 and error["error"]["code"] == jsonrpc.CONNECTION_CLOSED
    assert error["error"]["data"]["exit_code"] == -9
    assert any(isinstance(o, SessionClosed) and o.reason == "server_exited" for o in out)
    assert out[-1] == Finished()
    assert core.state is State.FAILED and "SIGKILL" in core.machine.failure


def test_spawn_failure_fails_the_open() -> None:
    core = SessionCore("sid", "example", now=0.0)
    out = core.server_exited(None, "spawn failed: no such file", 0.1)
    assert isinstance(out[0], OpenFailed) and "no such file" in out[0].message
    assert out[-1] == Finished()
    assert core.state is State.FAILED


def test_fail_from_any_live_state_answers_pending_and_finishes() -> None:
    for prepare in (started, legacy_active):
        core = prepare()
        core.receive_from_client(req(11, "tools/call"), 2.0)
        out = core.fail("internal error", 2.1)
        assert any(isinstance(o, ToClient) and o.msg["id"] == 11 for o in out)
        assert StopServer("failed") in out and out[-1] == Finished()
        assert core.state is State.FAILED
        assert core.fail("again", 2.2) == []


# -- a model-based property: at most one answer per request, none left behind --------

ids = st.integers(min_value=1, max_value=4)
events = st.lists(
    st.one_of(
        st.tuples(st.just("client_request"), ids),
        st.tuples(st.just("server_result"), ids),
        st.tuples(st.just("client_cancel"), ids),
        st.tuples(st.just("server_request"), ids),
        st.tuples(st.just("client_result"), ids),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(events=events, end=st.sampled_from(["close", "exit", "fail"]))
def test_every_request_is_answered_at_most_once_and_nothing_stays(events: list[tuple[str, int]], end: str) -> None:
    core = legacy_active()
    outstanding: set[int] = set()
    server_outstanding: set[int] = set()
    answers: list[dict[str, Any]] = []

    def to_client(out: list[Any]) -> list[dict[str, Any]]:
        return [o.msg for o in out if isinstance(o, ToClient)]

    for kind, i in events:
        if kind == "client_request":
            out = core.receive_from_client(req(i), 5.0)
            if i in outstanding:
                [dup] = to_client(out)
                assert dup["error"]["code"] == jsonrpc.INVALID_REQUEST
            else:
                assert out == [ToServer(req(i))]
                outstanding.add(i)
        elif kind == "server_result":
            answers += [m for m in to_client(core.receive_from_server(jsonrpc.result(i, {}), 5.0)) if "method" not in m]
            if i in outstanding:
                assert answers[-1]["id"] == i
            outstanding.discard(i)
        elif kind == "client_cancel":
            core.receive_from_client(jsonrpc.notification("notifications/cancelled", {"requestId": i}), 5.0)
            outstanding.discard(i)
        elif kind == "server_request":
            out = core.receive_from_server(req(i, "roots/list"), 5.0)
            if i not in server_outstanding:
                assert to_client(out) == [req(i, "roots/list")]
            server_outstanding.add(i)
        else:
            core.receive_from_client(jsonrpc.result(i, {"roots": []}), 5.0)
            server_outstanding.discard(i)
        assert {p.id for p in core.from_client} == outstanding
        assert {p.id for p in core.from_server} == server_outstanding

    before = set(outstanding)
    if end == "close":
        out = core.close("client", 9.0) + core.server_exited(0, "exited", 9.1)
    elif end == "exit":
        out = core.server_exited(1, "exited with code 1", 9.0)
    else:
        out = core.fail("boom", 9.0)
    errors = [m for m in to_client(out) if "error" in m]
    assert sorted(m["id"] for m in errors) == sorted(before)
    server_errors = [o.msg for o in out if isinstance(o, ToServer) and "error" in o.msg]
    assert end == "exit" or sorted(m["id"] for m in server_errors) == sorted(server_outstanding)
    assert len(core.from_client) == len(core.from_server) == 0
    assert core.state.terminal
    assert out[-1] == Finished()
