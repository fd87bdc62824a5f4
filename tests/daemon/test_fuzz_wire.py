"""A wire-protocol fuzzer: hostile peers on both of a real daemon's sockets, and one innocent session.

A daemon runs in its own process (`start_daemon`). An *innocent* client, in a
thread of its own, opens a session to the example server and calls its ``add``
tool over and over for the whole run. Meanwhile the test thread connects raw
DEALER sockets to the daemon's front socket (four "clients") and to its back
socket (two "adapters"), reconnects them now and then, and sends them frames
drawn by hypothesis from strategies built on the schema tables of
`mcp_troupe.transport.wire.frames`, so that a new frame type or field is fuzzed without
touching this file: valid frames, fields of the wrong type, missing fields,
extra fields, unknown types and versions, garbage bytes, msgpack that is not a
map, deep nesting, frames of many elements or holding a large string,
multipart messages, bit-flipped and truncated copies of real frames, invalid
JSON-RPC inside ``mcp`` frames (batches, a wrong ``jsonrpc``, bad ids, bin,
ext, NaN), and frames naming made-up sessions, other connections' sessions or
the innocent one. Each message stays below 1 MiB. The fake adapters answer the
daemon's ``spawn`` with ``spawned``, so that sessions run on them too. Left
out: ``ctl`` frames for the operator actions ``inject_fault``,
``sessions.close`` and ``sessions.cleanup``; and opens of the real server
beyond one every two seconds (each may start a Python process).

At the end the test checks that the daemon still runs and answers ``health``;
that every call of the innocent session succeeded, and there were enough of
them; that every frame with a readable ``ref`` got exactly one reply with that
ref (see `reply_expected` for the few that need none); that each frame naming
the innocent session was refused with ``not_owner``; that the sessions the
fuzzer opened could be closed; that the daemon never sent a malformed frame, a
frame with a ref the socket never sent, or a frame of a session to another
connection; that its log shows no swallowed exception; and that its threads
and file descriptors came back to what they were before the fuzzing. `finish`
then checks that it exits 0 on SIGTERM.

The fuzzing takes about 20 seconds, the whole test about 30. Run it longer
with ``TROUPE_FUZZ_SECONDS``; replay a run with the seed that every failure
message prints (the frames drawn are the same, the daemon's sids and timing
are not); write every frame sent and received to a file::

    TROUPE_FUZZ_SECONDS=600 pytest tests/daemon/test_fuzz_wire.py
    TROUPE_FUZZ_SEED=1234 pytest tests/daemon/test_fuzz_wire.py
    TROUPE_FUZZ_TRACE=/tmp/fuzz.trace pytest tests/daemon/test_fuzz_wire.py
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import random
import re
import reprlib
import string
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgpack
import pytest
import zmq
from conftest import RunningDaemon, finish, start_daemon, wait_for
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from mcp_troupe.transport.client import Client, SessionClosed
from mcp_troupe.transport.wire import jsonrpc
from mcp_troupe.transport.wire.frames import (
    ADAPTER_TO_DAEMON,
    BOOL,
    CLIENT_TO_DAEMON,
    DAEMON_TO_ADAPTER,
    DAEMON_TO_CLIENT,
    INT,
    MAP,
    MAX_ITEMS,
    REF,
    SMALL_FRAME,
    STR,
    VERSION,
    ErrorCode,
    FrameError,
    Schema,
    decode,
)

FUZZ_SECONDS: Final = float(os.environ.get("TROUPE_FUZZ_SECONDS") or 20)
"""Wall time of the fuzzing phase."""
SEED: Final = int(os.environ.get("TROUPE_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
TRACE_PATH: Final = os.environ.get("TROUPE_FUZZ_TRACE")
"""A file to write every frame sent and received to (and, on failure, the daemon's log next to it)."""
MAX_MESSAGE: Final = 1024 * 1024 - 1
"""Every message the fuzzer sends (all its parts together) stays below 1 MiB."""
FORBIDDEN_OPS: Final = frozenset({"inject_fault", "sessions.close", "sessions.cleanup"})
"""Operator actions, not attacks: never sent."""
SAFE_OPS: Final = ("health", "status", "stats", "sessions.list", "sessions.show")
SERVERS: Final = ("example", "fuzz-a", "fuzz-b")
"""Server names the fuzzer opens and registers; ``example`` is the daemon's real one."""
ADAPTER_IDS: Final = ("fuzz-adapter-1", "fuzz-adapter-2", "fuzz-adapter-3")
FRONT_PEERS: Final = 4
BACK_PEERS: Final = 2
ROUND_EXAMPLES: Final = 40
"""Hypothesis examples per round; rounds run until the time budget is used."""
EXAMPLE_OPEN_RATE: Final = 0.5
"""Opens of the real server per second (each may start a Python server process; the machine is small)."""
EXAMPLE_OPEN_BURST: Final = 4
INNOCENT_PAUSE: Final = 0.015
"""Seconds between the innocent session's calls: keeps it under its request rate (100/s)."""
INNOCENT_MIN_CALLS: Final = 50
DRAIN_SECONDS: Final = 40.0
"""How long replies are waited for at the end: well over the daemon's adapter_timeout (5 s), after which it
refuses the opens whose ``spawn`` went to a fake adapter connection the fuzzer has closed since."""
THREAD_MARGIN: Final = 10
FD_MARGIN: Final = 50
SETTLE_SECONDS: Final = 30.0

TABLES: Final[Mapping[str, Mapping[str, Schema]]] = {"front": CLIENT_TO_DAEMON, "back": ADAPTER_TO_DAEMON}
OTHER_TYPES: Final = {
    side: sorted(
        {t for table in (CLIENT_TO_DAEMON, DAEMON_TO_CLIENT, ADAPTER_TO_DAEMON, DAEMON_TO_ADAPTER) for t in table}
        - set(TABLES[side])
    )
    for side in TABLES
}
"""Frame types of the other directions: ``register`` on the front socket, ``opened`` on the back one..."""
ALLOWED_INNOCENT_CODES: Final = frozenset({"not_owner", "bad_frame", "unsupported_version", "unknown_type"})
"""Codes a frame naming the innocent session may be refused with (the last three: envelope errors echo sid)."""

ALARMS: Final = re.compile(
    r"^Traceback|hub handler failed|Unhandled exception| crashed: |giving up on server|supervisor escalates"
    r"|adapter for server 'example' .* exited with code",
    re.MULTILINE,
)
"""Daemon log lines that mean an exception was swallowed, or a part of the daemon died (a server's own stderr
is logged a line at a time behind a prefix, so its tracebacks do not start a line)."""

short = reprlib.Repr()
short.maxstring = 60
short.maxother = 60
short.maxlist = short.maxdict = 8
short.maxlevel = 4


# -- placeholders: what only the moment of sending knows ----------------------------------------


@dataclass(frozen=True)
class FreshRef:
    """A ``ref`` this socket has not used yet, made when the frame is sent (refs are unique per socket)."""

    prefix: str | None
    """None: an int ref (``base`` plus a counter); else a str ref (``prefix`` plus a counter)."""
    base: int = 0


@dataclass(frozen=True)
class SidOf:
    """A session id, chosen when the frame is sent from the sids known then."""

    kind: str
    """``innocent``, ``near_innocent``, ``own`` (this socket's), ``other`` (another fuzzer socket's),
    ``spawned`` (one the daemon asked a fuzzer adapter to start) or ``made_up``."""
    pick: int
    made_up: str


# -- payloads: one part of a message, rendered to bytes when sent -------------------------------


class Payload:
    def render(self, fuzz: Fuzzer, peer: Peer) -> bytes:
        raise NotImplementedError


@dataclass(frozen=True)
class Packed(Payload):
    """A msgpack value, placeholders included."""

    body: Any
    raw_strings: bool = False
    """Pack bytes in the str family (``use_bin_type=False``), which may make invalid UTF-8."""
    single_float: bool = False

    def render(self, fuzz: Fuzzer, peer: Peer) -> bytes:
        return bytes(
            msgpack.packb(
                fuzz.resolve(peer, self.body), use_bin_type=not self.raw_strings, use_single_float=self.single_float
            )
        )


@dataclass(frozen=True)
class Garbage(Payload):
    data: bytes

    def render(self, fuzz: Fuzzer, peer: Peer) -> bytes:
        return self.data


@dataclass(frozen=True)
class Edit:
    op: str
    """``flip`` a bit, ``set`` a byte, ``truncate``, ``insert`` bytes, ``delete`` bytes, ``repeat`` the tail."""
    at: int
    arg: int
    data: bytes = b""


@dataclass(frozen=True)
class Mutated(Payload):
    """A real frame with a few byte-level edits."""

    base: Packed
    edits: tuple[Edit, ...]

    def render(self, fuzz: Fuzzer, peer: Peer) -> bytes:
        data = bytearray(self.base.render(fuzz, peer))
        for edit in self.edits:
            at = edit.at % (len(data) + 1)
            if edit.op == "flip" and data:
                at %= len(data)
                data[at] ^= 1 << (edit.arg % 8)
            elif edit.op == "set" and data:
                data[at % len(data)] = edit.arg % 256
            elif edit.op == "truncate":
                del data[at:]
            elif edit.op == "insert":
                data[at:at] = edit.data
            elif edit.op == "delete":
                del data[at : at + 1 + edit.arg % 8]
            elif edit.op == "repeat":
                data += data[at:]
        return bytes(data[:MAX_MESSAGE])


@dataclass(frozen=True)
class Bulky(Payload):
    """A real frame with one bulky value, built from raw bytes: nested ``depth`` deep, ``count`` elements
    long, or a string of ``count`` characters; in the envelope or as the ``params`` of its ``msg``.

    ``ref`` goes first, as a sender that wants its ref echoed from an oversized frame does (the daemon
    reads the ref of a frame it will not decode from the frame's first fields)."""

    base: Packed
    shape: str
    """``nest_array``, ``nest_map``, ``elements`` or ``string``."""
    count: int
    inside_msg: bool
    element: bytes = b"\xc0"

    def value(self) -> bytes:
        packer = msgpack.Packer(use_bin_type=True)
        if self.shape == "nest_array":
            return b"\x91" * self.count + b"\xc0"
        if self.shape == "nest_map":
            return b"\x81\xa1k" * self.count + b"\xc0"
        if self.shape == "elements":
            return bytes(packer.pack_array_header(self.count)) + self.element * self.count
        return bytes(packer.pack("x" * self.count))

    def render(self, fuzz: Fuzzer, peer: Peer) -> bytes:
        body = fuzz.resolve(peer, self.base.body)
        if not isinstance(body, dict):
            return bytes(msgpack.packb(body, use_bin_type=True))
        items = sorted(body.items(), key=lambda kv: kv[0] != "ref")
        packed: list[tuple[Any, bytes]] = []
        for key, value in items:
            if key == "msg" and self.inside_msg and isinstance(value, dict):
                inner = [(k, _pack(v)) for k, v in value.items() if k != "params"]
                packed.append((key, _raw_map([*inner, ("params", self.value())])))
            else:
                packed.append((key, _pack(value)))
        if not (self.inside_msg and isinstance(body.get("msg"), dict)):
            packed.append(("bulk", self.value()))
        return _raw_map(packed)


def _pack(value: Any) -> bytes:
    return bytes(msgpack.packb(value, use_bin_type=True))


def _raw_map(items: list[tuple[Any, bytes]]) -> bytes:
    header = bytes(msgpack.Packer().pack_map_header(len(items)))
    return header + b"".join(_pack(key) + value for key, value in items)


@dataclass(frozen=True)
class Send:
    side: str
    peer: int
    parts: tuple[Payload, ...]


@dataclass(frozen=True)
class Burst:
    """Many mutated copies of one real frame: cheap volume for the byte-level mutations."""

    side: str
    peer: int
    base: Packed
    rng: random.Random
    count: int


@dataclass(frozen=True)
class Reconnect:
    side: str
    peer: int


Action = Send | Burst | Reconnect


# -- strategies ----------------------------------------------------------------------------------

INTS: Final = st.integers(min_value=-(2**63), max_value=2**64 - 1)
"""Every int msgpack can carry."""
EDGE_INTS: Final = st.sampled_from([0, 1, -1, 127, 128, 255, 256, 2**31 - 1, 2**32, 2**63 - 1, 2**64 - 1, -(2**63)])
SOME_INTS: Final = st.one_of(EDGE_INTS, INTS, st.integers(-1000, 1000))
EXT: Final = st.one_of(
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=12)),
    st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1), st.integers(0, 999_999_999)),
)
JSON_SCALARS: Final = st.one_of(
    st.none(), st.booleans(), SOME_INTS, st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=16)
)
JSON_VALUES: Final = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)
"""What JSON can carry."""
ANY_SCALARS: Final = st.one_of(JSON_SCALARS, st.floats(), st.binary(max_size=16), EXT)
ANY_VALUES: Final = st.recursive(
    ANY_SCALARS,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=6) | st.binary(max_size=4) | st.integers(-3, 3), children, max_size=3)
    ),
    max_leaves=6,
)
"""What msgpack can carry: bin, ext, NaN and non-string keys included."""
URLSAFE: Final = string.ascii_letters + string.digits + "-_"
MADE_UP_SIDS: Final = st.one_of(
    st.sampled_from(["AAAAAAAAAAAAAAAAAAAAAA", "", "-", "0" * 22, "x" * 300, "\x00", "é" * 22]),
    st.text(alphabet=URLSAFE, min_size=22, max_size=22),
    st.text(max_size=30),
)
"""Session ids nobody was given (an ``own`` sid is made up too while its socket has none)."""
METHODS: Final = st.one_of(
    st.sampled_from(
        [
            "initialize",
            "ping",
            "tools/list",
            "tools/call",
            "resources/list",
            "prompts/list",
            "logging/setLevel",
            "notifications/initialized",
            "notifications/cancelled",
            "notifications/progress",
            "sampling/createMessage",
            "roots/list",
        ]
    ),
    st.text(max_size=12),
)
TOOL_CALLS: Final = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["add", "echo", "fail", "cancelled_sleeps", "list_roots", "ask_llm", "nope"]),
        "arguments": st.dictionaries(st.sampled_from(["a", "b", "text", "message", "prompt"]), JSON_VALUES, max_size=3),
    }
)
BAD_IDS: Final = st.one_of(
    st.none(), st.booleans(), st.floats(), st.binary(max_size=4), st.lists(SOME_INTS, max_size=2)
)


