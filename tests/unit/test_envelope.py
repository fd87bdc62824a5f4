"""The envelope of a message too large to keep: its top-level id and method, in any key order and chunking."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mcp_troupe.transport.wire.envelope import SKELETON_BYTES, TOP_STRING_BYTES, EnvelopeScan, envelope_of

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.text(min_size=TOP_STRING_BYTES - 8, max_size=TOP_STRING_BYTES + 8)
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
)
messages = st.dictionaries(st.text(max_size=12), values, max_size=6)


def skeleton(message: dict[str, Any], ascii: bool) -> dict[str, Any]:
    """What the envelope must be: nested values emptied, strings longer than TOP_STRING_BYTES written blanked."""

    def top(value: Any) -> Any:
        if isinstance(value, dict):
            return {}
        if isinstance(value, list):
            return []
        if isinstance(value, str) and len(json.dumps(value, ensure_ascii=ascii).encode()) - 2 > TOP_STRING_BYTES:
            return ""
        return value

    return {key: top(value) for key, value in message.items()}


@given(messages, st.booleans(), st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=8))
def test_the_envelope_is_the_top_level_in_any_chunking(message: dict[str, Any], ascii: bool, cuts: list[int]) -> None:
    data = json.dumps(message, ensure_ascii=ascii).encode("utf-8", "surrogatepass")
    scan = EnvelopeScan()
    position = 0
    for size in cuts * (len(data) // sum(cuts) + 1):
        scan.feed(data[position : position + size])
        position += size
    assert position >= len(data)
    assert scan.envelope == skeleton(message, ascii) == envelope_of(data)


def test_the_id_is_found_last_past_megabytes_and_never_inside_params() -> None:
    big = {"content": [{"type": "text", "text": 'a "quoted" \\ line\n' * 200_000}], "id": "nested"}
    data = json.dumps({"result": big, "jsonrpc": "2.0", "id": 7}).encode()
    scan = EnvelopeScan()
    for start in range(0, len(data), 1 << 20):
        scan.feed(data[start : start + (1 << 20)])
    assert scan.envelope == {"result": {}, "jsonrpc": "2.0", "id": 7}
    request = json.dumps({"jsonrpc": "2.0", "method": "sampling/createMessage", "params": {"id": 1}, "id": "r"})
    assert envelope_of(request.encode()) == {
        "jsonrpc": "2.0",
        "method": "sampling/createMessage",
        "params": {},
        "id": "r",
    }


def test_what_has_no_envelope() -> None:
    for data in [b"", b"[1, 2]", b'{"id": 1', b'{"id": "open', b'{"a": 1}}', b"not json", b'"text"']:
        assert envelope_of(data) is None, data
    wide = b'{"id": 1, ' + b", ".join(b'"k%d": %d' % (i, i) for i in range(SKELETON_BYTES // 8)) + b"}"
    assert envelope_of(wide) is None, "a top level over SKELETON_BYTES is not kept"
    assert envelope_of(b'{"id": 1, "text": "' + b"x" * (TOP_STRING_BYTES + 1) + b'"}') == {"id": 1, "text": ""}
