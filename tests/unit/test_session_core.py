"""The sans-IO session core, driven directly: no threads, sockets or clocks."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_troupe.actors.core.era import Era
from mcp_troupe.actors.core.options import Limits, ServerPolicy
from mcp_troupe.actors.core.outputs import (
    Dropped,
    Finished,
    Opened,
    OpenFailed,
    Output,
    Refuse,
    RequestDone,
    RequestRefused,
    RespawnServer,
    Schedule,
    SessionClosed,
    StopServer,
    ToClient,
    ToServer,
    Warn,
)
from mcp_troupe.actors.core.session import SessionCore
from mcp_troupe.actors.core.state import State
from mcp_troupe.transport.wire import jsonrpc
from mcp_troupe.transport.wire.frames import ErrorCode

QUIET = Limits(idle_timeout=0)
MODERN_META = {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}


def fx(out: list[Output]) -> list[Output]:
    """The effects of a step, without bookkeeping (wake-ups, metrics), which is tested on its own."""
    return [o for o in out if not isinstance(o, (Schedule, RequestDone, RequestRefused))]


def started(limits: Limits = QUIET) -> SessionCore:
    core = SessionCore("sid-1", "example", now=0.0, limits=limits)
    assert fx(core.server_started(pid=42, now=0.0)) == [Opened(42)]
    return core


def req(i: int | str, method: str = "tools/list", params: dict[str, Any] | None = None) -> dict[str, Any]:
    return jsonrpc.request(i, method, params)


def note(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return jsonrpc.notification(method, params)


INIT = req(
    0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {"roots": {}}, "clientInfo": {"name": "t"}}
)
INIT_RESULT = jsonrpc.result(
    0, {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "s"}}
)


def legacy_active(limits: Limits = QUIET) -> SessionCore:
    core = started(limits)
    assert fx(core.receive_from_client(INIT, 1.0)) == [ToServer(INIT)]
    assert fx(core.receive_from_server(INIT_RESULT, 1.1)) == [ToClient(INIT_RESULT)]
    assert fx(core.receive_from_client(note("notifications/initialized"), 1.2)) == [
        ToServer(note("notifications/initialized"))
    ]
    return core


def error_of(out: list[Output], direction: type = ToClient) -> dict[str, Any]:
    [msg] = [o.msg for o in out if isinstance(o, direction) and "error" in o.msg]
    return msg["error"]


# -- eras and the handshake -------------------------------------------------------


def test_legacy_handshake_records_both_sides_and_activates() -> None:
    core = legacy_active()
    assert core.state is State.ACTIVE
    assert (core.info.era, core.info.era_confirmed) == (Era.LEGACY, True)
    assert core.info.protocol_version == "2025-06-18"
    assert core.info.client_info == {"name": "t"}
    assert core.info.server_info == {"name": "s"}
    assert core.info.client_capabilities == {"roots": {}}
    assert core.info.server_capabilities == {"tools": {}}


def test_modern_request_activates_once_the_server_accepts_it() -> None:
    core = started()
    msg = req(1, "server/discover", MODERN_META)
    assert fx(core.receive_from_client(msg, 1.0)) == [ToServer(msg)]
    assert core.state is State.INITIALIZING and core.info.era is Era.MODERN and not core.info.era_confirmed
    core.receive_from_server(jsonrpc.result(1, {"supportedVersions": ["2026-07-28"]}), 1.1)
    assert core.state is State.ACTIVE and core.info.era_confirmed
    assert core.info.protocol_version == "2026-07-28"
    call = req(2, "tools/call", {"name": "echo", **MODERN_META})
    assert fx(core.receive_from_client(call, 1.2)) == [ToServer(call)]


def test_dual_era_probe_falls_back_to_initialize() -> None:
    core = started()
    core.receive_from_client(req(1, "server/discover", MODERN_META), 1.0)
    core.receive_from_server(jsonrpc.error(1, jsonrpc.METHOD_NOT_FOUND, "no"), 1.1)
    assert core.info.era is Era.UNKNOWN and core.state is State.INITIALIZING
    init = {**INIT, "id": 2}
    assert fx(core.receive_from_client(init, 1.2)) == [ToServer(init)]
    core.receive_from_server({**INIT_RESULT, "id": 2}, 1.3)
    core.receive_from_client(note("notifications/initialized"), 1.4)
    assert core.state is State.ACTIVE and core.info.era is Era.LEGACY


def test_after_legacy_handshake_a_modern_request_gets_32600() -> None:
    core = legacy_active()
    out = core.receive_from_client(req(5, "tools/list", MODERN_META), 2.0)
    assert error_of(out)["code"] == jsonrpc.INVALID_REQUEST
    assert 5 not in core.from_client


def test_after_a_modern_request_initialize_gets_32022() -> None:
    core = started()
    core.receive_from_client(req(1, "tools/list", MODERN_META), 1.0)
    core.receive_from_server(jsonrpc.result(1, {"tools": []}), 1.1)
    err = error_of(core.receive_from_client({**INIT, "id": 2}, 1.2))
    assert err["code"] == jsonrpc.UNSUPPORTED_PROTOCOL_VERSION
    assert err["data"] == {"supported": ["2026-07-28"], "requested": "2025-11-25"}


def test_input_required_retry_passes_through() -> None:
    core = started()
    core.receive_from_client(req(1, "tools/call", {"name": "x", **MODERN_META}), 1.0)
    needs_input = jsonrpc.result(1, {"resultType": "input_required", "inputRequests": {"a": {}}})
    assert fx(core.receive_from_server(needs_input, 1.1)) == [ToClient(needs_input)]
    retry = req(2, "tools/call", {"name": "x", "inputResponses": {"a": {"roots": []}}, **MODERN_META})
    assert fx(core.receive_from_client(retry, 1.2)) == [ToServer(retry)]


def test_before_the_handshake_only_ping_and_initialize_pass() -> None:
    core = started()
    err = error_of(core.receive_from_client(req(1, "tools/list"), 1.0))
    assert err["code"] == jsonrpc.NOT_INITIALIZED and err["data"] == {"state": "initializing", "era": "unknown"}
    assert fx(core.receive_from_client(req(2, "ping"), 1.0)) == [ToServer(req(2, "ping"))]
    [refused] = core.receive_from_client(note("notifications/roots/list_changed"), 1.0)
    assert isinstance(refused, Refuse) and refused.code is ErrorCode.NOT_INITIALIZED


def test_what_a_fast_client_sends_before_the_initialize_result_waits_for_it() -> None:
    """A client may pipeline ``notifications/initialized`` (and more) right after ``initialize``: a server
    reading its stdin in turn would see the result go out first, so the session holds them until then."""
    core = started()
    core.receive_from_client(INIT, 1.0)
    assert fx(core.receive_from_client(note("notifications/initialized"), 1.1)) == []
    assert fx(core.receive_from_client(req(1, "tools/list"), 1.2)) == []
    assert core.state is State.INITIALIZING
    out = fx(core.receive_from_server(INIT_RESULT, 1.3))
    assert out == [ToClient(INIT_RESULT), ToServer(note("notifications/initialized")), ToServer(req(1, "tools/list"))]
    assert core.state is State.ACTIVE and 1 in core.from_client


def test_held_messages_are_answered_when_the_handshake_fails_or_the_session_ends() -> None:
    core = started()
    core.receive_from_client(INIT, 1.0)
    core.receive_from_client(note("notifications/initialized"), 1.1)
    core.receive_from_client(req(1, "tools/list"), 1.2)
    out = core.receive_from_server(jsonrpc.error(0, -32602, "unsupported version"), 1.3)
    refused = [o for o in out if isinstance(o, Refuse)]
    assert [r.code for r in refused] == [ErrorCode.NOT_INITIALIZED], "initialized without a result: refused"
    [held] = [o.msg for o in out if isinstance(o, ToClient) and o.msg.get("id") == 1]
    assert held["error"]["code"] == jsonrpc.NOT_INITIALIZED, "the request: not allowed before the handshake"
    ended = started()
    ended.receive_from_client(INIT, 1.0)
    ended.receive_from_client(req(2, "tools/list"), 1.1)
    answers = [o.msg for o in ended.close("client", 2.0) if isinstance(o, ToClient)]
    assert sorted(a["id"] for a in answers) == [0, 2], "the pending initialize and the held request"


def test_server_before_initialized_may_only_ping_and_log() -> None:
    core = started()
    core.receive_from_client(INIT, 1.0)
    out = core.receive_from_server(req("s1", "roots/list"), 1.1)
    assert error_of(out, ToServer)["code"] == jsonrpc.NOT_INITIALIZED
    assert fx(core.receive_from_server(req("s2", "ping"), 1.1)) == [ToClient(req("s2", "ping"))]
    log = note("notifications/message", {"level": "info", "data": "hi"})
    assert fx(core.receive_from_server(log, 1.1)) == [ToClient(log)]
    [dropped] = core.receive_from_server(note("notifications/tools/list_changed"), 1.1)
    assert isinstance(dropped, Dropped)


# -- correlation -----------------------------------------------------------------------


def test_response_matched_by_id_and_direction() -> None:
    core = legacy_active()
    core.receive_from_client(req(7), 2.0)
    server_req = req(7, "roots/list")  # same id, other direction: its own id space
    assert fx(core.receive_from_server(server_req, 2.1)) == [ToClient(server_req)]
    assert len(core.from_client) == 1 and len(core.from_server) == 1
    answer_to_server = jsonrpc.result(7, {"roots": []})
    assert fx(core.receive_from_client(answer_to_server, 2.2)) == [ToServer(answer_to_server)]
    assert len(core.from_server) == 0 and len(core.from_client) == 1
    answer_to_client = jsonrpc.result(7, {"tools": []})
    assert fx(core.receive_from_server(answer_to_client, 2.3)) == [ToClient(answer_to_client)]
    assert len(core.from_client) == 0


def test_a_client_response_refused_for_its_size_is_answered_to_the_server_in_its_place() -> None:
    core = legacy_active()
    core.receive_from_client(req(7), 2.0)
    core.receive_from_server(req(7, "roots/list"), 2.1)
    answer = jsonrpc.error(7, jsonrpc.MESSAGE_TOO_LARGE, "too large")
    assert fx(core.client_response_refused(7, answer, 2.2)) == [ToServer(answer)]
    assert len(core.from_server) == 0 and len(core.from_client) == 1, "the client's own request 7 still waits"
    assert core.client_response_refused(7, answer, 2.3) == [], "said once; and a client request's id is no response"


def test_unknown_and_repeated_responses_are_dropped_and_counted() -> None:
    core = legacy_active()
    core.receive_from_client(req(1), 2.0)
    answer = jsonrpc.result(1, {})
    assert fx(core.receive_from_server(answer, 2.1)) == [ToClient(answer)]
    assert [type(o) for o in core.receive_from_server(answer, 2.2)] == [Dropped]
    assert [type(o) for o in core.receive_from_client(jsonrpc.result(99, {}), 2.3)] == [Dropped]
    assert core.dropped == 2


def test_duplicate_pending_id_is_refused_with_32600_both_ways() -> None:
    core = legacy_active()
    core.receive_from_client(req(5), 2.0)
    assert error_of(core.receive_from_client(req(5, "tools/call"), 2.1))["code"] == jsonrpc.INVALID_REQUEST
    assert core.from_client.get(5).method == "tools/list"  # the original stays
    core.receive_from_server(req("s", "roots/list"), 2.2)
    assert error_of(core.receive_from_server(req("s", "roots/list"), 2.3), ToServer)["code"] == jsonrpc.INVALID_REQUEST


# -- cancellation ------------------------------------------------------------------------


def test_cancel_removes_pending_and_a_racing_response_is_dropped() -> None:
    core = legacy_active()
    core.receive_from_client(req(3, "tools/call"), 2.0)
    cancel = note("notifications/cancelled", {"requestId": 3, "reason": "user"})
    assert fx(core.receive_from_client(cancel, 2.1)) == [ToServer(cancel)]
    assert 3 not in core.from_client
    assert [type(o) for o in core.receive_from_server(jsonrpc.result(3, {}), 2.2)] == [Dropped]


def test_server_cancels_its_own_request() -> None:
    core = legacy_active()
    core.receive_from_server(req("s1", "sampling/createMessage"), 2.0)
    cancel = note("notifications/cancelled", {"requestId": "s1"})
    assert fx(core.receive_from_server(cancel, 2.1)) == [ToClient(cancel)]
    assert [type(o) for o in core.receive_from_client(jsonrpc.result("s1", {}), 2.2)] == [Dropped]


def test_initialize_cannot_be_cancelled() -> None:
    core = started()
    core.receive_from_client(INIT, 1.0)
    [refused] = core.receive_from_client(note("notifications/cancelled", {"requestId": 0}), 1.1)
    assert isinstance(refused, Refuse) and "initialize cannot be cancelled" in refused.message
    assert 0 in core.from_client


def test_cancel_with_unhashable_request_id_is_harmless() -> None:
    core = legacy_active()
    cancel = note("notifications/cancelled", {"requestId": {"x": 1}})
    assert fx(core.receive_from_client(cancel, 2.0)) == [ToServer(cancel)]


# -- progress and timeouts -----------------------------------------------------------------


def test_request_times_out_with_32001_and_the_server_is_told() -> None:
    core = legacy_active(Limits(idle_timeout=0, request_timeout=5))
    core.receive_from_client(req(1, "tools/call"), 10.0)
    assert core.next_wake() == 15.0
    assert core.wake(10.0) == [Schedule(15.0)]  # the wake-up asked for at initialize (6.0) re-arms
    assert fx(core.wake(14.9)) == []
    out = fx(core.wake(15.0))
    err = error_of(out)
    assert err["code"] == jsonrpc.REQUEST_TIMEOUT and err["message"] == "Request timed out"
    assert err["data"] == {"method": "tools/call", "timeout_ms": 5000}
    [cancel] = [o.msg for o in out if isinstance(o, ToServer)]
    assert cancel["method"] == "notifications/cancelled" and cancel["params"]["requestId"] == 1
    assert "timed out" in cancel["params"]["reason"]
    assert len(core.from_client) == 0
    assert [type(o) for o in core.receive_from_server(jsonrpc.result(1, {}), 15.1)] == [Dropped]


def test_per_method_timeouts_and_server_requests_time_out_too() -> None:
    core = legacy_active(Limits(idle_timeout=0, request_timeout=5, timeouts={"tools/call": 60, "roots/list": 2}))
    core.receive_from_client(req(1, "tools/call"), 0.0)
    core.receive_from_client(req(2, "tools/list"), 0.0)
    core.receive_from_server(req("s", "roots/list"), 0.0)
    assert core.next_wake() == 2.0
    out = fx(core.wake(2.0))
    assert error_of(out, ToServer)["data"]["method"] == "roots/list"
    assert [o.msg["method"] for o in out if isinstance(o, ToClient)] == ["notifications/cancelled"]
    assert error_of(fx(core.wake(5.0)))["data"]["method"] == "tools/list"
    assert [p.id for p in core.from_client] == [1]
    assert core.next_wake() == 60.0


def test_progress_passes_through_and_restarts_the_timeout() -> None:
    core = legacy_active(Limits(idle_timeout=0, request_timeout=5))
    core.receive_from_client(req(1, "tools/call", {"name": "sleep", "_meta": {"progressToken": "tok"}}), 0.0)
    progress = note("notifications/progress", {"progressToken": "tok", "progress": 1, "total": 3})
    assert fx(core.receive_from_server(progress, 4.0)) == [ToClient(progress)]
    assert core.from_client.get(1).progress_count == 1
    assert fx(core.wake(5.0)) == []
    assert core.next_wake() == 9.0


def test_progress_can_be_told_not_to_restart_the_timeout() -> None:
    core = legacy_active(Limits(idle_timeout=0, request_timeout=5, progress_resets_timeout=False))
    core.receive_from_client(req(1, "tools/call", {"_meta": {"progressToken": 7}}), 0.0)
    core.receive_from_server(note("notifications/progress", {"progressToken": 7, "progress": 1}), 4.0)
    assert error_of(fx(core.wake(5.0)))["code"] == jsonrpc.REQUEST_TIMEOUT


def test_wake_ups_are_requested_only_when_earlier() -> None:
    core = legacy_active(Limits(idle_timeout=0, request_timeout=5))
    assert [o for o in core.receive_from_client(req(1), 0.0) if isinstance(o, Schedule)] == [Schedule(5.0)]
    assert [o for o in core.receive_from_client(req(2), 1.0) if isinstance(o, Schedule)] == []
    assert Schedule(6.0) in core.wake(5.0)


def test_idle_session_is_closed_by_its_wake_up() -> None:
    core = SessionCore("sid", "example", now=0.0, limits=Limits(idle_timeout=60))
    assert Schedule(60.0) in core.server_started(1, 0.0)
    core.receive_from_client(req(1, "ping"), 30.0)
    core.receive_from_server(jsonrpc.result(1, {}), 30.0)
    assert Schedule(90.0) in core.wake(60.0)  # traffic at 30 s moved the idle deadline
    out = core.wake(90.0)
    assert SessionClosed("idle", "session closed (idle)") in out and StopServer("idle") in out


def test_a_request_timeout_does_not_restart_the_idle_clock() -> None:
    """docs/limits.rst: the -32001 is the daemon's message, not traffic of either peer."""
    core = legacy_active(Limits(idle_timeout=10, request_timeout=30))
    core.receive_from_client(req(5, "tools/call"), 2.0)  # last traffic at 2 s; pending until 32 s
    out = core.wake(32.0)
    assert error_of(out)["code"] == jsonrpc.REQUEST_TIMEOUT
    assert SessionClosed("idle", "session closed (idle)") in out, "idle since 2 s: closed at the same tick"


