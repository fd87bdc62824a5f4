"""JSON-RPC 2.0 classification and validation for MCP messages.

Pure module. MCP messages travel inside ``mcp`` frames as msgpack maps; this
module decides what a message is (request, notification, response) and whether
it is valid JSON-RPC 2.0 that can be written to a stdio server as JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from json.encoder import c_encode_basestring, c_make_encoder  # type: ignore[attr-defined]
from typing import Any, Final, TypeGuard

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
CONNECTION_CLOSED: Final = -32000
"""The official SDK's code for a request cut off by its connection ending."""
REQUEST_TIMEOUT: Final = -32001
"""The official SDK's code for a request that timed out."""
TOO_MANY_PENDING: Final = -32010
"""troupe: a pending-request limit is reached; ``data: {scope, current, limit}``."""
RATE_LIMITED: Final = -32011
"""troupe: the session's request rate limit is exceeded; ``data: {retry_after_ms, rate, burst}``."""
NOT_INITIALIZED: Final = -32012
"""troupe: the request is not allowed before the session's handshake completes; ``data: {state, era}``."""
MESSAGE_TOO_LARGE: Final = -32013
"""troupe: a message is larger than troupe carries (a server's reply over ``max_server_frame_bytes``);
``data: {limit, size}`` (bytes), or ``{limit, items}`` for one holding too many maps and arrays."""
UPSTREAM_FAILED: Final = -32014
"""troupe: a remote (``url``) server failed the request; ``data: {upstream, server, url, http_status}``, where
``upstream`` names what failed (connect, tls, timeout, unauthorized, http_error, not_mcp, stream_lost, protocol)
and ``http_status`` is there only when the server answered with an HTTP status."""
UNSUPPORTED_PROTOCOL_VERSION: Final = -32022
"""MCP 2026-07-28: ``data: {supported, requested}``."""

MAX_DEPTH: Final = 64
"""Deepest nesting of arrays and maps accepted inside one message."""

RequestId = int | str


class Kind(Enum):
    REQUEST = "request"
    NOTIFICATION = "notification"
    RESULT = "result"
    ERROR = "error"


@dataclass(slots=True)  # not frozen: made for every message, and a frozen __init__ costs 3 times as much
class Message:
    """A validated JSON-RPC message: its kind, id (None for notifications) and method."""

    kind: Kind
    id: RequestId | None
    method: str | None
    body: dict[str, Any]


