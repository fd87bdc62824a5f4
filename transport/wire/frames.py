"""The troupe wire envelope: msgpack maps with a version and a type.

Pure module: encoding, decoding and validation only, no sockets. Every frame on
every troupe socket is one msgpack map with ``v`` (the envelope version, an int)
and ``t`` (the frame type, a str). ``docs/protocol.rst`` is the normative
description; the schemas below are its machine-readable twin.

There are four directions and each has its own schema table, so a frame that is
legal one way (``opened`` from the daemon) is refused the other way.
"""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final, NamedTuple

import msgpack

from mcp_troupe.transport.wire.envelope import envelope_of

VERSION: Final = 1
"""The envelope version this build speaks and accepts."""

SUPPORTED_VERSIONS: Final = frozenset({VERSION})


class ErrorCode(StrEnum):
    """Stable envelope error codes carried by ``error`` frames."""

    BAD_FRAME = "bad_frame"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_TYPE = "unknown_type"
    FRAME_TOO_LARGE = "frame_too_large"
    UNKNOWN_SESSION = "unknown_session"
    SESSION_CLOSED = "session_closed"
    NOT_INITIALIZED = "not_initialized"
    TOO_MANY_SESSIONS = "too_many_sessions"
    RATE_LIMITED = "rate_limited"
    NOT_OWNER = "not_owner"
    UNKNOWN_SERVER = "unknown_server"
    SERVER_BUSY = "server_busy"
    INVALID_MESSAGE = "invalid_message"
    SPAWN_FAILED = "spawn_failed"
    NOT_REGISTERED = "not_registered"
    SHUTTING_DOWN = "shutting_down"
    UNKNOWN_OP = "unknown_op"
    FORBIDDEN = "forbidden"
    BAD_ARGS = "bad_args"


