"""The wire envelope and JSON-RPC classification, as pure functions."""

from __future__ import annotations

import typing
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_troupe.transport.wire import frames, jsonrpc, kinds
from mcp_troupe.transport.wire.frames import (
    ADAPTER_TO_DAEMON,
    CLIENT_TO_DAEMON,
    DAEMON_TO_ADAPTER,
    DAEMON_TO_CLIENT,
    ErrorCode,
    FrameError,
    decode,
    encode,
)
from mcp_troupe.transport.wire.jsonrpc import InvalidMessage, Kind, classify


def pack(body: Any) -> bytes:
    return msgpack.packb(body, use_bin_type=True)


def refused(data: bytes, schemas: Any = CLIENT_TO_DAEMON, **kw: Any) -> FrameError:
    with pytest.raises(FrameError) as info:
        decode(data, schemas, **kw)
    return info.value


def test_round_trip_every_direction() -> None:
    assert decode(encode("open", ref=1, server="x"), CLIENT_TO_DAEMON)["server"] == "x"
    assert decode(encode("mcp", sid="s", seq=3, msg={"a": 1}), DAEMON_TO_CLIENT)["seq"] == 3
    assert decode(encode("register", server="x", capacity=0), ADAPTER_TO_DAEMON)["capacity"] == 0
    assert decode(encode("spawn", sid="s"), DAEMON_TO_ADAPTER)["sid"] == "s"


def test_none_fields_are_left_out() -> None:
    body = msgpack.unpackb(encode("error", code="c", message="m", ref=None, sid="s"))
    assert body == {"v": 1, "t": "error", "code": "c", "message": "m", "sid": "s"}


@pytest.mark.parametrize(
    ("data", "code", "needle"),
    [
        (b"\xc1garbage", ErrorCode.BAD_FRAME, "not valid msgpack"),
        (pack([1, 2]), ErrorCode.BAD_FRAME, "must be a msgpack map"),
        (pack({"t": "open", "ref": 1, "server": "x"}), ErrorCode.BAD_FRAME, "'v'"),
        (pack({"v": 99, "t": "open", "ref": 1, "server": "x"}), ErrorCode.UNSUPPORTED_VERSION, "99"),
        (pack({"v": 1, "t": "teleport"}), ErrorCode.UNKNOWN_TYPE, "teleport"),
        (pack({"v": 1, "t": 5}), ErrorCode.BAD_FRAME, "'t'"),
        (pack({"v": 1, "t": "open", "ref": 1}), ErrorCode.BAD_FRAME, "missing field 'server'"),
        (pack({"v": 1, "t": "open", "ref": 1, "server": 7}), ErrorCode.BAD_FRAME, "'server' must be string"),
        (pack({"v": 1, "t": "open", "ref": True, "server": "x"}), ErrorCode.BAD_FRAME, "'ref'"),
        (pack({"v": 1, "t": "mcp", "sid": "s", "msg": [1]}), ErrorCode.BAD_FRAME, "'msg' must be map"),
        (pack({"v": True, "t": "open", "ref": 1, "server": "x"}), ErrorCode.BAD_FRAME, "'v'"),
    ],
)
def test_bad_frames_get_specific_codes(data: bytes, code: ErrorCode, needle: str) -> None:
    error = refused(data)
    assert error.code is code
    assert needle in error.message


def test_errors_echo_what_could_be_read() -> None:
    error = refused(pack({"v": 1, "t": "mcp", "sid": "abc", "ref": 4}))
    assert (error.sid, error.ref) == ("abc", 4)
    frame = msgpack.unpackb(error.to_frame())
    assert frame["t"] == "error" and frame["code"] == "bad_frame" and frame["sid"] == "abc"


def test_frame_size_limit() -> None:
    big = encode("mcp", sid="s", msg={"x": "y" * 2000})
    assert refused(big, max_bytes=1000).code is ErrorCode.FRAME_TOO_LARGE


