"""The remote-server side's pure parts: the event-stream parser, the request headers, faults, credentials."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_troupe.transport.upstream import rules
from mcp_troupe.transport.upstream.credentials import CredentialsError, StaticHeaders, check_header, expand
from mcp_troupe.transport.upstream.sse import Event, SseError, SseParser
from mcp_troupe.transport.wire import jsonrpc

MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}

# -- the event-stream parser -------------------------------------------------------------


def test_events_carry_data_ids_and_retry_and_comments_are_skipped() -> None:
    parser = SseParser()
    events = parser.feed(b': comment\nid: 7-0\nretry: 250\ndata:\n\nid: 7-1\nevent: message\ndata: {"a":\ndata: 1}\n\n')
    assert events == [Event("", "7-0"), Event('{"a":\n1}', "7-1")]
    assert parser.last_id == "7-1" and parser.retry == 250


def test_an_id_without_data_moves_the_resumption_point_but_dispatches_nothing() -> None:
    parser = SseParser()
    assert parser.feed(b"id: 9\n\n") == []
    assert parser.last_id == "9"


@given(
    st.lists(
        st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=30),
        min_size=1,
        max_size=8,
    )
)
def test_any_split_of_the_bytes_gives_the_same_events(datas: list[str]) -> None:
    body = "".join(f"id: {i}\r\ndata: {d}\r\n\r\n" for i, d in enumerate(datas)).encode()
    whole = SseParser().feed(body)
    for step in (1, 2, 7):
        parser = SseParser()
        pieces = [e for i in range(0, len(body), step) for e in parser.feed(body[i : i + step])]
        assert pieces == whole
    assert [e.data for e in whole] == datas and whole[-1].id == str(len(datas) - 1)


def test_an_event_or_line_over_the_limit_is_refused_not_buffered() -> None:
    with pytest.raises(SseError):
        SseParser(max_event_bytes=100).feed(b"data: " + b"x" * 60 + b"\ndata: " + b"y" * 60 + b"\n")
    with pytest.raises(SseError):
        SseParser(max_event_bytes=100).feed(b"data: " + b"x" * 200)


# -- headers ------------------------------------------------------------------------------


def test_a_legacy_post_carries_the_session_and_the_negotiated_version_but_initialize_no_version() -> None:
    call = jsonrpc.request(2, "tools/call", {"name": "add"})
    headers = rules.request_headers(call, session_id="abc", version="2025-11-25", credentials={"X-Key": "k"})
    assert headers["mcp-session-id"] == "abc" and headers["mcp-protocol-version"] == "2025-11-25"
    assert headers["accept"] == rules.ACCEPT and headers["X-Key"] == "k"
    init = rules.request_headers(jsonrpc.request(1, "initialize", {}), session_id=None, version="2025-11-25")
    assert "mcp-protocol-version" not in init and "mcp-session-id" not in init


def test_a_modern_post_mirrors_its_body_and_its_tools_x_mcp_header_arguments() -> None:
    schema = {
        "type": "object",
        "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "dry": {"type": "boolean", "x-mcp-header": "Dry"},
            "note": {"type": "string"},
        },
    }
    call = jsonrpc.request(
        3, "tools/call", {"name": "zürich", "arguments": {"region": "eu west", "dry": True}, "_meta": MODERN_META}
    )
    headers = rules.request_headers(call, session_id="ignored", version="2025-11-25", schema=schema)
    assert headers["mcp-protocol-version"] == "2026-07-28" and headers["mcp-method"] == "tools/call"
    assert base64.b64decode(headers["mcp-name"][9:-2]).decode() == "zürich"
    assert headers["mcp-param-region"] == "eu west" and headers["mcp-param-dry"] == "true"
    assert "mcp-session-id" not in headers and not any("note" in h for h in headers)


@pytest.mark.parametrize(
    ("value", "plain"), [("abc", True), (" lead", False), ("naïve", False), ("=?base64?eA==?=", False)]
)
def test_header_values_that_would_not_survive_go_base64(value: str, plain: bool) -> None:
    encoded = rules.encode_header_value(value)
    assert (encoded == value) == plain
    if not plain:
        assert base64.b64decode(encoded[9:-2]).decode() == value


# -- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"), [(401, "unauthorized"), (403, "unauthorized"), (500, "http_error"), (503, "http_error")]
)
def test_a_status_fault_says_what_happened_and_carries_the_status(status: int, kind: str) -> None:
    answer = rules.status_fault(status, "Whatever").answer(5, "search", "https://u:p@host:8443/mcp?key=secret#x")
    assert answer["id"] == 5 and answer["error"]["code"] == jsonrpc.UPSTREAM_FAILED
    assert answer["error"]["data"] == {
        "upstream": kind,
        "server": "search",
        "url": "https://host:8443/mcp",
        "http_status": status,
    }
    assert f"HTTP {status}" in answer["error"]["message"] and "secret" not in json.dumps(answer)


def test_a_body_that_is_not_json_rpc_is_a_not_mcp_fault() -> None:
    fault = rules.parse_message(b"<html>nope</html>", 200)
    assert isinstance(fault, rules.Fault) and fault.kind == "not_mcp" and "<html>" in fault.message
    assert rules.parse_message(b'{"jsonrpc": "2.0", "id": 1, "result": {}}', 200) == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {},
    }


def test_answers_matches_only_the_response_to_that_id() -> None:
    assert rules.answers({"jsonrpc": "2.0", "id": 1, "result": {}}, 1)
    assert not rules.answers({"jsonrpc": "2.0", "id": "1", "result": {}}, 1)
    assert not rules.answers({"jsonrpc": "2.0", "id": 1, "method": "ping"}, 1)


def test_every_fault_kind_is_a_known_label() -> None:
    assert set(rules.FAULT_KINDS) >= {"connect", "tls", "timeout", "unauthorized", "http_error", "not_mcp"}


# -- credentials ---------------------------------------------------------------------------


def test_header_templates_read_the_environment_once_and_say_what_is_missing() -> None:
    headers = StaticHeaders({"Authorization": "Bearer ${TOKEN}", "X-Cost": "$$5"}, {"TOKEN": "s3cret"})
    assert headers.headers() == {"Authorization": "Bearer s3cret", "X-Cost": "$5"}
    with pytest.raises(CredentialsError, match="TOKEN is not set"):
        StaticHeaders({"Authorization": "Bearer ${TOKEN}"}, {})


@pytest.mark.parametrize(
    ("name", "value"),
    [("Mcp-Session-Id", "x"), ("Accept", "x"), ("Bad Name", "x"), ("X-Ok", "a\nb"), ("X-Ok", "cost $5")],
)
def test_headers_troupe_sets_itself_or_that_are_malformed_are_refused(name: str, value: str) -> None:
    with pytest.raises(CredentialsError):
        check_header(name, value)


def test_an_environment_value_cannot_smuggle_a_header() -> None:
    with pytest.raises(CredentialsError, match="control character"):
        expand("${V}", {"V": "x\r\nX-Evil: 1"})