class InvalidMessage(ValueError):
    """The message is not valid JSON-RPC 2.0; ``id`` is echoed when readable."""

    def __init__(self, reason: str, id: RequestId | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.id = id


def classify(body: object, *, values_checked: bool = False) -> Message:
    """Validate one JSON-RPC 2.0 message and say what it is.

    Batches (arrays) are refused: MCP removed them in 2025-06-18. With ``values_checked`` (a peer with the
    right to vouch for it did: see `mcp_troupe.transport.keys.VOUCH`), its values are not walked again for
    what JSON cannot carry; its structure is checked all the same.
    """
    if isinstance(body, list):
        raise InvalidMessage(
            "JSON-RPC batches are not supported (MCP removed them in 2025-06-18); send one message per frame"
        )
    if not isinstance(body, dict):
        raise InvalidMessage(f"an MCP message must be a map, got {type(body).__name__}")
    raw_id = body.get("id")
    msg_id = raw_id if is_id(raw_id) else None
    if body.get("jsonrpc") != "2.0":
        raise InvalidMessage('field "jsonrpc" must be the string "2.0"', msg_id)
    if "id" in body and msg_id is None and not ("error" in body and raw_id is None):
        raise InvalidMessage('field "id" must be a string or an integer', None)
    if not values_checked:
        try:
            check_json_value(body)
        except InvalidMessage as exc:
            raise InvalidMessage(exc.reason, msg_id) from None
    if "method" in body:
        return _classify_call(body, msg_id)
    return _classify_response(body, msg_id)


def _classify_call(body: dict[str, Any], msg_id: RequestId | None) -> Message:
    method = body["method"]
    if not isinstance(method, str) or not method:
        raise InvalidMessage('field "method" must be a non-empty string', msg_id)
    if "result" in body or "error" in body:
        raise InvalidMessage('a request or notification must not carry "result" or "error"', msg_id)
    params = body.get("params")
    if params is not None and not isinstance(params, dict):
        raise InvalidMessage('field "params" must be a map when present (MCP uses named parameters)', msg_id)
    if "id" in body:
        return Message(Kind.REQUEST, msg_id, method, body)
    return Message(Kind.NOTIFICATION, None, method, body)


def _classify_response(body: dict[str, Any], msg_id: RequestId | None) -> Message:
    has_result, has_error = "result" in body, "error" in body
    if has_result == has_error:
        raise InvalidMessage(
            'a message without "method" must be a response with exactly one of "result" or "error"', msg_id
        )
    if "id" not in body:
        raise InvalidMessage('a response must carry the "id" of its request', None)
    if has_result:
        return Message(Kind.RESULT, msg_id, None, body)
    error = body["error"]
    if not isinstance(error, dict) or not _is_int(error.get("code")) or not isinstance(error.get("message"), str):
        raise InvalidMessage('field "error" must be a map with an integer "code" and a string "message"', msg_id)
    return Message(Kind.ERROR, msg_id, None, body)


def _refuse_default(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


def _json_checker() -> Callable[[object], str]:
    """JSON text of a value, or TypeError/ValueError for what JSON cannot carry.

    ``JSONEncoder.encode`` builds a new C encoder on every call (about half its cost for a small
    message); this one is built once. Without the C accelerator, the Python encoder does the same."""
    if c_make_encoder is None:  # pragma: no cover - CPython always has it
        return json.JSONEncoder(allow_nan=False, check_circular=False, separators=(",", ":")).encode
    encoder = c_make_encoder(None, _refuse_default, c_encode_basestring, None, ":", ",", False, False, False)
    join = "".join
    return lambda value: join(encoder(value, 0))


_encode_json: Final = _json_checker()


def check_json_value(value: object) -> None:
    """Refuse anything JSON cannot carry: binary, non-string keys, NaN, deep nesting.

    ``value`` comes from msgpack with ``strict_map_key`` (as `mcp_troupe.transport.wire.frames`
    decodes) or from JSON, so its keys are str or bytes. The common case, a
    valid message, is checked by the C JSON encoder (it refuses binary and
    bytes keys, ext types and NaN: about ten times faster than a walk in
    Python); the walk in `_check_walk` runs only to find the exact fault for
    the error message, or to measure the depth when the message holds more
    containers than `MAX_DEPTH`. (The encoder would turn int keys into
    strings; the decoders above never produce them.)
    """
    try:
        text = _encode_json(value)
    except (TypeError, ValueError, RecursionError):
        _check_walk(value)
        raise InvalidMessage("the message cannot be carried in JSON") from None
    if text.count("{") + text.count("[") > MAX_DEPTH:
        _check_walk(value)


def _check_walk(value: object) -> None:
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidMessage(f"message nests deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise InvalidMessage(f"map keys must be strings for JSON, got {type(key).__name__}")
                if isinstance(child, (dict, list)):
                    stack.append((child, depth + 1))
                else:
                    _check_scalar(child)
        elif isinstance(item, list):
            for child in item:
                if isinstance(child, (dict, list)):
                    stack.append((child, depth + 1))
                else:
                    _check_scalar(child)
        else:
            _check_scalar(item)


def _check_scalar(value: object) -> None:
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidMessage("NaN and infinity cannot be carried in JSON")
        return
    raise InvalidMessage(f"values of type {type(value).__name__} cannot be carried in JSON (binary, ext types)")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_id(value: object) -> TypeGuard[RequestId]:
    """Whether a value can be a JSON-RPC request id (a string or an integer)."""
    return isinstance(value, str) or _is_int(value)


def request(id: RequestId, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        body["params"] = params
    return body


def notification(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        body["params"] = params
    return body


def result(id: RequestId, value: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "result": value}


def error(id: RequestId | None, code: int, message: str, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": id, "error": err}