def test_an_oversized_frame_echoes_its_ids_wherever_they_are() -> None:
    huge = encode("mcp", sid="s-9", msg={"jsonrpc": "2.0", "id": 41, "method": "m", "params": {"x": "y" * 10_000_000}})
    error = refused(huge, max_bytes=1_000_000)
    assert (error.code, error.sid, error.id, error.data) == (ErrorCode.FRAME_TOO_LARGE, "s-9", 41, {"limit": 1_000_000})
    assert error.too_big
    late = pack({"v": 1, "t": "mcp", "msg": {"result": {"x": "y" * 200_000}, "jsonrpc": "2.0", "id": "r"}, "sid": "s"})
    error = refused(late, max_bytes=100_000)
    assert (error.sid, error.id) == ("s", "r"), "an id after a large result (as the TypeScript SDK writes it)"
    assert error.data == {"limit": 100_000, "response": True}, "a response: the daemon answers its requester"
    as_text = pack({"v": 1, "t": "mcp", "sid": "s", "json": '{"result": {"x": "' + "y" * 200_000 + '"}, "id": 2}'})
    assert refused(as_text, max_bytes=100_000).id == 2
    bomb = b"\x84\xa1v\x01\xa1t\xa3mcp\xa3ref\xdd\x00\x10\x00\x00" + b"\xc0" * 0x100000 + b"\xa3sid\xa1s"
    error = refused(bomb, max_bytes=100_000)
    assert (error.ref, error.sid) == (None, "s"), "a value of a million elements is skipped, not built"


@pytest.mark.parametrize(
    "payload",
    [
        [{}] * 200_000,  # one array, longer than the limit
        [[{}] * 50_000] * 4,  # arrays under the limit, too many maps all told
        [{"k": [0] * 1000}] * 150,  # maps and arrays, deep down
    ],
    ids=["one-long-array", "many-maps", "nested"],
)
def test_a_frame_with_too_many_elements_is_refused_before_it_is_built(payload: Any) -> None:
    data = encode("mcp", sid="s", msg={"jsonrpc": "2.0", "id": 3, "method": "m", "params": {"p": payload}})
    error = refused(data, max_items=100_000)
    assert error.code is ErrorCode.BAD_FRAME and "more than 100000 elements" in error.message
    assert (error.sid, error.id, error.data) == ("s", 3, {"limit": 100_000})


def test_a_large_frame_within_the_element_limit_decodes() -> None:
    msg = {"jsonrpc": "2.0", "id": 1, "method": "m", "params": {"rows": [[i, str(i)] for i in range(30_000)]}}
    data = encode("mcp", sid="s", msg=msg)
    assert len(data) > 64 * 1024
    assert decode(data, CLIENT_TO_DAEMON, max_items=100_000)["msg"] == msg


def test_direction_matters() -> None:
    assert refused(encode("opened", ref=1, sid="s", server="x")).code is ErrorCode.UNKNOWN_TYPE


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_decode(data: bytes) -> None:
    try:
        decode(data, CLIENT_TO_DAEMON)
    except FrameError as exc:
        assert isinstance(exc.code, ErrorCode)


json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_requests_with_any_json_params_round_trip(params: dict[str, Any]) -> None:
    msg = jsonrpc.request(1, "tools/call", params)
    frame = decode(encode("mcp", sid="s", msg=msg), CLIENT_TO_DAEMON)
    assert classify(frame["msg"]).kind is Kind.REQUEST
    assert frame["msg"] == msg


# -- JSON-RPC --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("msg", "kind"),
    [
        (jsonrpc.request(1, "ping"), Kind.REQUEST),
        (jsonrpc.request("a", "tools/list", {}), Kind.REQUEST),
        (jsonrpc.notification("notifications/initialized"), Kind.NOTIFICATION),
        (jsonrpc.result(1, {}), Kind.RESULT),
        (jsonrpc.error(1, -32601, "nope"), Kind.ERROR),
        (jsonrpc.error(None, -32700, "parse error"), Kind.ERROR),
    ],
)
def test_classify(msg: dict[str, Any], kind: Kind) -> None:
    assert classify(msg).kind is kind