SID_KINDS: Final = {
    "front": ["own"] * 7
    + ["innocent"] * 3
    + ["near_innocent", "other", "other", "spawned", "spawned"]
    + ["made_up"] * 5,
    "back": ["own"] * 9 + ["innocent"] * 3 + ["near_innocent", "other", "spawned"] + ["made_up"] * 4,
}


@functools.cache
@st.composite
def sids(draw: st.DrawFn, side: str) -> SidOf:
    kind = draw(st.sampled_from(SID_KINDS[side]))
    return SidOf(kind, draw(st.integers(0, 2**16)), draw(MADE_UP_SIDS) if kind in ("made_up", "own") else "")


FRESH_REFS: Final = st.one_of(
    st.builds(FreshRef, st.none(), st.sampled_from([0, 1000, -(2**63), 2**63 - 2**40, 2**64 - 2**40, -(2**31)])),
    st.builds(FreshRef, st.text(max_size=8)),
)


@st.composite
def jsonrpc_messages(draw: st.DrawFn) -> Any:
    """A JSON-RPC message, valid or broken in one of the ways the daemon must refuse."""
    kind = draw(st.sampled_from(["request", "request", "notification", "result", "error"]))
    msg: dict[Any, Any] = {"jsonrpc": "2.0"}
    if kind in ("request", "notification"):
        method = draw(METHODS)
        msg["method"] = method
        if method == "tools/call":
            msg["params"] = draw(TOOL_CALLS)
        elif method == "notifications/cancelled":
            msg["params"] = {"requestId": draw(SOME_INTS | st.text(max_size=4)), "reason": "fuzz"}
        elif draw(st.booleans()):
            msg["params"] = draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3))
    if kind != "notification":
        msg["id"] = draw(SOME_INTS | st.text(max_size=8))
    if kind == "result":
        msg["result"] = draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3))
    elif kind == "error":
        msg["error"] = {"code": draw(SOME_INTS), "message": draw(st.text(max_size=12))}
    breakage = draw(st.integers(0, 99))
    if breakage < 50:
        return msg
    how = draw(st.integers(0, 12))
    if how == 0:
        msg["jsonrpc"] = draw(st.sampled_from(["1.0", "2", 2.0, 2, None, b"2.0", "", "2.0 "]))
    elif how == 1:
        del msg["jsonrpc"]
    elif how == 2:
        msg["id"] = draw(BAD_IDS)
    elif how == 3:
        msg["method"] = draw(st.sampled_from(["", 5, None, b"ping", ["ping"]]))
    elif how == 4:
        msg["params"] = draw(st.one_of(st.lists(JSON_VALUES, max_size=2), SOME_INTS, st.text(max_size=4)))
    elif how == 5:
        msg["result"], msg["error"] = {}, {"code": 1, "message": "both"}
    elif how == 6:
        msg["error"] = draw(
            st.one_of(ANY_SCALARS, st.fixed_dictionaries({"code": ANY_SCALARS, "message": ANY_SCALARS}))
        )
    elif how == 7:
        msg["params"] = {"blob": draw(st.binary(max_size=16)), "ext": draw(EXT)}
    elif how == 8:
        msg["params"] = {"x": draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))}
    elif how == 9:
        nested: Any = None
        for _ in range(draw(st.integers(60, 120))):
            nested = [nested]
        msg["params"] = {"deep": nested}
    elif how == 10:
        msg[draw(st.sampled_from([1, -1, b"method", b"id"]))] = "x"
    elif how == 11:
        return [msg, msg] if draw(st.booleans()) else []  # a batch: MCP has none
    else:
        return draw(ANY_VALUES)
    return msg


