"""One type per frame kind, as `decode` returns them, and decoders typed by direction.

The types are `TypedDict`\\ s: a decoded frame stays the dict msgpack built
(no copy, no object per frame on the hot path), and the type checker knows
each kind's fields, narrowed by ``frame["t"]``. ``tests/unit/test_frames.py``
holds them to the schema tables of `mcp_troupe.transport.wire.frames`, field
by field, so the two cannot drift. A decoded ``mcp`` frame always has ``msg``
(a ``json`` fallback is parsed into it by `decode`).
"""

from typing import Any, Final, Literal, NotRequired, TypeAlias, TypedDict, cast

from mcp_troupe.transport.wire.frames import (
    ADAPTER_TO_DAEMON,
    CLIENT_TO_DAEMON,
    DAEMON_TO_ADAPTER,
    DAEMON_TO_CLIENT,
    MAX_ITEMS,
    decode,
)

Ref: TypeAlias = int | str
Msg: TypeAlias = dict[str, Any]
"""A JSON-RPC message, validated by `mcp_troupe.transport.wire.jsonrpc` where it is used."""

# -- client -> daemon ------------------------------------------------------------------


class OpenFrame(TypedDict):
    v: int
    t: Literal["open"]
    ref: Ref
    server: str
    expire_idle: NotRequired[bool]
    env: NotRequired[dict[str, Any]]
    stderr: NotRequired[bool]
    via: NotRequired[str]
    token: NotRequired[str]
    """The resume token the client wants (a secret it can derive again); the daemon draws one otherwise."""


class ClientMcpFrame(TypedDict):
    v: int
    t: Literal["mcp"]
    sid: NotRequired[str]
    msg: Msg


class CloseFrame(TypedDict):
    v: int
    t: Literal["close"]
    sid: str
    ref: NotRequired[Ref]


class CtlFrame(TypedDict):
    v: int
    t: Literal["ctl"]
    op: str
    ref: Ref
    args: NotRequired[dict[str, Any]]


class AttachFrame(TypedDict):
    v: int
    t: Literal["attach"]
    ref: Ref
    sid: str
    token: str


ClientFrame: TypeAlias = OpenFrame | ClientMcpFrame | CloseFrame | CtlFrame | AttachFrame

# -- daemon -> client ------------------------------------------------------------------


class OpenedFrame(TypedDict):
    v: int
    t: Literal["opened"]
    ref: Ref
    sid: str
    server: str
    token: NotRequired[str]


class AttachedFrame(TypedDict):
    v: int
    t: Literal["attached"]
    ref: Ref
    sid: str
    server: str
    seq: int


class DaemonMcpFrame(TypedDict):
    v: int
    t: Literal["mcp"]
    sid: str
    seq: int
    msg: Msg


class ClosedFrame(TypedDict):
    v: int
    t: Literal["closed"]
    sid: str
    reason: str
    message: NotRequired[str]
    ref: NotRequired[Ref]


class ErrorFrame(TypedDict):
    v: int
    t: Literal["error"]
    code: str
    message: str
    ref: NotRequired[Ref]
    sid: NotRequired[str]
    id: NotRequired[Ref]
    data: NotRequired[dict[str, Any]]


class CtlReplyFrame(TypedDict):
    v: int
    t: Literal["ctl"]
    ref: Ref
    ok: bool
    result: NotRequired[dict[str, Any]]
    error: NotRequired[dict[str, Any]]


class StderrFrame(TypedDict):
    v: int
    t: Literal["stderr"]
    sid: str
    line: str


ToClientFrame: TypeAlias = (
    OpenedFrame | AttachedFrame | DaemonMcpFrame | ClosedFrame | ErrorFrame | CtlReplyFrame | StderrFrame
)

# -- adapter -> daemon -----------------------------------------------------------------


class RegisterFrame(TypedDict):
    v: int
    t: Literal["register"]
    server: str
    capacity: int
    pid: NotRequired[int]
    adapter_id: NotRequired[str]
    sessions: NotRequired[dict[str, Any]]
    """Its live sessions, sid -> server pid: after a daemon restart, the new daemon restores those it stored."""
    retiring: NotRequired[bool]
    """It outlived its daemon: it serves the sessions it has and takes no new ones."""


class HeartbeatFrame(TypedDict):
    v: int
    t: Literal["heartbeat"]


class SpawnedFrame(TypedDict):
    v: int
    t: Literal["spawned"]
    sid: str
    pid: int


class ServerMcpFrame(TypedDict):
    v: int
    t: Literal["mcp"]
    sid: str
    msg: Msg
    checked: NotRequired[bool]
    """The adapter vouches that ``msg`` is plain JSON; honoured from local adapters only (`AdapterLink.local`)."""