class FrameError(Exception):
    """A frame that cannot be accepted; becomes an ``error`` frame to its sender.

    ``ref``, ``sid`` and ``id`` echo whatever could be read from the bad frame,
    so the sender can tell which of its operations failed; ``data`` carries
    machine-readable detail (limits, ``retry_after_ms``).
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        ref: int | str | None = None,
        sid: str | None = None,
        id: int | str | None = None,
        data: dict[str, Any] | None = None,
        too_big: bool = False,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.too_big = too_big
        """Refused for its size or element count, before decoding: the frame itself may have been fine."""
        self.code = code
        self.message = message
        self.ref = ref
        self.sid = sid
        self.id = id
        self.data = data

    def to_frame(self) -> bytes:
        """Encode this error as an ``error`` frame."""
        return encode(
            "error", code=str(self.code), message=self.message, ref=self.ref, sid=self.sid, id=self.id, data=self.data
        )


class _Kind:
    """A field type: a name for messages and the Python types that satisfy it."""

    __slots__ = ("name", "types")

    def __init__(self, name: str, *types: type) -> None:
        self.name = name
        self.types = types

    def accepts(self, value: object) -> bool:
        return isinstance(value, self.types) and not (isinstance(value, bool) and bool not in self.types)


STR: Final = _Kind("string", str)
INT: Final = _Kind("integer", int)
BOOL: Final = _Kind("boolean", bool)
MAP: Final = _Kind("map", dict)
REF: Final = _Kind("integer or string", int, str)

Schema = Mapping[str, tuple[_Kind, bool]]
"""Field name -> (kind, required)."""

CLIENT_TO_DAEMON: Final[Mapping[str, Schema]] = {
    "open": {
        "ref": (REF, True),
        "server": (STR, True),
        "expire_idle": (BOOL, False),
        "env": (MAP, False),
        "stderr": (BOOL, False),
        "via": (STR, False),
        "token": (STR, False),
    },
    "mcp": {"sid": (STR, False), "msg": (MAP, False), "json": (STR, False)},
    "close": {"sid": (STR, True), "ref": (REF, False)},
    "ctl": {"op": (STR, True), "ref": (REF, True), "args": (MAP, False)},
    "attach": {"ref": (REF, True), "sid": (STR, True), "token": (STR, True)},
}

DAEMON_TO_CLIENT: Final[Mapping[str, Schema]] = {
    "opened": {"ref": (REF, True), "sid": (STR, True), "server": (STR, True), "token": (STR, False)},
    "attached": {"ref": (REF, True), "sid": (STR, True), "server": (STR, True), "seq": (INT, True)},
    "mcp": {"sid": (STR, True), "seq": (INT, True), "msg": (MAP, False), "json": (STR, False)},
    "closed": {"sid": (STR, True), "reason": (STR, True), "message": (STR, False), "ref": (REF, False)},
    "error": {
        "code": (STR, True),
        "message": (STR, True),
        "ref": (REF, False),
        "sid": (STR, False),
        "id": (REF, False),
        "data": (MAP, False),
    },
    "ctl": {"ref": (REF, True), "ok": (BOOL, True), "result": (MAP, False), "error": (MAP, False)},
    "stderr": {"sid": (STR, True), "line": (STR, True)},
}

ADAPTER_TO_DAEMON: Final[Mapping[str, Schema]] = {
    "register": {
        "server": (STR, True),
        "capacity": (INT, True),
        "pid": (INT, False),
        "adapter_id": (STR, False),
        "sessions": (MAP, False),
        "retiring": (BOOL, False),
    },
    "heartbeat": {},
    "spawned": {"sid": (STR, True), "pid": (INT, True)},
    "mcp": {"sid": (STR, True), "msg": (MAP, False), "json": (STR, False), "checked": (BOOL, False)},
    "exited": {"sid": (STR, True), "code": (INT, False), "reason": (STR, True)},
    "stderr": {"sid": (STR, True), "line": (STR, True)},
    "fault": {"sid": (STR, True), "kind": (STR, True), "status": (INT, False)},
    "unregister": {"reason": (STR, True)},
}

DAEMON_TO_ADAPTER: Final[Mapping[str, Schema]] = {
    "registered": {"server": (STR, True)},
    "spawn": {"sid": (STR, True), "env": (MAP, False)},
    "mcp": {"sid": (STR, True), "msg": (MAP, False), "json": (STR, False)},
    "close": {"sid": (STR, True), "reason": (STR, True)},
    "pause": {"sid": (STR, True)},
    "resume": {"sid": (STR, True)},
    "error": DAEMON_TO_CLIENT["error"],
}


def _plain_mcp_tables() -> tuple[Mapping[str, Schema], ...]:
    """Directions whose ``mcp`` schema requires nothing but ``sid`` (and ``msg`` or ``json``)."""
    tables = (CLIENT_TO_DAEMON, DAEMON_TO_CLIENT, ADAPTER_TO_DAEMON, DAEMON_TO_ADAPTER)
    return tuple(
        table
        for table in tables
        if {name for name, (_kind, required) in table["mcp"].items() if required} <= {"sid"}
        and set(table["mcp"]) <= {"sid", "msg", "json", "checked"}
    )


_PLAIN_MCP: Final = frozenset(id(table) for table in _plain_mcp_tables())
"""By identity: the tables are module constants, and comparing dicts by value would cost a walk."""


class _Packers(threading.local):
    """One `msgpack.Packer` per thread: ``msgpack.packb`` makes (and allocates a buffer for) a
    new one per call, and a Packer's buffer must not be shared between threads."""

    def __init__(self) -> None:
        self.pack = msgpack.Packer(use_bin_type=True).pack


_packers: Final = _Packers()


def encode(frame_type: str, /, **fields: Any) -> bytes:
    """Encode one frame; fields whose value is ``None`` are left out.

    An ``mcp`` frame whose message msgpack cannot carry (an integer beyond 64
    bits, a string that is not valid Unicode, such as a lone surrogate: both
    valid JSON) carries it as JSON text in ``json`` instead of ``msg``.
    """
    body: dict[str, Any] = {"v": VERSION, "t": frame_type}
    for name, value in fields.items():
        if value is not None:
            body[name] = value
    try:
        packed: bytes = _packers.pack(body)
        return packed
    except (OverflowError, UnicodeEncodeError):
        if frame_type != "mcp" or "msg" not in body:
            raise
    body["json"] = _json_text(body.pop("msg"))
    fallback: bytes = _packers.pack(body)
    return fallback