JSONRPC_MESSAGES: Final = jsonrpc_messages()

CTL_ARGS: Final = st.one_of(
    st.fixed_dictionaries({"sid": sids("front")}),
    st.fixed_dictionaries(
        {},
        optional={
            "server": st.sampled_from(SERVERS) | st.text(max_size=6),
            "state": st.sampled_from(["initializing", "active", "shutting_down"]) | st.text(max_size=6),
        },
    ),
    st.dictionaries(st.text(max_size=8), ANY_VALUES, max_size=3),
)


@functools.cache
def field_values(side: str, name: str, kind: Any) -> st.SearchStrategy[Any]:
    """Values a field of this name and kind takes when it is valid (names the daemon gives a meaning first)."""
    by_name: dict[str, st.SearchStrategy[Any]] = {
        "ref": FRESH_REFS,
        "sid": sids(side),
        "msg": JSONRPC_MESSAGES,
        "server": st.sampled_from(SERVERS) | st.text(max_size=12),
        "op": st.one_of(st.sampled_from(SAFE_OPS), st.sampled_from(SAFE_OPS), st.text(max_size=16)).filter(
            lambda op: op not in FORBIDDEN_OPS
        ),
        "args": CTL_ARGS,
        "adapter_id": st.sampled_from(ADAPTER_IDS) | st.text(max_size=20),
        "capacity": st.sampled_from([0, 0, 1, 2, 5, -1]) | SOME_INTS,
    }
    if name in by_name:
        return by_name[name]
    by_kind: dict[Any, st.SearchStrategy[Any]] = {
        STR: st.text(max_size=40),
        INT: SOME_INTS,
        BOOL: st.booleans(),
        MAP: st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4),
        REF: FRESH_REFS,
    }
    if kind in by_kind:
        return by_kind[kind]
    return ANY_VALUES.filter(kind.accepts)  # a kind this file does not know yet


@functools.cache
def wrong_values(kind: Any) -> st.SearchStrategy[Any]:
    return ANY_VALUES.filter(lambda value: not kind.accepts(value))


VERSIONS: Final = st.one_of(
    st.sampled_from([0, 2, -1, 255, 2**32, 2**64 - 1, -(2**63), True, False, "1", 1.0, None, b"\x01", [1], {"v": 1}]),
    INTS,
)


@functools.cache
@st.composite
def schema_frames(draw: st.DrawFn, side: str) -> Packed:
    """A frame of the side's schema table, every field valid, missing, of the wrong type, or extra."""
    table = TABLES[side]
    roll = draw(st.integers(0, 99))
    if roll < 88:
        frame_type: Any = draw(st.sampled_from(sorted(table)))
    elif roll < 94:
        frame_type = draw(st.sampled_from(OTHER_TYPES[side]))
    else:
        frame_type = draw(st.text(max_size=10) | ANY_SCALARS)
    body: dict[Any, Any] = {}
    roll = draw(st.integers(0, 99))
    if roll < 90:
        body["v"] = VERSION
    elif roll < 96:
        body["v"] = draw(VERSIONS)
    if draw(st.integers(0, 99)) < 97:
        body["t"] = frame_type
    schema = table.get(frame_type, {}) if isinstance(frame_type, str) else {}
    for name, (kind, required) in schema.items():
        roll = draw(st.integers(0, 99))
        if roll < (92 if required else 45):
            body[name] = draw(field_values(side, name, kind))
        elif roll >= (97 if required else 93):
            body[name] = draw(wrong_values(kind))
    if "ref" not in body and draw(st.integers(0, 99)) < 10:
        body["ref"] = draw(FRESH_REFS)  # a ref where the schema has none: still echoed in envelope errors
    if draw(st.integers(0, 99)) < 12:
        extra = draw(st.dictionaries(st.text(max_size=8), ANY_VALUES, max_size=3))
        body.update({k: v for k, v in extra.items() if k not in body and k != "ref"})
    if draw(st.integers(0, 99)) < 15:
        body = {key: body[key] for key in draw(st.permutations(list(body)))}
    return Packed(body, raw_strings=draw(st.integers(0, 99)) < 3, single_float=draw(st.booleans()))