class ExitedFrame(TypedDict):
    v: int
    t: Literal["exited"]
    sid: str
    code: NotRequired[int]
    reason: str


class ServerStderrFrame(TypedDict):
    v: int
    t: Literal["stderr"]
    sid: str
    line: str


UPSTREAM_FAULTS: Final = (
    "connect",
    "tls",
    "timeout",
    "unauthorized",
    "http_error",
    "not_mcp",
    "too_large",
    "stream_lost",
    "protocol",
)
"""What a remote server's failure can be (``fault`` frames, ``data.upstream`` of error -32014, the metric's label)."""


class FaultFrame(TypedDict):
    """A remote server failed one exchange of the session (counted; the client got its error already)."""

    v: int
    t: Literal["fault"]
    sid: str
    kind: str
    status: NotRequired[int]


class UnregisterFrame(TypedDict):
    v: int
    t: Literal["unregister"]
    reason: str


AdapterFrame: TypeAlias = (
    RegisterFrame
    | HeartbeatFrame
    | SpawnedFrame
    | ServerMcpFrame
    | ExitedFrame
    | ServerStderrFrame
    | FaultFrame
    | UnregisterFrame
)

# -- daemon -> adapter -----------------------------------------------------------------


class RegisteredFrame(TypedDict):
    v: int
    t: Literal["registered"]
    server: str


class SpawnFrame(TypedDict):
    v: int
    t: Literal["spawn"]
    sid: str
    env: NotRequired[dict[str, Any]]


class ToServerMcpFrame(TypedDict):
    v: int
    t: Literal["mcp"]
    sid: str
    msg: Msg


class StopFrame(TypedDict):
    """``close`` (daemon -> adapter): stop the session's server process."""

    v: int
    t: Literal["close"]
    sid: str
    reason: str


class PauseFrame(TypedDict):
    v: int
    t: Literal["pause"]
    sid: str


class ResumeFrame(TypedDict):
    v: int
    t: Literal["resume"]
    sid: str


ToAdapterFrame: TypeAlias = (
    RegisteredFrame | SpawnFrame | ToServerMcpFrame | StopFrame | PauseFrame | ResumeFrame | ErrorFrame
)

KINDS: dict[str, dict[str, type]] = {
    "client_to_daemon": {
        "open": OpenFrame,
        "mcp": ClientMcpFrame,
        "close": CloseFrame,
        "ctl": CtlFrame,
        "attach": AttachFrame,
    },
    "daemon_to_client": {
        "opened": OpenedFrame,
        "attached": AttachedFrame,
        "mcp": DaemonMcpFrame,
        "closed": ClosedFrame,
        "error": ErrorFrame,
        "ctl": CtlReplyFrame,
        "stderr": StderrFrame,
    },
    "adapter_to_daemon": {
        "register": RegisterFrame,
        "heartbeat": HeartbeatFrame,
        "spawned": SpawnedFrame,
        "mcp": ServerMcpFrame,
        "exited": ExitedFrame,
        "stderr": ServerStderrFrame,
        "fault": FaultFrame,
        "unregister": UnregisterFrame,
    },
    "daemon_to_adapter": {
        "registered": RegisteredFrame,
        "spawn": SpawnFrame,
        "mcp": ToServerMcpFrame,
        "close": StopFrame,
        "pause": PauseFrame,
        "resume": ResumeFrame,
        "error": ErrorFrame,
    },
}
"""Each direction's frame types, by ``t``: the twin of the schema tables, checked against them."""


def decode_from_client(data: bytes, *, max_bytes: int | None = None, max_items: int = MAX_ITEMS) -> ClientFrame:
    return cast(ClientFrame, decode(data, CLIENT_TO_DAEMON, max_bytes=max_bytes, max_items=max_items))


def decode_from_adapter(data: bytes, *, max_bytes: int | None = None, max_items: int = MAX_ITEMS) -> AdapterFrame:
    return cast(AdapterFrame, decode(data, ADAPTER_TO_DAEMON, max_bytes=max_bytes, max_items=max_items))


def decode_for_client(data: bytes, *, max_bytes: int | None = None, max_items: int = MAX_ITEMS) -> ToClientFrame:
    return cast(ToClientFrame, decode(data, DAEMON_TO_CLIENT, max_bytes=max_bytes, max_items=max_items))


def decode_for_adapter(data: bytes, *, max_bytes: int | None = None, max_items: int = MAX_ITEMS) -> ToAdapterFrame:
    return cast(ToAdapterFrame, decode(data, DAEMON_TO_ADAPTER, max_bytes=max_bytes, max_items=max_items))