def test_pending_requests_keep_a_session_from_idling() -> None:
    core = legacy_active(Limits(idle_timeout=10, request_timeout=100))
    core.receive_from_client(req(1, "tools/call"), 0.0)
    assert not any(isinstance(o, SessionClosed) for o in core.wake(50.0))


# -- limits ------------------------------------------------------------------------------------


def test_session_pending_limit_and_priority_bypass() -> None:
    core = legacy_active(Limits(idle_timeout=0, max_pending_per_session=3, soft_limit_ratio=1.0))
    for i in (1, 2, 3):
        core.receive_from_client(req(i), 0.0)
    err = error_of(core.receive_from_client(req(9), 0.0))
    assert err["code"] == jsonrpc.TOO_MANY_PENDING and err["data"] == {"scope": "session", "current": 3, "limit": 3}
    assert fx(core.receive_from_client(req(4, "ping"), 0.0)) == [ToServer(req(4, "ping"))]
    cancel = note("notifications/cancelled", {"requestId": 1})
    assert fx(core.receive_from_client(cancel, 0.0)) == [ToServer(cancel)]
    assert any(isinstance(o, SessionClosed) for o in core.close("client", 0.1))


def test_global_limit_decided_by_the_router_is_reported() -> None:
    core = legacy_active()
    err = error_of(core.receive_from_client(req(1), 0.0, over_global=(10_000, 10_000)))
    assert err["code"] == jsonrpc.TOO_MANY_PENDING
    assert err["data"] == {"scope": "global", "current": 10_000, "limit": 10_000}
    assert len(core.from_client) == 0


