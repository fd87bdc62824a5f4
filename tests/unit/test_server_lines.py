"""`plain_json_line`: which lines of a server's stdout the adapter vouches for (``checked``)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_troupe.transport.adapter.server_process import plain_json_line
from mcp_troupe.transport.wire import jsonrpc

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3),
    max_leaves=80,
)


@given(json_values)
def test_a_vouched_line_always_passes_the_daemons_json_check(value: object) -> None:
    line = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"v": value}}).encode()
    if plain_json_line(line):
        jsonrpc.check_json_value(json.loads(line))  # raises if the adapter vouched wrongly


@pytest.mark.parametrize(
    "line",
    [
        b'{"jsonrpc":"2.0","id":1,"result":{"x":NaN}}',
        b'{"jsonrpc":"2.0","id":1,"result":{"x":-Infinity}}',
        b'{"a":' * 70 + b"1" + b"}" * 70,
        b'{"jsonrpc":"2.0","id":1,"result":{"text":"NaN is a word here"}}',
    ],
)
def test_lines_with_constants_or_deep_nesting_are_left_to_the_daemon(line: bytes) -> None:
    assert not plain_json_line(line)


def test_an_ordinary_line_is_vouched_for() -> None:
    assert plain_json_line(b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"3"}]}}\n')