_json_text: Final = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode
"""ASCII JSON: a lone surrogate travels as its ``\\udXXX`` escape."""


MAX_ITEMS: Final = 50_000
"""Default for ``max_items``: elements (map entries and array items, all levels) in one frame."""
SMALL_FRAME: Final = 64 * 1024
"""Frames up to this size are decoded without counting elements: they cannot hold more than
this many, so their decoded size is bounded already, and counting costs time on the hot path."""


def decode(
    data: bytes, schemas: Mapping[str, Schema], *, max_bytes: int | None = None, max_items: int = MAX_ITEMS
) -> dict[str, Any]:
    """Decode and validate one frame against a direction's schema table.

    Returns the frame as a dict (``v`` and ``t`` included). Unknown extra fields
    are ignored so newer peers can add optional fields. Raises `FrameError`
    with the most specific code that applies and whatever ``ref``/``sid`` it
    could read.

    The work and memory one frame can cost are bounded before anything is
    built: a frame over ``max_bytes`` is refused after reading at most its
    first 64 KiB (for the fields to echo), and a frame holding more than
    ``max_items`` elements is refused as soon as the count passes the limit.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise _too_large(data, max_bytes)
    body = _unpack_map(data, max_items)
    if body.get("t") == "mcp" and id(schemas) in _PLAIN_MCP and _plain_mcp(body):
        return body
    ref = _echo(body.get("ref"), REF)
    sid = _echo(body.get("sid"), STR)
    version = body.get("v")
    if not INT.accepts(version):
        raise FrameError(ErrorCode.BAD_FRAME, "field 'v' (envelope version) must be an integer", ref=ref, sid=sid)
    if version not in SUPPORTED_VERSIONS:
        raise FrameError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"envelope version {version} is not supported; this daemon speaks v={sorted(SUPPORTED_VERSIONS)}",
            ref=ref,
            sid=sid,
        )
    frame_type = body.get("t")
    if not isinstance(frame_type, str):
        raise FrameError(ErrorCode.BAD_FRAME, "field 't' (frame type) must be a string", ref=ref, sid=sid)
    schema = schemas.get(frame_type)
    if schema is None:
        raise FrameError(
            ErrorCode.UNKNOWN_TYPE,
            f"unknown frame type {frame_type!r}; expected one of {sorted(schemas)}",
            ref=ref,
            sid=sid,
        )
    _check_fields(frame_type, body, schema, ref, sid)
    if frame_type == "mcp":
        _message_of(body, ref, sid, max_items)
    return body


def _plain_mcp(body: dict[str, Any]) -> bool:
    """An ``mcp`` frame of the common shape, checked in a few operations: every message of a session
    comes this way, so the generic checks below (the same verdict, a few times slower) are skipped."""
    version, sid, msg = body.get("v"), body.get("sid"), body.get("msg")
    return (
        type(version) is int
        and version in SUPPORTED_VERSIONS
        and type(sid) is str
        and type(msg) is dict
        and "json" not in body
        and type(body.get("checked", False)) is bool
    )


def _message_of(body: dict[str, Any], ref: int | str | None, sid: str | None, max_items: int) -> None:
    """An ``mcp`` frame carries its message in ``msg`` or, as JSON text, in ``json``: always ``msg`` once decoded."""
    if "json" not in body:
        if "msg" not in body:
            raise FrameError(
                ErrorCode.BAD_FRAME, "'mcp' frame needs 'msg' (a map) or 'json' (a string)", ref=ref, sid=sid
            )
        return
    text = body.pop("json")
    if "msg" in body:
        raise FrameError(ErrorCode.BAD_FRAME, "'mcp' frame carries both 'msg' and 'json'; send one", ref=ref, sid=sid)
    if text.count("{") + text.count("[") > max_items:
        message = f"'mcp' frame's json holds more than {max_items} maps and arrays; send smaller messages"
        raise FrameError(ErrorCode.BAD_FRAME, message, ref=ref, sid=sid, data={"limit": max_items})
    try:
        msg = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise FrameError(
            ErrorCode.BAD_FRAME, f"'mcp' frame's json is not valid JSON ({type(exc).__name__}: {exc})", ref=ref, sid=sid
        ) from None
    if not isinstance(msg, dict):
        message = f"'mcp' frame's json must be a JSON object, got {type(msg).__name__}"
        raise FrameError(ErrorCode.BAD_FRAME, message, ref=ref, sid=sid)
    body["msg"] = msg


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _too_large(data: bytes, max_bytes: int) -> FrameError:
    """The error for an oversized frame, echoing what it says of ``ref``, ``sid`` and ``id`` (`peek_ids`)."""
    echo = peek_ids(data)
    message = (
        f"frame is {len(data)} bytes, over the limit of {max_bytes} bytes; "
        "send smaller messages or raise max_frame_bytes in the daemon config"
    )
    return _refused_for_size(ErrorCode.FRAME_TOO_LARGE, message, echo, max_bytes)


def _refused_for_size(code: ErrorCode, message: str, echo: Echo, limit: int) -> FrameError:
    """``data`` says ``response: true`` when the refused message was a response: the requester waiting for it
    is not the sender, and the daemon answers it in the sender's place."""
    data: dict[str, Any] = {"limit": limit, "response": True} if echo.response else {"limit": limit}
    return FrameError(code, message, ref=echo.ref, sid=echo.sid, id=echo.id, data=data, too_big=True)