def test_soft_limit_warns_once_per_crossing() -> None:
    core = legacy_active(Limits(idle_timeout=0, max_pending_per_session=10, soft_limit_ratio=0.5))
    warnings = []
    for i in range(1, 8):
        warnings += [o for o in core.receive_from_client(req(i), 0.0) if isinstance(o, Warn)]
    assert len(warnings) == 1 and "5 requests pending" in warnings[0].message
    for i in range(1, 8):
        core.receive_from_server(jsonrpc.result(i, {}), 0.1)
    again = [o for i in range(10, 16) for o in core.receive_from_client(req(i), 0.2) if isinstance(o, Warn)]
    assert len(again) == 1


def test_rate_limit_refuses_with_retry_after() -> None:
    core = legacy_active(Limits(idle_timeout=0, rate_per_session=10, rate_burst=2))
    core.receive_from_client(req(1), 5.0)
    core.receive_from_client(req(2), 5.0)
    err = error_of(core.receive_from_client(req(3), 5.0))
    assert err["code"] == jsonrpc.RATE_LIMITED and err["data"]["retry_after_ms"] == 100
    assert fx(core.receive_from_client(req(4, "ping"), 5.0)) == [ToServer(req(4, "ping"))]
    assert fx(core.receive_from_client(req(5), 5.2)) == [ToServer(req(5))]


