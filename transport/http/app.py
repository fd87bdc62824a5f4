"""The Streamable HTTP endpoints, on Starlette: ``POST``, ``GET`` and ``DELETE`` at ``/mcp/<server>``.

Each handler checks what arrived (`rules`), then either hands a message to a troupe session
(`sessions`) and answers from that session's event log, or answers with a refusal. Both eras share
the endpoint: a request of 2026-07-28 (its version in ``_meta`` or the header, or
``server/discover``) is served statelessly by a pooled session; anything else is the legacy
transport with ``Mcp-Session-Id``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from mcp_troupe.transport.http import params, rules
from mcp_troupe.transport.http.replay import Event
from mcp_troupe.transport.http.routing import STANDALONE
from mcp_troupe.transport.http.rules import Refusal, Tokens
from mcp_troupe.transport.http.sessions import (
    FrontBusy,
    LegacySession,
    OpenRefused,
    PooledSession,
    Sessions,
    Stream,
)
from mcp_troupe.transport.wire import jsonrpc

log = logging.getLogger("troupe.http")

SSE_RETRY_MS = 1000
"""The ``retry`` field of each stream's first event: how soon a dropped client should reconnect."""
SESSION_HEADER = "mcp-session-id"
LIST_AGAIN_AFTER = 30.0
"""Seconds before the front asks a server for tools/list again on meeting a tool it does not know."""
REMOVED_IN_MODERN = frozenset(
    {"initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"}
)

_OPEN_STATUS = {
    "unknown_server": 404,
    "rate_limited": 429,
    "too_many_sessions": 503,
    "server_busy": 503,
    "shutting_down": 503,
    "spawn_failed": 502,
    "not_registered": 503,
    "timeout": 504,
}


@dataclass(frozen=True)
class AppOptions:
    prefix: str = "/mcp"
    default_server: str | None = None
    allowed_origins: tuple[str, ...] = ()
    loopback: bool = True
    tokens: Tokens = field(default_factory=Tokens)
    max_body_bytes: int = 4 * 1024 * 1024
    realm: str = "troupe"
    json_within: float = 0.05
    """Seconds a legacy POST waits for its answer before starting an SSE stream: an answer that comes
    first, within this time, is sent as plain JSON (one write, no stream); 0: always SSE."""
    sse_poll_after: float = 0.0
    """Seconds a POST's SSE stream stays open without its answer before the front closes it for the client
    to resume with ``Last-Event-ID`` (SSE polling); the resumed stream stays open until the answer. 0: off."""


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


def _refused(sessions: Sessions, refusal: Refusal) -> Response:
    sessions.counts[f"refused:{refusal.reason}"] += 1
    return _json(refusal.body(), refusal.status, dict(refusal.headers))