class Echo(NamedTuple):
    """What a refused frame says of itself, for the ``error`` frame that answers it."""

    ref: int | str | None
    sid: str | None
    id: int | str | None
    """The ``id`` of the frame's message."""
    response: bool
    """The message has an ``id`` and no ``method``: a response to a request of the other side."""


def peek_ids(data: bytes) -> Echo:
    """`Echo` read from a frame without building the rest of it.

    Values of other keys are skipped (msgpack's ``skip`` walks them in C, building nothing), so the
    message's ``id`` is found wherever its encoder put it: a TypeScript client writes it after a
    response's ``result``. A message carried as ``json`` text is read by its `envelope_of`. Only
    ``mcp`` frames carry ``msg``, and they have no ``ref``: once ``sid``, the message's ``id`` and its
    ``method`` are known, the rest of the frame is not walked (troupe's own encoders write them first).
    """
    found: dict[str, Any] = {}
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=max(len(data), 1))
    unpacker.feed(data)
    try:
        for _ in range(min(unpacker.read_map_header(), 16)):
            key = unpacker.unpack()
            if key == "msg":
                found["id"], found["response"], stopped = _peek_message(unpacker, data, walk_all="sid" not in found)
                if stopped:
                    break
            elif key == "json" and isinstance(text := _small(unpacker, data, len(data)), str):
                envelope = envelope_of(text.encode("utf-8", "surrogatepass")) or {}
                found["id"], found["response"] = envelope.get("id"), "method" not in envelope
            elif key in ("ref", "sid"):
                found[key] = _small(unpacker, data)
            else:
                unpacker.skip()
    except Exception:  # noqa: BLE001 - whatever was found before the frame went wrong is still worth echoing
        pass
    msg_id = _echo(found.get("id"), REF)
    return Echo(
        _echo(found.get("ref"), REF), _echo(found.get("sid"), STR), msg_id, msg_id is not None and found["response"]
    )