# -- metadata ------------------------------------------------------------------------------------


def test_describe_reports_metadata_and_tags() -> None:
    core = legacy_active(Limits(idle_timeout=0, long_running_after=100, high_volume_frames=5))
    core.receive_from_client(req(1, "tools/call"), 2.0)
    snap = core.describe(50.0)
    assert snap["frames"] == {"client_to_server": 3, "server_to_client": 1}
    assert snap["pending"] == [{"direction": "client_to_server", "id": 1, "method": "tools/call", "age_s": 48.0}]
    assert snap["era"] == "legacy" and snap["protocol_version"] == "2025-06-18" and snap["tags"] == []
    core.receive_from_server(jsonrpc.result(1, {}), 60.0)
    assert core.describe(150.0)["tags"] == ["long-running", "high-volume"]


# -- endings ------------------------------------------------------------------------------------


def test_invalid_json_rpc_from_client_is_refused_with_code() -> None:
    core = legacy_active()
    [out] = core.receive_from_client({"jsonrpc": "1.0", "id": 4, "method": "x"}, 2.0)
    assert isinstance(out, Refuse) and out.code is ErrorCode.INVALID_MESSAGE and out.id == 4


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
        assert msg["error"]["code"] == jsonrpc.CONNECTION_CLOSED and msg["error"]["data"]["reason"] == "client"
    assert out[-2:] == [SessionClosed("client", "session closed (client)"), StopServer("client")]
    assert core.state is State.SHUTTING_DOWN
    assert len(core.from_client) == len(core.from_server) == 0