@functools.cache
@st.composite
def real_frames(draw: st.DrawFn, side: str) -> Packed:
    """A frame as the reference client or adapter sends it."""
    sid = draw(sids(side))
    ref = draw(FRESH_REFS)
    call = jsonrpc.request(draw(st.integers(1, 10**6)), "tools/call", {"name": "add", "arguments": {"a": 2, "b": 3}})
    if side == "front":
        bodies: list[dict[str, Any]] = [
            {"v": 1, "t": "open", "ref": ref, "server": draw(st.sampled_from(SERVERS))},
            {"v": 1, "t": "mcp", "sid": sid, "msg": call},
            {"v": 1, "t": "ctl", "ref": ref, "op": "health"},
            {"v": 1, "t": "close", "sid": sid, "ref": ref},
            {"v": 1, "t": "ctl", "ref": ref, "op": "sessions.list", "args": {"server": "example"}},
        ]
    else:
        result = jsonrpc.result(draw(st.integers(1, 10**6)), {"content": [{"type": "text", "text": "5"}]})
        bodies = [
            {
                "v": 1,
                "t": "register",
                "server": draw(st.sampled_from(SERVERS)),
                "capacity": 0,
                "pid": 4242,
                "adapter_id": draw(st.sampled_from(ADAPTER_IDS)),
            },
            {"v": 1, "t": "heartbeat"},
            {"v": 1, "t": "spawned", "sid": sid, "pid": 4343},
            {"v": 1, "t": "mcp", "sid": sid, "msg": result},
            {"v": 1, "t": "exited", "sid": sid, "code": 0, "reason": "exited with code 0"},
        ]
    return Packed(draw(st.sampled_from(bodies)))


EDIT_OPS: Final = ("flip", "flip", "flip", "set", "truncate", "insert", "delete", "repeat")


def random_edits(rng: random.Random) -> tuple[Edit, ...]:
    return tuple(
        Edit(rng.choice(EDIT_OPS), rng.randrange(2**16), rng.randrange(256), rng.randbytes(rng.randint(1, 8)))
        for _ in range(rng.randint(1, 3))
    )


