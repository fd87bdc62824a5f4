"""The HTTP front's pure parts: request rules, the replay log, stream routing, Mcp-Param checks."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_troupe.transport.http import params, rules
from mcp_troupe.transport.http.replay import EventLog
from mcp_troupe.transport.http.routing import STANDALONE, LegacyRoutes, SharedRoutes
from mcp_troupe.transport.http.rules import Refusal
from mcp_troupe.transport.http.sessions import FrontOptions, LegacySession

MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}

# -- origin, host, tokens ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "ok"),
    [
        (None, "127.0.0.1:8080", (), True),
        ("http://localhost:3000", "localhost:8080", (), True),
        ("http://[::1]:3000", "[::1]:8080", (), True),
        ("https://evil.example", "127.0.0.1:8080", (), False),
        ("http://localhost.evil.example", "127.0.0.1:8080", (), False),
        (None, "evil.example", (), False),
        ("https://app.example.com", "127.0.0.1:8080", ("https://app.example.com",), True),
        ("https://other.example.com", "127.0.0.1:8080", ("https://app.example.com",), False),
        ("https://anything.example", "127.0.0.1", ("*",), True),
        ("null", "127.0.0.1", (), False),
    ],
)
def test_origin_and_host_checks_guard_against_dns_rebinding(
    origin: str | None, host: str, allowed: tuple[str, ...], ok: bool
) -> None:
    refusal = rules.check_origin(origin, host, allowed, loopback=True)
    assert (refusal is None) == ok
    if refusal is not None:
        assert refusal.status == 403 and refusal.reason in ("bad_origin", "bad_host")


def test_a_front_bound_beyond_loopback_takes_any_host_but_still_checks_origins() -> None:
    assert rules.check_origin(None, "mcp.example.com", (), loopback=False) is None
    assert rules.check_origin("https://evil.example", "mcp.example.com", (), loopback=False) is not None


def test_tokens_file_names_tokens_and_refuses_bad_lines() -> None:
    tokens = rules.parse_tokens("# who\nalice " + "a" * 20 + "\n\nbob " + "b" * 20 + "\n")
    assert tokens.required
    assert tokens.name_of("Bearer " + "a" * 20) == "alice"
    assert tokens.name_of("bearer " + "b" * 20) == "bob"
    assert tokens.name_of("Bearer " + "c" * 20) is None
    assert tokens.name_of("Basic " + "a" * 20) is None
    assert tokens.name_of(None) is None
    assert tokens.name_of("Bearer " + "a" * 5000) is None
    for bad in ("alice", "alice short", "al ice " + "a" * 20, "a/b " + "a" * 20, f"x {'a' * 20}\nx {'b' * 20}"):
        with pytest.raises(rules.TokenFileError):
            rules.parse_tokens(bad)
    assert not rules.Tokens().required


def test_unauthorized_says_how_to_authenticate() -> None:
    missing, wrong = rules.unauthorized("troupe", False), rules.unauthorized("troupe", True)
    assert missing.status == wrong.status == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="troupe"'
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]


# -- headers and bodies ------------------------------------------------------------------


def test_post_headers_need_json_content_and_both_accepted_types() -> None:
    both = "application/json, text/event-stream"
    assert rules.check_post_headers("application/json; charset=utf-8", both) is None
    assert rules.check_post_headers("application/json", "*/*") is None
    assert _status(rules.check_post_headers("text/plain", both)) == 415
    assert _status(rules.check_post_headers("application/json", "application/json")) == 406
    assert _status(rules.check_post_headers("application/json", None)) == 406


def _status(refusal: Refusal | None) -> int | None:
    return refusal.status if refusal is not None else None


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{nope", 400, -32700),
        (b"[]", 400, -32600),
        (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', 400, -32600),
        (b'{"jsonrpc":"1.0","id":1,"method":"ping"}', 400, -32600),
        (b'"just a string"', 400, -32600),
        (b"x" * 101, 413, -32600),
    ],
)
def test_bodies_that_are_not_one_json_rpc_message_are_refused(body: bytes, status: int, code: int) -> None:
    refused = rules.parse_body(body, 100)
    assert isinstance(refused, Refusal) and refused.status == status and refused.body()["error"]["code"] == code


def test_a_good_body_is_the_message() -> None:
    assert rules.parse_body(b'{"jsonrpc":"2.0","id":1,"method":"ping"}', 100) == {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "ping",
    }


@given(st.binary(max_size=200))
def test_no_body_makes_parse_body_raise(body: bytes) -> None:
    rules.parse_body(body, 150)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("3-17", (3, 17)),
        ("0-1", (0, 1)),
        ("3", None),
        ("a-1", None),
        ("-1", None),
        ("1-" + "9" * 80, None),
        (None, None),
    ],
)
def test_last_event_ids_are_parsed_strictly(value: str | None, parsed: tuple[int, int] | None) -> None:
    assert rules.check_event_id(value) == parsed


# -- the 2026-07-28 ladder ---------------------------------------------------------------


def _modern(method: str = "tools/call", **params_: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 4, "method": method, "params": {"_meta": dict(MODERN_META), **params_}}


def _headers(method: str = "tools/call", version: str = "2026-07-28", **more: str) -> dict[str, str]:
    return {"mcp-protocol-version": version, "mcp-method": method, **more}


def test_the_modern_ladder_checks_meta_then_headers_then_version() -> None:
    assert rules.check_modern(_modern(name="add"), _headers(**{"mcp-name": "add"})) is None
    no_meta = {"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {}}
    assert _code(rules.check_modern(no_meta, _headers("tools/list"))) == -32602
    half = _modern("tools/list")
    del half["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"]
    assert _code(rules.check_modern(half, _headers("tools/list"))) == -32602
    assert _code(rules.check_modern(_modern(name="add"), _headers("tools/list", **{"mcp-name": "add"}))) == -32020
    assert _code(rules.check_modern(_modern(name="add"), _headers(**{"mcp-name": "sub"}))) == -32020
    assert _code(rules.check_modern(_modern(name="add"), _headers(version="2025-11-25"))) == -32020
    encoded = "=?base64?" + base64.b64encode("añadir".encode()).decode() + "?="
    assert rules.check_modern(_modern(name="añadir"), _headers(**{"mcp-name": encoded})) is None
    future = _modern("tools/list")
    future["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = "2099-01-01"
    refusal = rules.check_modern(future, _headers("tools/list", version="2099-01-01"))
    assert refusal is not None and refusal.code == -32022 and refusal.status == 400
    assert refusal.data == {"supported": ["2026-07-28"], "requested": "2099-01-01"} and refusal.id == 4


def _code(refusal: Refusal | None) -> int | None:
    return refusal.code if refusal is not None else None


def test_eras_are_told_apart_by_header_meta_or_discover() -> None:
    assert rules.is_modern(_modern("tools/list"), None)
    assert rules.is_modern({"jsonrpc": "2.0", "id": 1, "method": "server/discover"}, None)
    assert rules.is_modern({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, "2026-07-28")
    assert not rules.is_modern({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}, None)
    assert rules.check_legacy_version("2025-06-18") is None and rules.check_legacy_version(None) is None
    assert _status(rules.check_legacy_version("2026-07-28")) == 400


# -- Mcp-Param headers -------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"},
        "count": {"type": "integer", "x-mcp-header": "Count"},
        "flag": {"type": "boolean", "x-mcp-header": "Flag"},
        "nested": {"type": "object", "properties": {"zone": {"type": "string", "x-mcp-header": "Zone"}}},
        "free": {"type": "string"},
    },
}


def _check(arguments: dict[str, Any], headers: dict[str, str], duplicated: frozenset[str] = frozenset()) -> str | None:
    return params.mismatch(SCHEMA, arguments, {k.lower(): v for k, v in headers.items()}, duplicated)


def test_param_headers_must_mirror_their_arguments() -> None:
    full = {"region": "eu", "count": 42, "flag": True, "nested": {"zone": "b"}}
    good = {"Mcp-Param-Region": "eu", "Mcp-Param-Count": "42", "Mcp-Param-Flag": "true", "Mcp-Param-Zone": "b"}
    assert _check(full, good) is None
    assert _check(full, {**good, "Mcp-Param-Count": "42.0"}) is None
    assert _check({}, {}) is None
    assert _check(full, {**good, "Mcp-Param-Region": "us"}) is not None
    assert _check(full, {k: v for k, v in good.items() if k != "Mcp-Param-Zone"}) is not None
    assert _check({"region": "eu"}, {"Mcp-Param-Region": "eu", "Mcp-Param-Count": "1"}) is not None
    assert _check(full, {**good, "Mcp-Param-Count": "41.5"}) is not None
    assert _check(full, good, frozenset({"mcp-param-region"})) is not None
    sentinel = "=?base64?" + base64.b64encode(b"eu").decode() + "?="
    assert _check(full, {**good, "Mcp-Param-Region": sentinel}) is None
    assert _check(full, {**good, "Mcp-Param-Region": "=?base64?ZXU?="}) is not None  # not canonical base64
    assert _check(full, {**good, "Mcp-Param-Region": "=?base64?!!!?="}) is not None


def test_tool_schemas_are_learned_from_tools_list_results() -> None:
    schemas = params.ToolSchemas()
    assert schemas.schema("s", "t") == (False, None)
    schemas.learn("s", {"tools": [{"name": "t", "inputSchema": SCHEMA}, {"nope": 1}, "junk"]})
    schemas.learn("s", "not a result")
    assert schemas.schema("s", "t") == (True, SCHEMA)
    assert schemas.schema("other", "t") == (False, None)


# -- the replay log ----------------------------------------------------------------------


def test_the_replay_log_gives_a_stream_every_event_after_an_id() -> None:
    log = EventLog(max_events=100, max_bytes=10_000)
    events = [log.append(stream, f"m{n}") for n, stream in enumerate([1, 2, 1, 0, 1])]
    assert [e.id for e in events] == ["1-1", "2-2", "1-3", "0-4", "1-5"]
    replay = log.after(1, 1)
    assert [e.data for e in replay.events] == ["m2", "m4"] and not replay.gap
    log.forget(1)
    assert [e.stream for e in log.after(1, 0).events] == [] and len(log) == 2 and log.dropped == 0


def test_the_replay_log_is_bounded_and_says_what_fell_out() -> None:
    log = EventLog(max_events=3, max_bytes=1_000)
    for n in range(5):
        log.append(1, f"e{n}")
    assert len(log) == 3 and log.dropped == 2
    replay = log.after(1, 0)
    assert [e.data for e in replay.events] == ["e2", "e3", "e4"] and replay.gap
    assert not log.after(1, 2).gap
    by_bytes = EventLog(max_events=100, max_bytes=10)
    for _ in range(4):
        by_bytes.append(0, "abcd")
    assert len(by_bytes) == 2 and by_bytes.dropped == 2


@given(st.lists(st.tuples(st.integers(0, 3), st.text(max_size=20)), max_size=60), st.integers(1, 10))
def test_the_replay_log_never_exceeds_its_bounds(appends: list[tuple[int, str]], max_events: int) -> None:
    log = EventLog(max_events=max_events, max_bytes=50)
    for stream, data in appends:
        log.append(stream, data)
        assert len(log) <= max_events
        assert sum(len(e.data) for s in range(4) for e in log.after(s, 0).events) <= 50
    assert log.dropped + len(log) == len(appends)


# -- routing -----------------------------------------------------------------------------


def _request(msg_id: Any, method: str = "tools/call", token: Any = None) -> dict[str, Any]:
    params_: dict[str, Any] = {"name": "x"}
    if token is not None:
        params_["_meta"] = {"progressToken": token}
    return {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params_}


def test_legacy_routing_sends_answers_and_progress_to_their_requests_streams() -> None:
    routes = LegacyRoutes()
    a, b = routes.begin(_request(1, token="ta")), routes.begin(_request("two", token="tb"))
    progress_b = {
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": {"progressToken": "tb", "progress": 1},
    }
    assert routes.route(progress_b).stream == b
    log_line = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "?"}}
    assert routes.route(log_line).stream == STANDALONE  # two requests in progress: no single one to relate to
    sampling = {"jsonrpc": "2.0", "id": 900, "method": "sampling/createMessage", "params": {}}
    assert routes.route(sampling).stream == STANDALONE
    done = routes.route({"jsonrpc": "2.0", "id": 1, "result": {}})
    assert done.stream == a and done.final
    assert routes.route(log_line).stream == b  # now one: it relates to that one
    asked = {"jsonrpc": "2.0", "id": 901, "method": "roots/list"}
    assert routes.route(asked).stream == b
    assert (
        routes.route({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 901}}).stream == b
    )
    changed = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
    assert routes.route(changed).stream == STANDALONE
    assert routes.route({"jsonrpc": "2.0", "id": "nobody", "result": {}}).stream is None


def test_shared_routing_gives_each_client_request_an_id_of_its_own_and_restores_it() -> None:
    routes = SharedRoutes()
    wire_a, out_a = routes.begin(_request(1, token="mine"), stream=5)
    assert out_a["id"] == wire_a and out_a["params"]["_meta"]["progressToken"] != "mine"
    assert routes.busy
    wire_token = out_a["params"]["_meta"]["progressToken"]
    progress = routes.route(
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": wire_token, "progress": 1}}
    )
    assert progress.stream == 5 and progress.message["params"]["progressToken"] == "mine"
    log_line = routes.route({"jsonrpc": "2.0", "method": "notifications/message", "params": {}})
    assert log_line.stream == 5
    answer = routes.route({"jsonrpc": "2.0", "id": wire_a, "result": {"ok": True}})
    assert answer.stream == 5 and answer.final and answer.message["id"] == 1 and not routes.busy
    assert routes.route({"jsonrpc": "2.0", "method": "notifications/message", "params": {}}).stream is None


def test_shared_routing_tags_subscriptions_with_the_clients_own_id() -> None:
    routes = SharedRoutes()
    wire, _ = routes.begin(_request(77, "subscriptions/listen"), stream=2)
    assert not routes.busy  # a listen stream does not hold the session
    tagged = {
        "jsonrpc": "2.0",
        "method": "notifications/tools/list_changed",
        "params": {"_meta": {"io.modelcontextprotocol/subscriptionId": wire}},
    }
    routed = routes.route(tagged)
    assert routed.stream == 2 and routed.message["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 77


def test_a_cancelled_shared_request_frees_the_session_and_its_late_answer_goes_nowhere() -> None:
    routes = SharedRoutes()
    wire, _ = routes.begin(_request(1), stream=1)
    cancel = routes.cancel(wire)
    assert cancel == {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": wire}}
    assert not routes.busy and routes.cancel(wire) is None
    assert routes.route({"jsonrpc": "2.0", "id": wire, "result": {}}).stream is None


# -- the session's change signal ---------------------------------------------------------


def test_a_change_between_asking_and_waiting_still_wakes_the_waiter() -> None:
    async def scenario() -> bool:
        stream = LegacySession("sid", "server", None, FrontOptions(), Counter())
        waiter = asyncio.ensure_future(stream.change().wait())
        stream.push(LegacyRoutes().route({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}))
        await asyncio.wait_for(waiter, 5)
        return (
            json.loads(stream.log.after(STANDALONE, 0).events[0].data)["method"] == "notifications/tools/list_changed"
        )

    assert asyncio.run(scenario())


def test_a_pool_is_not_kept_for_a_server_name_that_fails_to_open() -> None:
    from mcp_troupe.transport.http.sessions import OpenRefused, Sessions

    async def scenario() -> int:
        sessions = Sessions("ipc:///nonexistent/troupe-test.sock", FrontOptions(open_timeout=0.05))

        async def refuse(server: str, via: str) -> tuple[str, str]:
            raise OpenRefused("unknown_server", f"no server {server!r}")

        sessions._open = refuse  # type: ignore[method-assign]
        for n in range(50):
            with pytest.raises(OpenRefused):
                await sessions.pooled(f"made-up-{n}", "test", None)
        kept = len(sessions._pools)
        sessions._sock.close(0)
        sessions._ctx.term()
        return kept

    assert asyncio.run(scenario()) == 0


def test_the_log_says_how_far_a_stream_fell_out_and_keeps_that_bounded() -> None:
    log = EventLog(max_events=2, max_bytes=1_000)
    for stream in range(1, 8):
        log.append(stream, "x")
    assert log.dropped_through(5) == 5 and log.dropped_through(7) == 0
    assert log.dropped_through(1) == 0  # as many records of drops as events are kept: the oldest go
    assert log.first_seq == 6 and log.last_seq == 7
    assert len(log._dropped_upto) <= 2
    assert EventLog().first_seq == 1


@pytest.mark.parametrize("value", ["1-\u00b2", "\u0661-1", "1-2-3", " 1 - 2 ", "1-99999999999999999999"])
def test_event_ids_with_other_digits_or_shapes_are_not_ours(value: str) -> None:
    assert rules.check_event_id(value) is None


def test_progress_tokens_that_are_not_ids_are_ignored_not_fatal() -> None:
    legacy = LegacyRoutes()
    stream = legacy.begin(_request(1, token={"not": "hashable"}))
    odd = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": ["x"], "progress": 1}}
    assert legacy.route(odd).stream == STANDALONE
    assert legacy.route({"jsonrpc": "2.0", "id": 1, "result": {}}).stream == stream
    shared = SharedRoutes()
    _wire, out = shared.begin(_request(2, token=[1, 2]), stream=3)
    assert out["params"]["_meta"]["progressToken"] == [1, 2]  # not one troupe can route: passed through as sent
    assert shared.route(odd).stream is None