def test_shutting_down_refuses_client_and_drops_server_traffic() -> None:
    core = legacy_active()
    core.close("client", 3.0)
    [refused] = core.receive_from_client(req(9), 3.1)
    assert isinstance(refused, Refuse) and refused.code is ErrorCode.SESSION_CLOSED and refused.id == 9
    assert [type(o) for o in core.receive_from_server(note("notifications/message"), 3.1)] == [Dropped]
    assert core.close("client", 3.2, repeat=True) == [SessionClosed("client", "session already shutting_down")]
    assert core.close("evicted", 3.2) == []
    assert core.wake(1000.0) == []


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
    err = error_of(out)
    assert err["code"] == jsonrpc.CONNECTION_CLOSED and err["data"]["exit_code"] == -9
    assert any(isinstance(o, SessionClosed) and o.reason == "server_exited" for o in out)
    assert out[-1] == Finished()
    assert core.state is State.FAILED and "SIGKILL" in (core.machine.failure or "")


def test_spawn_failure_fails_the_open() -> None:
    core = SessionCore("sid", "example", now=0.0)
    out = core.server_exited(None, "spawn failed: no such file", 0.1)
    assert isinstance(out[0], OpenFailed) and "no such file" in out[0].message
    assert out[-1] == Finished() and core.state is State.FAILED