def _open_refusal(exc: OpenRefused, msg_id: Any) -> Refusal:
    headers = {}
    retry_ms = exc.data.get("retry_after_ms")
    if isinstance(retry_ms, int):
        headers["Retry-After"] = str(max(1, -(-retry_ms // 1000)))
    elif exc.code in ("too_many_sessions", "server_busy", "shutting_down"):
        headers["Retry-After"] = "1"
    status = _OPEN_STATUS.get(exc.code, 502)
    code = jsonrpc.METHOD_NOT_FOUND if exc.code == "unknown_server" else jsonrpc.CONNECTION_CLOSED
    return rules.refuse(
        status,
        f"open_{exc.code}",
        exc.message,
        code=code,
        id=msg_id if jsonrpc.is_id(msg_id) else None,
        data={"code": exc.code, **exc.data},
        headers=headers,
    )


def _sse_line(event_id: str, data: str, retry: bool = False) -> bytes:
    head = f"id: {event_id}\n" + (f"retry: {SSE_RETRY_MS}\n" if retry else "")
    return (head + f"data: {data}\n\n").encode()


async def _events(
    session: Stream, stream: int, cursor: int, counts: Any, *, primed: bool = False, poll_after: float = 0.0
) -> AsyncIterator[bytes]:
    """A stream's events after ``cursor`` from the session's log, then live ones, until its final event.

    With ``poll_after``, the connection is closed after that many seconds without the final event (SSE
    polling, SEP-1699): the client reconnects with ``Last-Event-ID`` and the stream goes on from the log.
    """
    if primed:  # an id to resume from before any event of the stream: resuming after it replays them all
        yield _sse_line(f"{stream}-{cursor}", "", retry=True)
    deadline = asyncio.get_running_loop().time() + poll_after if poll_after > 0 else None
    while True:
        changed = session.change()  # taken before the log is read: a push while we yield still wakes us
        replay = session.log.after(stream, cursor)
        if replay.gap:
            counts["replay_gap"] += 1
            log.warning(
                "session %s: stream %d resumed after events that fell out of the replay buffer", session.sid, stream
            )
        for event in replay.events:
            cursor = event.seq
            if event.data:
                yield _sse_line(event.id, event.data)
        final = session.finished.get(stream)
        if final is not None and (cursor >= final or session.log.dropped_through(stream) >= final):
            session.log.forget(stream)
            session.finished.pop(stream, None)
            return
        if session.closed is not None or (final is None and not session.live(stream)):
            return  # a stream that is over, or never was: nothing more will come on it
        if deadline is None:
            await changed.wait()
            continue
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            counts["polled"] += 1
            return
        try:
            await asyncio.wait_for(changed.wait(), remaining)
        except TimeoutError:
            pass


def build(sessions: Sessions, options: AppOptions) -> Starlette:
    front = _Front(sessions, options)
    prefix = options.prefix.rstrip("/")
    routes = [Route(prefix + "/{server}", front.endpoint, methods=["GET", "POST", "DELETE"])]
    if options.default_server:
        routes.append(Route(prefix, front.endpoint, methods=["GET", "POST", "DELETE"]))

    async def no_route(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        where = f"servers are at {prefix}/<server>" + (f" and {prefix}" if options.default_server else "")
        reason = "no_route" if status == 404 else "bad_method"
        message = (
            f"nothing is served at {request.url.path[:100]!r}: {where}"
            if status == 404
            else ("use POST, GET or DELETE")
        )
        return _refused(sessions, rules.refuse(status, reason, message))

    return Starlette(routes=routes, exception_handlers={404: no_route, 405: no_route})


class _Front:
    def __init__(self, sessions: Sessions, options: AppOptions) -> None:
        self.sessions = sessions
        self.options = options
        self.schemas = params.ToolSchemas()
        self._listed: dict[str, float] = {}
        """server -> when the front last asked it for tools/list itself (at most once per LIST_AGAIN_AFTER)"""

    async def endpoint(self, request: Request) -> Response:
        server = request.path_params.get("server") or self.options.default_server or ""
        refusal = rules.check_origin(
            request.headers.get("origin"),
            request.headers.get("host"),
            self.options.allowed_origins,
            self.options.loopback,
        )
        if refusal is not None:
            return _refused(self.sessions, refusal)
        token_name = None
        if self.options.tokens.required:
            auth = request.headers.get("authorization")
            token_name = self.options.tokens.name_of(auth)
            if token_name is None:
                return _refused(self.sessions, rules.unauthorized(self.options.realm, auth is not None))
        self.sessions.counts[f"http:{request.method}"] += 1
        try:
            if request.method == "POST":
                return await self._post(request, server, token_name)
            if request.method == "GET":
                return await self._get(request, token_name)
            return await self._delete(request, token_name)
        except FrontBusy as exc:
            return _refused(self.sessions, rules.refuse(503, "front_busy", str(exc), headers={"Retry-After": "1"}))

    def _via(self, request: Request, token_name: str | None) -> str:
        client = request.client
        where = f"{client.host}:{client.port}" if client else "?"
        return f"http {where}" + (f" token {token_name}" if token_name else "")

    async def _session(self, request: Request, token_name: str | None) -> LegacySession | Refusal:
        header = request.headers.get(SESSION_HEADER)
        if header is None:
            return rules.refuse(400, "no_session", "Mcp-Session-Id is required: send initialize first to get one")
        sid, _, nonce = header.partition(".") if len(header) <= 128 else ("", "", "")
        session = self.sessions.legacy.get(sid)
        if session is None and sid and nonce:
            try:  # not this front's: the daemon may have restarted, and this front with it
                session = await self.sessions.reattach(sid, nonce, token_name)
            except OpenRefused as exc:
                if exc.data.get("reason") == "restoring":
                    message = "the session is being restored after a restart of troupe; retry shortly"
                    return rules.refuse(503, "restoring", message, headers={"Retry-After": "1"})
        if session is None or session.token_name != token_name or not hmac.compare_digest(session.nonce, nonce):
            return rules.refuse(404, "unknown_session", "session not found (closed or expired): initialize a new one")
        refusal = rules.check_legacy_version(request.headers.get("mcp-protocol-version"))
        return refusal if refusal is not None else session

    # -- POST ----------------------------------------------------------------------------

    async def _post(self, request: Request, server: str, token_name: str | None) -> Response:
        refusal = rules.check_post_headers(request.headers.get("content-type"), request.headers.get("accept"))
        if refusal is not None:
            return _refused(self.sessions, refusal)
        limit = self.options.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _refused(self.sessions, rules.too_large(limit))
        body = await _read_body(request, limit)
        parsed = rules.parse_body(body, limit) if body is not None else rules.too_large(limit)
        if isinstance(parsed, Refusal):
            return _refused(self.sessions, parsed)
        header_version = request.headers.get("mcp-protocol-version")
        if SESSION_HEADER not in request.headers and rules.is_modern(parsed, header_version):
            return await self._modern(request, server, parsed, token_name)
        if SESSION_HEADER not in request.headers:
            if parsed.get("method") != "initialize":
                return _refused(
                    self.sessions,
                    rules.refuse(400, "no_session", "Mcp-Session-Id is required: send initialize first to get one"),
                )
            return await self._initialize(request, server, parsed, token_name)
        found = await self._session(request, token_name)
        if isinstance(found, Refusal):
            return _refused(self.sessions, found)
        return await self._legacy(found, parsed, request)

    async def _initialize(
        self, request: Request, server: str, message: dict[str, Any], token_name: str | None
    ) -> Response:
        try:
            session = await self.sessions.open_legacy(server, self._via(request, token_name), token_name)
        except OpenRefused as exc:
            return _refused(self.sessions, _open_refusal(exc, message.get("id")))
        response = await self._legacy(session, message, request)
        response.headers["Mcp-Session-Id"] = session.http_id
        return response

    async def _legacy(self, session: LegacySession, message: dict[str, Any], request: Request) -> Response:
        msg_id = message.get("id")
        if message.get("method") is None:
            if jsonrpc.is_id(msg_id):
                session.routes.answered(msg_id)
            self.sessions.send("mcp", sid=session.sid, msg=message)
            return Response(status_code=202)
        if not jsonrpc.is_id(msg_id):
            self.sessions.send("mcp", sid=session.sid, msg=message)
            return Response(status_code=202)
        if msg_id in session.routes.pending:
            return _refused(
                self.sessions,
                rules.refuse(
                    400, "duplicate_id", f"request id {msg_id!r} is already in progress in this session", id=msg_id
                ),
            )
        stream = session.routes.begin(message)
        try:
            self.sessions.send("mcp", sid=session.sid, msg=message)
        except FrontBusy:
            session.routes.abandon(msg_id)
            raise
        first, _gone = await _first_event(session, stream, request, self.options.json_within)
        if first is not None and session.finished.get(stream) == first.seq:
            session.log.forget(stream)
            session.finished.pop(stream, None)
            return Response(first.data, media_type="application/json")
        return StreamingResponse(
            _events(session, stream, 0, self.sessions.counts, primed=True, poll_after=self.options.sse_poll_after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    # -- GET and DELETE ------------------------------------------------------------------

    async def _get(self, request: Request, token_name: str | None) -> Response:
        _, sse_ok = rules.accepts(request.headers.get("accept"))
        if not sse_ok:
            return _refused(
                self.sessions, rules.refuse(406, "bad_accept", "Accept must list text/event-stream for a GET")
            )
        found = await self._session(request, token_name)
        if isinstance(found, Refusal):
            return _refused(self.sessions, found)
        last = request.headers.get("last-event-id")
        if last is not None:
            resumed = rules.check_event_id(last)
            if resumed is None:
                return _refused(
                    self.sessions, rules.refuse(400, "bad_event_id", "Last-Event-ID is not one this front sent")
                )
            stream, seq = resumed
            if stream != STANDALONE:
                if not found.live(stream) and stream not in found.finished:
                    return _refused(
                        self.sessions, rules.refuse(404, "unknown_stream", "that stream is over, or never was")
                    )
                self.sessions.counts["resumed"] += 1
                return StreamingResponse(
                    _events(found, stream, seq, self.sessions.counts),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache"},
                )
            found.standalone_cursor = seq  # what was written to a connection that died is sent again
        if found.standalone_open:
            return _refused(
                self.sessions, rules.refuse(409, "stream_open", "this session's GET stream is already open")
            )
        return StreamingResponse(
            self._standalone(found), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    async def _standalone(self, session: LegacySession) -> AsyncIterator[bytes]:
        session.standalone_open = True
        try:
            yield _sse_line(f"{STANDALONE}-{session.standalone_cursor}", "", retry=True)
            while session.closed is None:
                changed = session.change()
                replay = session.log.after(STANDALONE, session.standalone_cursor)
                for item in replay.events:
                    session.standalone_cursor = item.seq
                    if item.data:
                        yield _sse_line(item.id, item.data)
                await changed.wait()
        finally:
            session.standalone_open = False

    async def _delete(self, request: Request, token_name: str | None) -> Response:
        found = await self._session(request, token_name)
        if isinstance(found, Refusal):
            return _refused(self.sessions, found)
        self.sessions.end(found)
        return Response(status_code=200)

    # -- 2026-07-28 ----------------------------------------------------------------------

    async def _modern(self, request: Request, server: str, message: dict[str, Any], token_name: str | None) -> Response:
        msg_id = message.get("id")
        if message.get("method") is None or not jsonrpc.is_id(msg_id):
            return Response(status_code=202)
        headers = {k.lower(): v for k, v in request.headers.items()}
        refusal = rules.check_modern(message, headers)
        if refusal is None and message["method"] in REMOVED_IN_MODERN:
            refusal = rules.refuse(
                404,
                "removed_method",
                f"{message['method']} is not part of MCP 2026-07-28",
                code=jsonrpc.METHOD_NOT_FOUND,
                id=msg_id,
            )
        if refusal is None and message["method"] == "tools/call":
            refusal = await self._check_params(request, server, message, token_name)
        if refusal is not None:
            return _refused(self.sessions, refusal)
        affinity = token_name
        try:
            session = await self.sessions.pooled(server, self._via(request, token_name), affinity)
        except OpenRefused as exc:
            return _refused(self.sessions, _open_refusal(exc, msg_id))
        stream = session.new_stream()
        wire_id, out = session.routes.begin(message, stream)
        _send_call(self.sessions, session, wire_id, out)
        response = await _modern_answer(self.sessions, session, stream, wire_id, request)
        body = getattr(response, "body", None)  # a StreamingResponse has none
        if message["method"] == "tools/list" and response.status_code == 200 and isinstance(body, bytes):
            self._learn(server, body)
        return response

    def _learn(self, server: str, body: bytes) -> None:
        try:
            answer = json.loads(body)
        except ValueError:
            return
        if isinstance(answer, dict):
            self.schemas.learn(server, answer.get("result"))

    async def _check_params(
        self, request: Request, server: str, message: dict[str, Any], token_name: str | None
    ) -> Refusal | None:
        """The ``Mcp-Param-*`` check, with the tool's schema from a ``tools/list`` the front asks for itself
        when it has not seen the tool yet."""
        call = message.get("params") or {}
        tool = call.get("name")
        if not isinstance(tool, str):
            return None
        known, schema = self.schemas.schema(server, tool)
        now = asyncio.get_running_loop().time()
        if not known and now - self._listed.get(server, -LIST_AGAIN_AFTER) >= LIST_AGAIN_AFTER:
            if len(self._listed) >= 1024:  # names come from URLs: keep the table small
                self._listed.clear()
            self._listed[server] = now
            meta = {k: v for k, v in call.get("_meta", {}).items() if k.startswith("io.modelcontextprotocol/")}
            ask = {"jsonrpc": "2.0", "id": "troupe-tools-list", "method": "tools/list", "params": {"_meta": meta}}
            try:
                session = await self.sessions.pooled(server, self._via(request, token_name), token_name)
            except OpenRefused:
                return None
            stream = session.new_stream()
            wire_id, out = session.routes.begin(ask, stream)
            _send_call(self.sessions, session, wire_id, out)
            answer = await _modern_answer(self.sessions, session, stream, wire_id, request)
            body = getattr(answer, "body", None)
            if isinstance(body, bytes):
                self._learn(server, body)
            known, schema = self.schemas.schema(server, tool)
        duplicated = frozenset(
            name.lower()
            for name, count in Counter(k.decode("latin-1").lower() for k, _ in request.headers.raw).items()
            if count > 1
        )
        headers = {k.lower(): v for k, v in request.headers.items()}
        problem = params.mismatch(schema, call.get("arguments"), headers, duplicated) if known else None
        if problem is None:
            return None
        return rules.refuse(400, "header_mismatch", problem, code=rules.HEADER_MISMATCH, id=message.get("id"))


async def _first_event(
    session: Stream, stream: int, request: Request, within: float | None
) -> tuple[Event | None, bool]:
    """The stream's first event, waited for up to ``within`` seconds (None: no limit), and whether the
    client went away meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = None if within is None else loop.time() + within
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        while True:
            events = session.log.after(stream, 0).events
            if events:
                return events[0], False
            if session.closed is not None or gone.done():
                return None, gone.done()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return None, False
            changed = asyncio.ensure_future(session.change().wait())
            await asyncio.wait([changed, gone], timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
    finally:
        gone.cancel()


async def _modern_answer(
    sessions: Sessions, session: PooledSession, stream: int, wire_id: int, request: Request
) -> Response:
    """A JSON response with its status when the answer comes first; an SSE stream once a notification does.
    A client that goes away first cancels its request (the 2026-07-28 way: closing the response stream)."""
    first, gone = await _first_event(session, stream, request, None)
    if gone:
        _cancel(sessions, session, wire_id)
        return Response(status_code=499)
    if first is None:
        client_id = session.routes.calls.pop(wire_id).client_id if wire_id in session.routes.calls else None
        error = jsonrpc.error(client_id, jsonrpc.CONNECTION_CLOSED, f"the session ended ({session.closed})")
        return _json(error, 502)
    return _first_answer(sessions, session, stream, wire_id, first)


def _first_answer(sessions: Sessions, session: PooledSession, stream: int, wire_id: int, first: Event) -> Response:
    if session.finished.get(stream) != first.seq:
        return StreamingResponse(
            _modern_stream(sessions, session, stream, wire_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    session.log.forget(stream)
    session.finished.pop(stream, None)
    body = json.loads(first.data)
    error = body.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    status = rules.ERROR_STATUS.get(code, 200) if isinstance(code, int) else 200
    headers = {}
    if status == 429 and isinstance(error, dict) and isinstance(error.get("data"), dict):
        retry_ms = error["data"].get("retry_after_ms")
        headers["Retry-After"] = str(max(1, -(-int(retry_ms) // 1000))) if isinstance(retry_ms, int) else "1"
    return Response(first.data, status_code=status, media_type="application/json", headers=headers)


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (the body is read by then: only ``http.disconnect`` is left)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _send_call(sessions: Sessions, session: PooledSession, wire_id: int, message: dict[str, Any]) -> None:
    try:
        sessions.send("mcp", sid=session.sid, msg=message)
    except FrontBusy:
        session.routes.cancel(wire_id)  # never sent: the session is free again
        sessions.release(session)
        raise


def _cancel(sessions: Sessions, session: PooledSession, wire_id: int) -> None:
    """The client left before its answer: the server is told, and the pooled session is free at once (a late
    answer has an id no one waits for, and is dropped)."""
    cancel = session.routes.cancel(wire_id)
    if cancel is not None:
        sessions.counts["cancelled"] += 1
        sessions.release(session)
        try:
            sessions.send("mcp", sid=session.sid, msg=cancel)
        except FrontBusy:
            log.warning("session %s: the server could not be told of a cancelled request", session.sid)


async def _modern_stream(sessions: Sessions, session: PooledSession, stream: int, wire_id: int) -> AsyncIterator[bytes]:
    done = False
    try:
        async for chunk in _events(session, stream, 0, sessions.counts):
            yield chunk
        done = True
    finally:
        if not done:
            _cancel(sessions, session, wire_id)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it passes ``limit`` bytes (the rest is not read)."""
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > limit:
            return None
    return bytes(chunks)