@pytest.mark.parametrize(
    ("msg", "needle"),
    [
        ([{"jsonrpc": "2.0", "method": "a"}], "batches"),
        ({"id": 1, "method": "a"}, '"jsonrpc"'),
        ({"jsonrpc": "2.0", "id": 1.5, "method": "a"}, '"id"'),
        ({"jsonrpc": "2.0", "id": True, "method": "a"}, '"id"'),
        ({"jsonrpc": "2.0", "id": 1, "method": ""}, '"method"'),
        ({"jsonrpc": "2.0", "id": 1, "method": "a", "params": [1]}, '"params"'),
        ({"jsonrpc": "2.0", "id": 1, "method": "a", "result": {}}, "must not carry"),
        ({"jsonrpc": "2.0", "id": 1}, "exactly one"),
        ({"jsonrpc": "2.0", "id": 1, "result": 1, "error": {}}, "exactly one"),
        ({"jsonrpc": "2.0", "result": {}}, '"id"'),
        ({"jsonrpc": "2.0", "id": 1, "error": {"code": "x", "message": "m"}}, '"error"'),
        ({"jsonrpc": "2.0", "id": 1, "method": "a", "params": {"b": b"\x00"}}, "bytes"),
        ({"jsonrpc": "2.0", "id": 1, "method": "a", "params": {"b": float("nan")}}, "NaN"),
    ],
)
def test_invalid_json_rpc(msg: Any, needle: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        classify(msg)
    assert needle in info.value.reason


def test_deep_nesting_is_refused() -> None:
    deep: Any = {}
    for _ in range(100):
        deep = {"a": deep}
    with pytest.raises(InvalidMessage, match="nests deeper"):
        classify(jsonrpc.request(1, "x", deep))


_wire_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=8), st.binary(max_size=4)
)
_wire_values = st.recursive(
    _wire_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4) | st.binary(max_size=2), inner, max_size=4)
    ),
    max_leaves=80,
)


def _verdict(check: Any, value: Any) -> str | None:
    try:
        check(value)
    except InvalidMessage as exc:
        return exc.reason
    return None


@settings(max_examples=400)
@given(_wire_values)
def test_fast_json_check_agrees_with_the_walk(value: Any) -> None:
    """Whatever a frame can decode to (str or bytes keys), the encoder-based check refuses exactly
    what the walk refuses, and says the walk's reason."""
    value = msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False, strict_map_key=False)
    assert _verdict(jsonrpc.check_json_value, value) == _verdict(jsonrpc._check_walk, value)


def test_deep_nesting_at_the_limit_is_accepted() -> None:
    deep: Any = {}
    for _ in range(jsonrpc.MAX_DEPTH - 1):
        deep = {"a": deep}
    classify(jsonrpc.request(1, "x", deep))


# -- one type per frame kind ------------------------------------------------------------


@pytest.mark.parametrize("direction", sorted(kinds.KINDS))
def test_each_frame_kind_has_a_type_that_matches_its_schema(direction: str) -> None:
    schemas = getattr(frames, direction.upper())
    types = kinds.KINDS[direction]
    assert set(types) == set(schemas)
    for name, schema in schemas.items():
        frame_type = types[name]
        hints = typing.get_type_hints(frame_type)
        assert typing.get_args(hints["t"]) == (name,), f"{frame_type.__name__}.t"
        fields = dict(schema)
        if "json" in fields:  # decode parses the JSON-text fallback into msg, which is then always there
            del fields["json"]
            fields["msg"] = (frames.MAP, True)
        required = {"v", "t"} | {field for field, (_kind, needed) in fields.items() if needed}
        optional = {field for field, (_kind, needed) in fields.items() if not needed}
        assert frame_type.__required_keys__ == required, frame_type.__name__
        assert frame_type.__optional_keys__ == optional, frame_type.__name__