@pytest.mark.parametrize("prepare", [started, legacy_active])
def test_fail_from_any_live_state_answers_pending_and_finishes(prepare: Any) -> None:
    core = prepare()
    core.receive_from_client(req(11, "ping"), 2.0)
    out = core.fail("internal error", 2.1)
    assert any(isinstance(o, ToClient) and o.msg["id"] == 11 for o in out)
    assert StopServer("failed") in out and out[-1] == Finished()
    assert core.state is State.FAILED
    assert core.fail("again", 2.2) == []


def test_closing_before_the_server_started_answers_the_open() -> None:
    core = SessionCore("sid", "example", now=0.0)
    out = core.close("shutdown", 0.1)
    assert isinstance(out[0], OpenFailed) and "before server 'example' started" in out[0].message
    assert not any(isinstance(o, SessionClosed) for o in out)
    assert core.server_exited(None, "spawn refused", 0.2) == [Finished()]


# -- server restarts (on_exit = "restart") --------------------------------------------------


def restarting(max_restarts: int = 2) -> SessionCore:
    core = SessionCore("sid", "example", now=0.0, limits=QUIET, policy=ServerPolicy("restart", max_restarts))
    core.server_started(1, 0.0)
    core.receive_from_client(INIT, 1.0)
    core.receive_from_server(INIT_RESULT, 1.1)
    core.receive_from_client(note("notifications/initialized"), 1.2)
    return core


