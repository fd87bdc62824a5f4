"""The top level of a JSON-RPC message too large to keep: its ``id`` and whether it has a ``method``.

A message over a size limit is never held whole, yet its sender must be answered: a request
with an error naming the limit, a response replaced by one. `EnvelopeScan` reads the message
in chunks and keeps only its skeleton, the top-level object with every nested value replaced
by an empty ``{}`` or ``[]`` and every long top-level string by ``""``, so
``{"result": {...6 MiB...}, "jsonrpc": "2.0", "id": 7}`` leaves
``{"result":{},"jsonrpc":"2.0","id":7}``. Key order does not matter (the TypeScript SDK writes
``id`` last), and an ``"id"`` nested in ``params`` is never mistaken for the message's own.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

SKELETON_BYTES: Final = 64 * 1024
"""Most bytes of skeleton kept; a message whose top level alone is longer has no readable envelope."""
TOP_STRING_BYTES: Final = 1024
"""Longest top-level string kept as it is (ids, methods, keys); a longer one is kept as ``""``."""

_OUTSIDE: Final = re.compile(rb'["{}\[\]]')
_STRING_BODY: Final = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)


class EnvelopeScan:
    """Feed a message's bytes in any chunks; `envelope` is its skeleton as a dict, or None."""

    def __init__(self) -> None:
        self._skeleton = bytearray()
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._string = bytearray()
        self._string_too_long = False
        self._broken = False

    def feed(self, chunk: bytes) -> None:
        pos, end = 0, len(chunk)
        while pos < end and not self._broken:
            pos = self._in_string_from(chunk, pos) if self._in_string else self._outside_from(chunk, pos)
        if len(self._skeleton) > SKELETON_BYTES:
            self._broken = True

    @property
    def envelope(self) -> dict[str, Any] | None:
        if self._broken or self._in_string or self._depth:
            return None
        try:
            found = json.loads(self._skeleton)
        except (ValueError, RecursionError):
            return None
        return found if isinstance(found, dict) else None

    def _outside_from(self, chunk: bytes, pos: int) -> int:
        found = _OUTSIDE.search(chunk, pos)
        stop = found.start() if found else len(chunk)
        if self._depth == 1:
            self._skeleton += chunk[pos:stop]
        if found is None:
            return stop
        char = chunk[stop : stop + 1]
        if char == b'"':
            self._in_string = True
            self._string.clear()
            self._string_too_long = False
        elif char in b"{[":
            self._depth += 1
            if self._depth <= 2:
                self._skeleton += char
        else:
            if self._depth <= 2:
                self._skeleton += char
            self._depth -= 1
            self._broken = self._depth < 0
        return stop + 1

    def _in_string_from(self, chunk: bytes, pos: int) -> int:
        if self._escaped:  # a backslash ended the last chunk: this byte is the escaped one
            self._keep(b"\\" + chunk[pos : pos + 1])
            self._escaped = False
            pos += 1
        body = _STRING_BODY.match(chunk, pos)
        stop = body.end() if body else pos
        self._keep(chunk[pos:stop])
        if stop == len(chunk):
            return stop
        if chunk[stop : stop + 1] == b"\\":  # the escape's second byte is in the next chunk
            self._escaped = True
            return stop + 1
        self._in_string = False
        if self._depth == 1:
            self._skeleton += b'"' + (b"" if self._string_too_long else self._string) + b'"'
        return stop + 1

    def _keep(self, piece: bytes) -> None:
        if self._depth != 1 or self._string_too_long:
            return
        if len(self._string) + len(piece) > TOP_STRING_BYTES:
            self._string_too_long = True
        else:
            self._string += piece


def envelope_of(message: bytes) -> dict[str, Any] | None:
    """`EnvelopeScan` of a message held whole."""
    scan = EnvelopeScan()
    scan.feed(message)
    return scan.envelope