def _peek_message(unpacker: msgpack.Unpacker, data: bytes, *, walk_all: bool) -> tuple[Any, bool, bool]:
    """``(id, is a response, stopped inside)`` of the ``msg`` value that comes next. With ``walk_all``,
    or when the message is a response, the unpacker ends past ``msg``; otherwise it stops as soon as
    the ``id`` and ``method`` are both known."""
    if data[unpacker.tell()] not in _MAP_TYPES:
        unpacker.skip()
        return None, False, False
    msg_id, has_method = None, False
    for _ in range(unpacker.read_map_header()):
        key = _small(unpacker, data)
        if key == "id":
            msg_id = _small(unpacker, data)
        else:
            has_method = has_method or key == "method"
            unpacker.skip()
        if not walk_all and has_method and msg_id is not None:
            return msg_id, False, True
    return msg_id, not has_method, False


_MAP_TYPES: Final = frozenset([*range(0x80, 0x90), 0xDE, 0xDF])
"""The first bytes of a msgpack map: fixmap, map 16, map 32."""


def _small(unpacker: msgpack.Unpacker, data: bytes, limit: int = SMALL_FRAME) -> Any:
    """The next value if its encoding is at most ``limit`` bytes, else None: one that claims millions of
    elements is skipped, never built."""
    start = unpacker.tell()
    unpacker.skip()
    end = unpacker.tell()
    return msgpack.unpackb(data[start:end], raw=False) if end - start <= limit else None


class _TooManyItems(Exception):
    pass


def _unpack_map(data: bytes, max_items: int = MAX_ITEMS) -> dict[str, Any]:
    try:
        if len(data) <= SMALL_FRAME:
            body = msgpack.unpackb(data, raw=False, strict_map_key=True)
        else:
            body = _unpack_counted(data, max_items)
    except _TooManyItems:
        message = (
            f"frame holds more than {max_items} elements (map entries and array items); "
            "send smaller messages or raise max_frame_items in the daemon config"
        )
        raise _refused_for_size(ErrorCode.BAD_FRAME, message, peek_ids(data), max_items) from None
    except Exception as exc:  # noqa: BLE001 - msgpack raises several unrelated types
        raise FrameError(ErrorCode.BAD_FRAME, f"frame is not valid msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(body, dict):
        raise FrameError(ErrorCode.BAD_FRAME, f"frame must be a msgpack map, got {type(body).__name__}")
    return body


def _unpack_counted(data: bytes, max_items: int) -> Any:
    """Decode, stopping as soon as more than ``max_items`` elements were built.

    Each container counts its entries or items when msgpack has built it (its hook;
    an empty one counts as an item of its parent), and no
    single container may be larger than the limit, so at most about twice
    the limit's worth of objects exists when the frame is refused.
    """
    left = [max_items]

    def count_map(value: dict[str, Any]) -> dict[str, Any]:
        left[0] -= len(value)
        if left[0] < 0:
            raise _TooManyItems
        return value

    def count_list(value: list[Any]) -> list[Any]:
        left[0] -= len(value)
        if left[0] < 0:
            raise _TooManyItems
        return value

    collecting = gc.isenabled()
    gc.disable()  # msgpack builds no cycles: collections triggered by its allocations would only cost time
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            object_hook=count_map,
            list_hook=count_list,
            max_map_len=max_items,
            max_array_len=max_items,
        )
    except ValueError as exc:
        if "exceeds max_" in str(exc):
            raise _TooManyItems from None
        raise
    finally:
        if collecting:
            gc.enable()


def _echo(value: object, kind: _Kind) -> Any:
    return value if kind.accepts(value) else None


def _check_fields(
    frame_type: str, body: Mapping[str, Any], schema: Schema, ref: int | str | None, sid: str | None
) -> None:
    for name, (kind, required) in schema.items():
        if name not in body:
            if required:
                raise FrameError(
                    ErrorCode.BAD_FRAME,
                    f"'{frame_type}' frame is missing field '{name}' ({kind.name})",
                    ref=ref,
                    sid=sid,
                )
            continue
        value = body[name]
        if not kind.accepts(value):
            raise FrameError(
                ErrorCode.BAD_FRAME,
                f"'{frame_type}' frame field '{name}' must be {kind.name}, got {type(value).__name__}",
                ref=ref,
                sid=sid,
            )