def test_restart_fails_pending_replays_the_handshake_and_resumes() -> None:
    core = restarting()
    core.receive_from_client(req(1, "tools/call"), 2.0)
    core.receive_from_server(req("s1", "roots/list"), 2.0)
    out = core.server_exited(1, "exited with code 1", 3.0)
    err = error_of(out)
    assert err["code"] == jsonrpc.CONNECTION_CLOSED and err["data"]["reason"] == "server_restarted"
    assert err["data"]["exit_code"] == 1
    assert ToClient(note("notifications/cancelled", {"requestId": "s1", "reason": "the server process ended"})) in out
    assert isinstance(out[-1], RespawnServer) and core.state is State.ACTIVE and core.restarts == 1
    # what the client sends meanwhile waits for the new process
    assert core.receive_from_client(req(2, "tools/list"), 3.1) == []
    [replay] = fx(core.server_started(2, 3.5))
    assert isinstance(replay, ToServer) and replay.msg["method"] == "initialize"
    assert replay.msg["params"] == INIT["params"] and replay.msg["id"] == "troupe-replay-1"
    out = fx(core.receive_from_server(jsonrpc.result("troupe-replay-1", INIT_RESULT["result"]), 3.6))
    assert out == [ToServer(note("notifications/initialized")), ToServer(req(2, "tools/list"))]
    assert core.info.pid == 2 and [p.id for p in core.from_client] == [2]


def test_restarts_are_capped() -> None:
    core = restarting(max_restarts=1)
    core.server_exited(1, "crash", 2.0)
    core.server_started(2, 2.1)
    core.receive_from_server(jsonrpc.result("troupe-replay-1", {}), 2.2)
    out = core.server_exited(1, "crash again", 3.0)
    assert any(isinstance(o, SessionClosed) and o.reason == "server_exited" for o in out)
    assert core.state is State.FAILED


def test_a_refused_replay_fails_the_session() -> None:
    core = restarting()
    core.server_exited(1, "crash", 2.0)
    core.server_started(2, 2.1)
    out = core.receive_from_server(jsonrpc.error("troupe-replay-1", -32602, "unsupported version"), 2.2)
    assert any(isinstance(o, SessionClosed) and o.reason == "failed" for o in out)
    assert core.state is State.FAILED


def test_requests_report_their_outcome_and_latency_for_metrics() -> None:
    core = legacy_active(Limits(idle_timeout=0, request_timeout=5, max_pending_per_session=2, soft_limit_ratio=1))
    core.receive_from_client(req(1, "tools/call"), 10.0)
    core.receive_from_client(req(9, "tools/call"), 10.0)
    assert RequestRefused("session") in core.receive_from_client(req(2, "tools/list"), 10.0)
    core.receive_from_server(jsonrpc.result(9, {}), 10.0)
    assert RequestDone("tools/call", 0.5, "result") in core.receive_from_server(jsonrpc.result(1, {}), 10.5)
    core.receive_from_client(req(3, "tools/list"), 11.0)
    assert RequestDone("tools/list", 1.0, "error") in core.receive_from_server(jsonrpc.error(3, -1, "no"), 12.0)
    core.receive_from_client(req(4, "tools/call"), 20.0)
    assert RequestDone("tools/call", 5.0, "timeout") in core.wake(25.0)


def test_requests_held_during_a_restart_are_answered_when_the_session_ends() -> None:
    core = restarting()
    core.server_exited(1, "crash", 2.0)
    assert core.receive_from_client(req(7, "tools/call"), 2.1) == []
    core.receive_from_client(note("notifications/roots/list_changed"), 2.1)
    out = core.close("client", 2.2)
    err = error_of(out)
    assert err["code"] == jsonrpc.CONNECTION_CLOSED and err["data"]["method"] == "tools/call"


def test_held_messages_survive_a_second_crash_and_initialized_is_not_sent_twice() -> None:
    core = restarting()
    core.server_exited(1, "crash", 2.0)
    core.receive_from_client(note("notifications/initialized"), 2.1)
    core.receive_from_client(req(8, "tools/list"), 2.1)
    core.server_exited(1, "crash again before it was up", 2.2)
    core.server_started(3, 2.3)
    out = fx(core.receive_from_server(jsonrpc.result("troupe-replay-2", INIT_RESULT["result"]), 2.4))
    assert out == [ToServer(note("notifications/initialized")), ToServer(req(8, "tools/list"))]
