"""Which HTTP stream a server's message belongs on. Pure, no I/O.

Stream 0 of a session is its standalone stream (the GET); every request opens a stream of its own
that ends with its response. A stdio server does not say which request a notification or a
request of its own relates to, so the front decides, as the transport asks (messages on a
request's stream SHOULD relate to it):

* a response goes on its request's stream, and ends it;
* ``notifications/progress`` goes on the stream of the request that carried its progress token;
* a notification tagged with a subscription (2026-07-28 ``subscriptions/listen``) goes on that
  request's stream;
* logging and server-to-client requests (sampling, elicitation, roots) go on the stream of the
  one request in progress when there is exactly one, else on the standalone stream;
* everything else (``list_changed``, resource updates) goes on the standalone stream.

`LegacyRoutes` serves one legacy session, whose JSON-RPC ids are its client's own. `SharedRoutes`
serves a pooled session of the 2026-07-28 era that carries the requests of many HTTP clients:
it gives each request an id (and progress token) of its own on the way in and restores the
client's on the way out, so two clients that both use id 1 never meet.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from mcp_troupe.transport.wire.jsonrpc import RequestId, is_id

STANDALONE: Final = 0
SUBSCRIPTION_META: Final = "io.modelcontextprotocol/subscriptionId"
RELATED_WHEN_ALONE: Final = frozenset({"notifications/message"})


@dataclass(frozen=True, slots=True)
class Routed:
    stream: int | None
    """None: nowhere to send it (counted as dropped by the caller)."""
    message: dict[str, Any]
    final: bool = False
    """The response that ends ``stream``."""


def _progress_token(message: dict[str, Any]) -> RequestId | None:
    """A request's progress token, when it is one (a string or an integer; anything else is ignored)."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    return token if is_id(token) else None


@dataclass
class LegacyRoutes:
    _streams: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    pending: dict[RequestId, int] = field(default_factory=dict)
    """client request id -> its stream"""
    _progress: dict[Any, int] = field(default_factory=dict)
    server_requests: dict[RequestId, int] = field(default_factory=dict)
    """server request id -> the stream it went on (where its cancellation goes too)"""

    def begin(self, message: dict[str, Any]) -> int:
        """A client request is sent: the stream its answer and related messages go on."""
        stream = next(self._streams)
        self.pending[message["id"]] = stream
        token = _progress_token(message)
        if token is not None:
            self._progress[token] = stream
        return stream

    def abandon(self, msg_id: RequestId) -> None:
        stream = self.pending.pop(msg_id, None)
        self._progress = {t: s for t, s in self._progress.items() if s != stream}

    def route(self, message: dict[str, Any]) -> Routed:
        method = message.get("method")
        msg_id = message.get("id")
        if method is None:
            stream = self.pending.pop(msg_id, None) if is_id(msg_id) else None
            if stream is not None:
                self._progress = {t: s for t, s in self._progress.items() if s != stream}
            return Routed(stream, message, final=stream is not None)
        if method == "notifications/progress":
            params = message.get("params")
            token = params.get("progressToken") if isinstance(params, dict) else None
            return Routed(self._progress.get(token, STANDALONE) if is_id(token) else STANDALONE, message)
        if method == "notifications/cancelled":
            params = message.get("params")
            rid = params.get("requestId") if isinstance(params, dict) else None
            stream = self.server_requests.pop(rid, STANDALONE) if is_id(rid) else STANDALONE
            return Routed(stream, message)
        if is_id(msg_id) or method in RELATED_WHEN_ALONE:
            stream = self._only_pending()
            if is_id(msg_id):
                self.server_requests[msg_id] = stream
            return Routed(stream, message)
        return Routed(STANDALONE, message)

    def answered(self, msg_id: RequestId) -> None:
        """The client answered a server request."""
        self.server_requests.pop(msg_id, None)

    def _only_pending(self) -> int:
        if len(self.pending) == 1:
            return next(iter(self.pending.values()))
        return STANDALONE


@dataclass
class _Call:
    client_id: RequestId
    stream: int
    progress_token: Any
    listen: bool


@dataclass
class SharedRoutes:
    """Routes of one pooled 2026-07-28 session: at most one ordinary request at a time (so a log message
    has one home), plus any number of ``subscriptions/listen`` streams."""

    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    calls: dict[int, _Call] = field(default_factory=dict)
    """wire id -> the client's request"""
    _progress: dict[str, int] = field(default_factory=dict)

    @property
    def busy(self) -> bool:
        return any(not c.listen for c in self.calls.values())

    def begin(self, message: dict[str, Any], stream: int) -> tuple[int, dict[str, Any]]:
        """The message to send for a client's request: the same, with an id (and progress token) of this session."""
        wire_id = next(self._ids)
        token = _progress_token(message)
        listen = message.get("method") == "subscriptions/listen"
        self.calls[wire_id] = _Call(message["id"], stream, token, listen)
        out = {**message, "id": wire_id}
        if token is not None:
            wire_token = f"t{wire_id}"
            self._progress[wire_token] = wire_id
            params = dict(message["params"])
            params["_meta"] = {**params["_meta"], "progressToken": wire_token}
            out["params"] = params
        return wire_id, out

    def cancel(self, wire_id: int) -> dict[str, Any] | None:
        """Forget ``wire_id``, whose client went away before its answer; the cancellation to send the server."""
        call = self.calls.pop(wire_id, None)
        if call is None:
            return None
        self._progress.pop(f"t{wire_id}", None)
        return {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": wire_id}}

    def route(self, message: dict[str, Any]) -> Routed:
        method = message.get("method")
        if method is None:
            msg_id = message.get("id")
            call = self.calls.pop(msg_id, None) if isinstance(msg_id, int) else None
            if call is None:
                return Routed(None, message)
            if call.progress_token is not None:
                self._progress.pop(f"t{msg_id}", None)
            return Routed(call.stream, {**message, "id": call.client_id}, final=True)
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        if method == "notifications/progress":
            token = params.get("progressToken")
            call_id = self._progress.get(token) if isinstance(token, str) else None
            call = self.calls.get(call_id) if call_id is not None else None
            if call is None:
                return Routed(None, message)
            return Routed(call.stream, {**message, "params": {**params, "progressToken": call.progress_token}})
        meta = params.get("_meta")
        subscription = meta.get(SUBSCRIPTION_META) if isinstance(meta, dict) else None
        if subscription is not None:
            call = self.calls.get(subscription) if isinstance(subscription, int) else None
            if call is None:
                return Routed(None, message)
            tagged = {**params, "_meta": {**meta, SUBSCRIPTION_META: call.client_id}}  # type: ignore[dict-item]
            return Routed(call.stream, {**message, "params": tagged})
        ordinary = [c for c in self.calls.values() if not c.listen]
        return Routed(ordinary[0].stream if len(ordinary) == 1 else None, message)