EDITS: Final = st.lists(
    st.builds(
        Edit,
        st.sampled_from(EDIT_OPS),
        st.integers(0, 2**16),
        st.integers(0, 255),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=3,
).map(tuple)


@functools.cache
@st.composite
def innocent_frames(draw: st.DrawFn, side: str) -> Packed:
    """A valid frame naming the innocent session: the daemon must refuse or ignore it."""
    victim = SidOf("innocent", 0, "")
    msg = draw(JSONRPC_MESSAGES)
    if side == "front":
        bodies: list[dict[str, Any]] = [
            {"v": 1, "t": "mcp", "sid": victim, "msg": msg if isinstance(msg, dict) else {}},
            {"v": 1, "t": "close", "sid": victim},
            {"v": 1, "t": "close", "sid": victim, "ref": draw(FRESH_REFS)},
            {"v": 1, "t": "attach", "sid": victim, "ref": draw(FRESH_REFS), "token": draw(st.text(max_size=40))},
        ]
    else:
        bodies = [
            {"v": 1, "t": "mcp", "sid": victim, "msg": msg if isinstance(msg, dict) else {}},
            {"v": 1, "t": "spawned", "sid": victim, "pid": draw(SOME_INTS)},
            {"v": 1, "t": "exited", "sid": victim, "code": 1, "reason": "fuzz"},
        ]
    return Packed(draw(st.sampled_from(bodies)))


@functools.cache
@st.composite
def bulky_frames(draw: st.DrawFn, side: str) -> Bulky:
    shape = draw(st.sampled_from(["nest_array", "nest_map", "elements", "string"]))
    if shape.startswith("nest"):
        count = draw(st.sampled_from([63, 64, 65, 100, 511, 512, 513, 1023, 1024, 1025, 4096, 100_000]))
    elif shape == "elements":
        count = draw(st.sampled_from([20_000, 60_000, 150_000, 400_000]))  # away from the 100,000 limit
    else:
        count = draw(st.sampled_from([65_000, 65_600, 200_000, 1_040_000]))
    element = draw(st.sampled_from([b"\xc0", b"\x90", b"\x01"]))
    return Bulky(draw(real_frames(side)), shape, count, draw(st.booleans()), element)


RAW_ODDITIES: Final = (
    b"",
    b"\x83\xa1v\x01\xa1t\xa3ctl\xa3ref\xd4\xff\x00",  # a reserved ext type (-1, the timestamp) of bad length
    b"\x84\xa1v\x01\xa1t\xa4open\xa6server\xa7example\xa3ref\xc7\x03\xfe\x01\x02\x03",  # ext type -2
    b"\x83\xa1v\x01\xa1t\xa3ctl\xa2op\xa6health",  # no ref: answered with an error that names nothing
    b"\x82\xa1v\x01\xa1t\xa4o\xffen",  # invalid UTF-8 in a str
    b"\x82\xa1v\x01\xc4\x01t\xa4open",  # a bin key
    b"\x81\xa1v",  # truncated
    b"\xdf\xff\xff\xff\xff",  # a map header of 4 billion entries, and nothing after it
    b"\xdd\xff\xff\xff\xff",  # the same for an array
    b"\xdb\xff\xff\xff\xff",  # a 4 GiB str header
)


@functools.cache
@st.composite
def payloads(draw: st.DrawFn, side: str) -> Payload:
    roll = draw(st.integers(0, 999))
    if roll < 600:
        return draw(schema_frames(side))
    if roll < 760:
        return Mutated(draw(real_frames(side)), draw(EDITS))
    if roll < 820:
        return Garbage(draw(st.binary(max_size=64) | st.sampled_from(RAW_ODDITIES)))
    if roll < 860:
        return Packed(draw(ANY_VALUES.filter(lambda value: not isinstance(value, dict))))
    if roll < 950:
        return draw(innocent_frames(side))
    if roll < 965:
        return draw(real_frames(side))
    return draw(bulky_frames(side))


@functools.cache
@st.composite
def messages(draw: st.DrawFn, side: str) -> tuple[Payload, ...]:
    parts = draw(st.integers(2, 4)) if draw(st.integers(0, 99)) < 4 else 1
    return tuple(draw(payloads(side)) for _ in range(parts))


@st.composite
def actions(draw: st.DrawFn) -> Action:
    roll = draw(st.integers(0, 999))
    if roll < 5:
        return Reconnect("front", draw(st.integers(0, FRONT_PEERS - 1)))
    if roll < 8:
        return Reconnect("back", draw(st.integers(0, BACK_PEERS - 1)))
    side, peers = ("front", FRONT_PEERS) if roll < 680 else ("back", BACK_PEERS)
    peer = draw(st.integers(0, peers - 1))
    if roll % 10 == 0:
        rng = draw(st.randoms(use_true_random=True))
        return Burst(side, peer, draw(real_frames(side)), rng, draw(st.integers(3, 15)))
    return Send(side, peer, draw(messages(side)))


ACTIONS: Final = st.lists(actions(), min_size=1, max_size=6)


# -- what the daemon must do with a frame: derived from the schema tables and docs/protocol.rst ----

UNREADABLE: Final = object()


def unpack(data: bytes) -> Any:
    """The frame as the daemon reads it, or `UNREADABLE` (it then answers ``bad_frame`` echoing nothing)."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception:  # noqa: BLE001 - msgpack raises several unrelated types
        return UNREADABLE


def readable_ref(body: Any) -> int | str | None:
    ref = body.get("ref") if isinstance(body, dict) else None
    return ref if REF.accepts(ref) else None


def fields_ok(body: Mapping[Any, Any], schema: Schema) -> bool:
    return all(
        (kind.accepts(body[name]) if name in body else not required) for name, (kind, required) in schema.items()
    )


def elements(value: Any) -> int:
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            total += len(item) + 1
            stack.extend(item.values())
        elif isinstance(item, list):
            total += len(item) + 1
            stack.extend(item)
    return total


def too_many_elements(body: Any, size: int) -> bool:
    return size > SMALL_FRAME and elements(body) > MAX_ITEMS


def ref_in_first_fields(body: Mapping[Any, Any]) -> bool:
    """Whether the daemon finds ``ref`` in a frame it refuses to decode (it looks at the first 16 fields)."""
    return "ref" in itertools.islice(body, 16)


def valid_v1(body: Any, types: Mapping[str, Schema]) -> bool:
    return (
        isinstance(body, dict)
        and INT.accepts(body.get("v"))
        and body.get("v") == VERSION
        and isinstance(body.get("t"), str)
        and body["t"] in types
        and fields_ok(body, types[body["t"]])
        and (body["t"] != "mcp" or message_ok(body))
    )


def message_ok(body: Mapping[Any, Any]) -> bool:
    """An ``mcp`` frame's message: ``msg`` (a map) or ``json`` (JSON text of an object), not both."""
    if ("msg" in body) == ("json" in body):
        return False
    if "msg" in body:
        return True
    try:
        return isinstance(json.loads(body["json"], parse_constant=_no_constant), dict)
    except (ValueError, RecursionError):
        return False


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def reply_expected(body: Any, size: int, mine: Callable[[str], bool]) -> bool:
    """Whether the daemon must answer this front frame with a frame carrying its ref.

    ``open``, ``close`` and ``ctl`` are answered with their ref; every frame refused while it is decoded or
    routed gets an ``error`` echoing its readable ref. An ``mcp`` frame that reaches a session (``mine``: one
    of the sender's, or one it may be opening; or its only one when it names none) may go unanswered. A
    ``close`` of a session the sender is still opening (the fuzzer learns such sids from the ``spawn`` its
    fake adapters get) is answered too: with ``error`` ``session_closed``, since no ``closed`` frame names a
    session whose ``opened`` was never sent.
    """
    if readable_ref(body) is None:
        return False
    if too_many_elements(body, size):
        return ref_in_first_fields(body)
    if not valid_v1(body, CLIENT_TO_DAEMON):
        return True
    if body["t"] == "mcp":
        return "sid" in body and not mine(body["sid"])
    return True


def names_innocent(body: Any, size: int, innocent: str) -> bool:
    """A valid ``mcp``, ``close`` or ``attach`` frame naming the innocent session: ``not_owner`` for any other
    connection (an ``attach`` brings a token nobody but the innocent client was given)."""
    return (
        valid_v1(body, CLIENT_TO_DAEMON)
        and body["t"] in ("mcp", "close", "attach")
        and body.get("sid") == innocent
        and not too_many_elements(body, size)
    )


def forbidden(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and body.get("t") == "ctl"
        and isinstance(body.get("op"), str)
        and body["op"] in FORBIDDEN_OPS
    )


def is_real_open(body: Any) -> bool:
    """An ``open`` of the real server: it may start a server process."""
    return valid_v1(body, CLIENT_TO_DAEMON) and body["t"] == "open" and body["server"] == "example"


# -- the fuzzer's sockets ---------------------------------------------------------------------------


class Peer:
    """One DEALER connection of the fuzzer."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, side: str, number: int) -> None:
        self.side = side
        self.number = number
        self.sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDTIMEO, 10_000)
        self.sock.connect(endpoint)
        self.closed = False
        self.counter = itertools.count()
        self.used_refs: set[int | str] = set()
        """Every ref this socket made or sent."""
        self.fresh: set[int | str] = set()
        """The refs made for the message being rendered."""
        self.owned: list[str] = []
        """Sessions this connection opened (front), or was asked to spawn (back), in order."""

    @property
    def label(self) -> str:
        return f"{self.side} #{self.number}"

    def fresh_ref(self, placeholder: FreshRef) -> int | str:
        while True:
            n = next(self.counter)
            ref: int | str = placeholder.base + n if placeholder.prefix is None else f"{placeholder.prefix}{n}"
            if ref not in self.used_refs:
                self.used_refs.add(ref)  # even if a mutation makes it unreadable: the daemon may still read it
                self.fresh.add(ref)
                return ref

    def close(self) -> None:
        if not self.closed:
            self.sock.close(linger=0)
            self.closed = True


class FrontPeer(Peer):
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, number: int) -> None:
        super().__init__(ctx, endpoint, "front", number)
        self.expected: dict[int | str, str] = {}
        """Refs that must be answered, with what was sent, until they are."""
        self.answered: set[int | str] = set()
        self.open_sids: set[str] = set()
        self.close_refs: dict[int | str, str] = {}
        """Refs of the closes the fuzzer sends for its sessions at the end, by sid."""
        self.seq: dict[str, int] = {}
        self.early: set[str] = set()
        """Sessions this connection got frames of before their ``opened``: it must be the one opening them."""
        self.retired = False
        self.innocent_expected = 0
        """Frames naming the innocent session that must get ``not_owner``."""
        self.innocent_optional = 0
        """The same in the last part of a multipart message (the daemon may read that part or refuse it)."""
        self.innocent_refusals: Counter[str] = Counter()

    def done(self) -> bool:
        return not self.expected and not self.open_sids


class BackPeer(Peer):
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, number: int) -> None:
        super().__init__(ctx, endpoint, "back", number)
        self.cooperative = False
        """Until the end, every ``spawn`` is answered with ``spawned`` (the process runs); at the end, every
        ``spawn`` and ``close`` with ``exited``, so that the sessions on this fake adapter end."""
        self.exited: set[str] = set()


class Bucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Fuzzer:
    def __init__(self, daemon: RunningDaemon, innocent: str) -> None:
        self.daemon = daemon
        self.innocent = innocent
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.numbers = itertools.count(1)
        self.real_opens = Bucket(EXAMPLE_OPEN_RATE, EXAMPLE_OPEN_BURST)
        self.trace = open(TRACE_PATH, "w") if TRACE_PATH else None  # noqa: SIM115 - closed by close()
        self.recent: deque[str] = deque(maxlen=30)
        self.sent: Counter[str] = Counter()
        self.stalled = False
        """A send timed out: the daemon stopped reading, fuzzing stops."""
        self.back = [self.new_back() for _ in range(BACK_PEERS)]
        self.front = [self.new_front() for _ in range(FRONT_PEERS)]
        self.retired: list[FrontPeer] = []
        self.finished: list[FrontPeer] = []
        self.owner: dict[str, FrontPeer] = {}
        """Every session a fuzzer connection opened, and which."""
        self.spawned: list[str] = []
        self.spawned_set: set[str] = set()
        self.problems: list[str] = []
        self.skipped: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.replies: Counter[str] = Counter()
        """What the daemon answered on the front socket, by frame type and error code."""

    def new_front(self) -> FrontPeer:
        """A new client connection, which opens a session first, so that frames naming its own have one to reach."""
        peer = FrontPeer(self.ctx, self.daemon.front, next(self.numbers))
        server = "example" if self.real_opens.take() else "fuzz-a"
        self.send_frame(peer, t="open", ref=peer.fresh_ref(FreshRef("open-")), server=server)
        return peer

    def new_back(self) -> BackPeer:
        return BackPeer(self.ctx, self.daemon.back, next(self.numbers))

    def all_front(self) -> list[FrontPeer]:
        return [*self.front, *self.retired, *self.finished]

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)

    # -- sending ---------------------------------------------------------------------------------

    def resolve(self, peer: Peer, value: Any) -> Any:
        if isinstance(value, FreshRef):
            return peer.fresh_ref(value)
        if isinstance(value, SidOf):
            return self.sid_for(peer, value)
        if isinstance(value, dict):
            return {key: self.resolve(peer, item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.resolve(peer, item) for item in value]
        return value

    def sid_for(self, peer: Peer, sid: SidOf) -> str:
        if sid.kind == "innocent":
            return self.innocent
        if sid.kind == "near_innocent":
            changed = "A" if self.innocent[-1] != "A" else "B"
            return [self.innocent[:-1], self.innocent[:-1] + changed, self.innocent + "x", self.innocent.upper()][
                sid.pick % 4
            ]
        if sid.kind == "own":
            pool = peer.owned
        elif sid.kind == "other":
            pool = [s for s, owner in self.owner.items() if owner is not peer] if peer.side == "front" else self.spawned
        elif sid.kind == "spawned":
            pool = self.spawned
        else:
            pool = []
        return pool[sid.pick % len(pool)] if pool else sid.made_up

    def perform(self, action: Action) -> None:
        if isinstance(action, Reconnect):
            self.reconnect(action.side, action.peer)
        elif isinstance(action, Burst):
            for _ in range(action.count):
                self.send(action.side, action.peer, (Mutated(action.base, random_edits(action.rng)),))
        else:
            self.send(action.side, action.peer, action.parts)

    def send(self, side: str, index: int, parts: tuple[Payload, ...]) -> None:
        if side == "front":
            self.send_front(self.front[index % len(self.front)], parts)
        else:
            self.send_back(self.back[index % len(self.back)], parts)

    def render(self, peer: Peer, parts: tuple[Payload, ...]) -> tuple[list[bytes], list[Any]] | None:
        """The message's bytes and how the daemon reads each part; None if it must not be sent."""
        peer.fresh = set()
        try:
            data = [part.render(self, peer) for part in parts]
        except (ValueError, OverflowError, TypeError):
            self.skipped["unpackable"] += 1
            return None
        if sum(len(d) for d in data) > MAX_MESSAGE:
            self.skipped["too large"] += 1
            return None
        bodies = [unpack(d) for d in data]
        if any(forbidden(body) for body in bodies):
            self.skipped["operator op"] += 1
            return None
        refs = [ref for ref in map(readable_ref, bodies) if ref is not None]
        if len(set(refs)) < len(refs) or any(ref in peer.used_refs and ref not in peer.fresh for ref in refs):
            self.skipped["ref reused"] += 1  # a mutation made an old ref: refs stay unique per socket
            return None
        peer.used_refs.update(refs)
        return data, bodies

    def transmit(self, peer: Peer, data: list[bytes], what: str) -> None:
        self.recent.append(f"{peer.label}: {what}")
        if self.trace is not None:
            self.trace.write(f"{time.monotonic():.3f} {peer.label} <- {what}\n")
        try:
            if len(data) == 1:
                peer.sock.send(data[0])
            else:
                peer.sock.send_multipart(data)
        except zmq.Again:
            self.problem(f"{peer.label}: the daemon stopped reading (send timed out) after {what}")
            self.stalled = True
            return
        self.sent[peer.side] += 1

    def send_front(self, peer: FrontPeer, parts: tuple[Payload, ...]) -> None:
        rendered = self.render(peer, parts)
        if rendered is None:
            return
        data, bodies = rendered
        last, size = bodies[-1], len(data[-1])
        if is_real_open(last) and not self.real_opens.take():
            self.skipped["real open"] += 1
            return
        what = (f"{len(data)} parts, last " if len(data) > 1 else "") + describe(last, data[-1])
        ref = readable_ref(last)

        def opening(sid: str) -> bool:  # a session a fuzzer connection (maybe this one) is opening
            return sid not in self.owner and sid in self.spawned_set

        def mine(sid: str) -> bool:
            return self.owner.get(sid) is peer or opening(sid)

        if len(data) == 1 and reply_expected(last, size, mine):
            assert ref is not None
            peer.expected[ref] = what
        if names_innocent(last, size, self.innocent):
            if len(data) == 1:
                peer.innocent_expected += 1
            else:
                peer.innocent_optional += 1
        self.transmit(peer, data, what)

    def send_back(self, peer: BackPeer, parts: tuple[Payload, ...]) -> None:
        rendered = self.render(peer, parts)
        if rendered is None:
            return
        data, bodies = rendered
        last = bodies[-1]
        self.transmit(peer, data, describe(last, data[-1]))

    def send_frame(self, peer: Peer, **body: Any) -> None:
        """A frame of the fuzzer's own (closes and barriers at the end, ``exited`` of a cooperative adapter)."""
        data = bytes(msgpack.packb({"v": VERSION, **body}, use_bin_type=True))
        if isinstance(peer, FrontPeer) and "ref" in body:
            peer.used_refs.add(body["ref"])
            peer.expected[body["ref"]] = describe(body, data)
        self.transmit(peer, [data], describe(body, data))

    # -- connections -------------------------------------------------------------------------------

    def reconnect(self, side: str, index: int) -> None:
        if side == "front":
            index %= len(self.front)
            self.retire(self.front[index])
            self.front[index] = self.new_front()
        else:
            index %= len(self.back)
            self.back[index].close()
            self.back[index] = self.new_back()

    def retire(self, peer: FrontPeer) -> None:
        """Stop fuzzing on ``peer``: close its sessions, then wait for its replies (see `pump`) before closing it."""
        peer.retired = True
        self.retired.append(peer)
        for sid in sorted(peer.open_sids):
            self.close_session(peer, sid)
        self.send_frame(peer, t="ctl", op="health", ref=peer.fresh_ref(FreshRef("barrier-")))

    def close_session(self, peer: FrontPeer, sid: str) -> None:
        ref = peer.fresh_ref(FreshRef("close-"))
        peer.close_refs[ref] = sid
        self.send_frame(peer, t="close", sid=sid, ref=ref)

    # -- receiving --------------------------------------------------------------------------------

    def sockets(self) -> Iterator[Peer]:
        yield from self.front
        yield from self.retired
        yield from self.back

    def pump(self, wait_ms: int = 0) -> None:
        """Read every socket until it is empty; ``wait_ms`` waits that long for a first frame."""
        if wait_ms:
            poller = zmq.Poller()
            for peer in self.sockets():
                poller.register(peer.sock, zmq.POLLIN)
            poller.poll(wait_ms)
        for peer in list(self.sockets()):
            for _ in range(10_000):
                try:
                    parts = peer.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.received[peer.side] += 1
                if self.trace is not None:
                    self.trace.write(
                        f"{time.monotonic():.3f} {peer.label} -> {describe(unpack(parts[-1]), parts[-1])}\n"
                    )
                if len(parts) != 1:
                    self.problem(f"{peer.label}: the daemon sent a message of {len(parts)} parts")
                if isinstance(peer, FrontPeer):
                    self.on_front(peer, parts[-1])
                else:
                    assert isinstance(peer, BackPeer)
                    self.on_back(peer, parts[-1])
        for peer in [p for p in self.retired if p.done()]:
            peer.close()
            self.retired.remove(peer)
            self.finished.append(peer)

    def on_front(self, peer: FrontPeer, data: bytes) -> None:
        try:
            frame = decode(data, DAEMON_TO_CLIENT)
        except FrameError as exc:
            self.problem(f"{peer.label}: the daemon sent a malformed frame ({exc}): {data[:200]!r}")
            return
        kind, sid, ref = frame["t"], frame.get("sid", ""), frame.get("ref")
        self.replies[frame["code"] if kind == "error" else kind] += 1
        if ref is not None:
            if ref not in peer.used_refs:
                self.problem(f"{peer.label}: a reply with a ref this connection never sent: {describe(frame, data)}")
            elif ref in peer.answered:
                self.problem(f"{peer.label}: ref {ref!r} answered twice, now by {describe(frame, data)}")
            peer.answered.add(ref)
            peer.expected.pop(ref, None)
        if sid == self.innocent:
            if kind != "error" or frame["code"] not in ALLOWED_INNOCENT_CODES:
                self.problem(f"{peer.label}: the innocent session leaked to a fuzzer: {describe(frame, data)}")
            else:
                peer.innocent_refusals[frame["code"]] += 1
            return
        if kind == "opened":
            if sid in self.owner:
                self.problem(f"{peer.label}: sid {sid} opened twice: {describe(frame, data)}")
            for other in self.all_front():
                if sid in other.early and other is not peer:
                    self.problem(f"{other.label} was sent frames of session {sid}, which {peer.label} opened")
            self.owner[sid] = peer
            peer.owned.append(sid)
            peer.open_sids.add(sid)
            if peer.retired:
                self.close_session(peer, sid)
        elif kind in ("mcp", "closed"):
            owner = self.owner.get(sid)
            if owner is None:
                # A session this connection is opening: its mcp frames without sid go to it, and the fuzzer
                # may name it with a sid a fake adapter was told to spawn. Checked when its opened comes.
                peer.early.add(sid)
            elif owner is not peer:
                self.problem(f"{peer.label}: a frame of a session it does not own: {describe(frame, data)}")
            if kind == "closed":
                peer.open_sids.discard(sid)
                if frame["reason"] == "failed":
                    self.problem(f"{peer.label}: a session failed inside the daemon: {describe(frame, data)}")
            else:
                seq = frame["seq"]
                if seq != peer.seq.get(sid, 0) + 1:
                    self.problem(f"{peer.label}: session {sid}: seq {seq} after {peer.seq.get(sid, 0)}")
                peer.seq[sid] = seq
        elif kind == "error":
            if frame["code"] not in {str(code) for code in ErrorCode}:
                self.problem(f"{peer.label}: an error code the protocol does not have: {describe(frame, data)}")
            if ref in peer.close_refs:
                if frame["code"] in ("unknown_session", "session_closed"):
                    peer.open_sids.discard(peer.close_refs[ref])  # it had ended already
                else:
                    self.problem(f"{peer.label}: closing its own session was refused: {describe(frame, data)}")

    def on_back(self, peer: BackPeer, data: bytes) -> None:
        try:
            frame = decode(data, DAEMON_TO_ADAPTER)
        except FrameError as exc:
            self.problem(f"{peer.label}: the daemon sent a malformed frame ({exc}): {data[:200]!r}")
            return
        kind, sid = frame["t"], frame.get("sid", "")
        harmless = (kind == "close" and frame["reason"] == "unknown session") or (
            kind == "error" and frame["code"] in ALLOWED_INNOCENT_CODES - {"not_owner"}
        )  # "stop that process", or an envelope error echoing the fuzzer's own frame
        if sid == self.innocent and not harmless:
            self.problem(f"{peer.label}: the innocent session leaked to a fake adapter: {describe(frame, data)}")
            return
        if kind == "spawn":
            if sid not in self.spawned_set:
                self.spawned_set.add(sid)
                self.spawned.append(sid)
            peer.owned.append(sid)
        if peer.cooperative and kind in ("spawn", "close") and sid not in peer.exited:
            peer.exited.add(sid)
            self.send_frame(peer, t="exited", sid=sid, reason="fuzzer: not starting it")
        elif kind == "spawn" and not peer.cooperative:
            self.send_frame(peer, t="spawned", sid=sid, pid=40_000 + len(self.spawned))  # as an adapter does

    # -- the end ----------------------------------------------------------------------------------

    def drain(self, seconds: float) -> None:
        """Close every fuzzer session and wait, up to ``seconds``, for every reply owed."""
        for back in self.back:
            back.cooperative = True
            for sid in dict.fromkeys(back.owned):
                if sid not in back.exited:
                    back.exited.add(sid)
                    self.send_frame(back, t="exited", sid=sid, reason="fuzzer: stopping it")
        for peer in self.front:
            self.retire(peer)
        self.front = []
        deadline = time.monotonic() + seconds
        while self.retired and time.monotonic() < deadline:
            self.pump(wait_ms=50)

    def close(self) -> None:
        for peer in [*self.sockets(), *self.finished]:
            peer.close()
        self.ctx.term()
        if self.trace is not None:
            self.trace.close()


def describe(body: Any, data: bytes) -> str:
    if body is UNREADABLE:
        return f"unreadable {len(data)} bytes {data[:48]!r}"
    return f"{short.repr(body)} ({len(data)} bytes)"


# -- the innocent session -----------------------------------------------------------------------


class Innocent(threading.Thread):
    """A well-behaved client calling ``add`` all through the fuzzing."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(name="innocent", daemon=True)
        self.endpoint = endpoint
        self.ready = threading.Event()
        self.halt = threading.Event()
        self.sid: str | None = None
        self.calls = 0
        self.failures: list[str] = []
        self.slowest = 0.0

    def run(self) -> None:
        try:
            with Client(self.endpoint, timeout=20.0) as client:
                session = client.open("example")
                session.initialize()
                self.sid = session.sid
                self.ready.set()
                for i in itertools.count():
                    if self.halt.wait(INNOCENT_PAUSE):  # pacing, and the signal to stop
                        break
                    started = time.monotonic()
                    try:
                        result = session.request("tools/call", {"name": "add", "arguments": {"a": i, "b": 1}})
                        text = result["content"][0]["text"]
                    except SessionClosed as exc:
                        self.failures.append(f"call {i}: {exc!r}")
                        break
                    except Exception as exc:  # noqa: BLE001 - every failure is recorded
                        self.failures.append(f"call {i}: {exc!r}")
                        continue
                    self.slowest = max(self.slowest, time.monotonic() - started)
                    if text == str(i + 1):
                        self.calls += 1
                    else:
                        self.failures.append(f"call {i}: add({i}, 1) returned {text!r}")
                session.close(timeout=10.0)
        except Exception as exc:  # noqa: BLE001 - recorded, then asserted by the test
            self.failures.append(f"the innocent client failed: {exc!r}")
        finally:
            self.ready.set()


# -- the test ---------------------------------------------------------------------------------


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no Threads: line in /proc/{pid}/status")


def fds_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def sessions_held(daemon: RunningDaemon) -> str:
    with daemon.client(timeout=10.0) as client:
        listing = client.control("sessions.list")
    return short.repr(listing)


def fuzz_round(fuzzer: Fuzzer, stop_at: float, round_seed: int) -> None:
    """One batch of hypothesis examples, each a few actions; examples after ``stop_at`` send nothing."""

    @seed(round_seed)
    @settings(
        max_examples=ROUND_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(batch=ACTIONS)
    def run(batch: list[Action]) -> None:
        if time.monotonic() >= stop_at or fuzzer.stalled or fuzzer.daemon.process.poll() is not None:
            return
        for action in batch:
            fuzzer.perform(action)
        fuzzer.pump()

    run()


@pytest.mark.slow
@pytest.mark.timeout(FUZZ_SECONDS + 180)
def test_fuzz_wire() -> None:
    daemon = start_daemon()
    innocent = Innocent(daemon.front)
    fuzzer: Fuzzer | None = None
    try:
        innocent.start()
        assert innocent.ready.wait(30), "the innocent session did not start"
        assert innocent.sid is not None, f"the innocent session did not open: {innocent.failures}"
        wait_for(lambda: innocent.calls >= 20 or innocent.failures, 30, "the innocent session's first calls")
        pid = daemon.process.pid
        threads, fds = threads_of(pid), fds_of(pid)
        fuzzer = Fuzzer(daemon, innocent.sid)

        def context() -> str:
            assert fuzzer is not None
            if TRACE_PATH:
                Path(f"{TRACE_PATH}.daemon.log").write_text(daemon.log())
            return (
                f"\nseed: TROUPE_FUZZ_SEED={SEED}; sent {dict(fuzzer.sent)}, received {dict(fuzzer.received)}, "
                f"skipped {dict(fuzzer.skipped)}; innocent calls {innocent.calls} (slowest {innocent.slowest:.2f}s)"
                "\nlast frames sent:\n  " + "\n  ".join(fuzzer.recent) + "\ndaemon log (end):\n" + daemon.log()[-4000:]
            )

        stop_at = time.monotonic() + FUZZ_SECONDS
        for round_number in itertools.count():
            if time.monotonic() >= stop_at or daemon.process.poll() is not None:
                break
            fuzz_round(fuzzer, stop_at, SEED + round_number)
        assert daemon.process.poll() is None, f"the daemon died (exit {daemon.process.returncode})" + context()
        assert not fuzzer.stalled, "\n".join(fuzzer.problems) + context()

        fuzzer.drain(DRAIN_SECONDS)
        innocent.halt.set()
        innocent.join(30)
        assert not innocent.is_alive(), "the innocent client did not stop" + context()
        assert daemon.process.poll() is None, f"the daemon died (exit {daemon.process.returncode})" + context()

        assert not innocent.failures, f"the innocent session was disturbed: {innocent.failures[:10]}" + context()
        assert innocent.calls >= INNOCENT_MIN_CALLS, f"only {innocent.calls} innocent calls" + context()
        log = daemon.log()
        alarms = [log[max(0, m.start() - 300) : m.end() + 1500] for m in itertools.islice(ALARMS.finditer(log), 3)]
        assert not alarms, "the daemon's log shows failures:\n" + "\n...\n".join(alarms) + context()
        assert not fuzzer.problems, "the daemon misbehaved:\n" + "\n".join(fuzzer.problems) + context()
        unanswered = [f"{p.label} ref {ref!r}: {what}" for p in fuzzer.all_front() for ref, what in p.expected.items()]
        assert not unanswered, (
            f"{len(unanswered)} frames got no reply with their ref:\n"
            + "\n".join(unanswered[:30])
            + f"\nsessions the daemon holds: {sessions_held(daemon)}"
            + context()
        )
        unclosed = [f"{p.label}: {sid}" for p in fuzzer.all_front() for sid in sorted(p.open_sids)]
        assert not unclosed, "sessions of the fuzzer could not be closed:\n" + "\n".join(unclosed) + context()
        for peer in fuzzer.all_front():
            refused = peer.innocent_refusals["not_owner"]
            assert peer.innocent_expected <= refused <= peer.innocent_expected + peer.innocent_optional, (
                f"{peer.label}: {peer.innocent_expected} (+{peer.innocent_optional} multipart) frames named the "
                f"innocent session, refusals with its sid: {dict(peer.innocent_refusals)}" + context()
            )
        assert sum(p.innocent_expected for p in fuzzer.all_front()) > 0, "no frame named the innocent session"
        assert len(fuzzer.owner) > 0, "the fuzzer never opened a session" + context()

        summary = (
            context().split("\nlast frames")[0]
            + f"; sessions opened {len(fuzzer.owner)}; front replies {dict(fuzzer.replies.most_common())}"
        )
        fuzzer.close()
        fuzzer = None

        def settled() -> bool:
            return threads_of(pid) <= threads + THREAD_MARGIN and fds_of(pid) <= fds + FD_MARGIN

        try:
            wait_for(settled, SETTLE_SECONDS, "the daemon's threads and file descriptors to settle")
        except AssertionError:
            raise AssertionError(
                f"the daemon holds {threads_of(pid)} threads (after warm-up: {threads}) and {fds_of(pid)} file "
                f"descriptors (after warm-up: {fds}) once the fuzzer is gone; sessions: "
                f"{daemon.health()['sessions']}" + f"\nseed: TROUPE_FUZZ_SEED={SEED}"
            ) from None
        health = daemon.health()
        assert health["status"] == "serving", health
        print(f"{summary}; threads {threads} -> {threads_of(pid)}, fds {fds} -> {fds_of(pid)}")
    finally:
        innocent.halt.set()
        if fuzzer is not None:
            fuzzer.close()
        innocent.join(30)
        finish(daemon)
