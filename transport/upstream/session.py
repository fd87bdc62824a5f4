"""`UpstreamSession`: one troupe session's conversation with a remote MCP server over Streamable HTTP.

It stands where a `ServerProcess` stands for a stdio server, with the same face to the adapter
(``send``, ``stop``, ``set_reading``, ``pid``, events reported through ``report``), so the adapter
and the daemon treat both alike: an upstream that expires the session (404) is an exit, and the
session's ``on_exit`` policy restarts and replays it as it would a crashed process.

Its state belongs to the `Upstream` loop (one asyncio thread per adapter, one pooled httpx client);
the adapter's thread only hands it work with ``call_soon_threadsafe``. Messages go out in the order
they came: a notification or a client's response is sent before anything after it, a request is sent
and then read on its own task, so a long call does not hold up the rest.

Legacy era: ``initialize`` opens an upstream session (``Mcp-Session-Id``), every later POST carries
it and the negotiated version, ``notifications/initialized`` opens the GET stream for unsolicited
messages, ``stop`` sends DELETE. 2026-07-28: each request is a stateless POST with its mirrored
headers; ``notifications/cancelled`` closes that request's stream, which is how the era cancels. A
response stream that drops before its answer is resumed with GET and ``Last-Event-ID``; the answer
is delivered once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import httpx

from mcp_troupe.transport.http.params import ToolSchemas
from mcp_troupe.transport.upstream import rules
from mcp_troupe.transport.upstream.credentials import UpstreamCredentials
from mcp_troupe.transport.upstream.rules import Fault
from mcp_troupe.transport.upstream.sse import SseError, SseParser
from mcp_troupe.transport.wire import jsonrpc

log = logging.getLogger("troupe.adapter")

FaultEvent = tuple[Literal["fault"], str, str, int | None]

RESUME_ATTEMPTS: Final = 5
"""Resumptions of one response stream in a row that may fail before its request is failed."""
RETRY_DEFAULT_MS: Final = 1000
RETRY_MAX_MS: Final = 30_000
DELETE_TIMEOUT: Final = 5.0
LOOKUPS_MAX: Final = 10_000
"""Tool names looked up with a hidden ``tools/list`` at most (2026-07-28 ``Mcp-Param`` headers)."""


@dataclass
class Shared:
    """What the sessions of one adapter share, all owned by its loop."""

    server: str
    client: httpx.AsyncClient
    credentials: UpstreamCredentials
    report: Callable[[Any], object]
    timeout: float
    max_bytes: int
    schemas: ToolSchemas = field(default_factory=ToolSchemas)
    looked_up: set[str] = field(default_factory=set)


class _Expired(Exception):
    """The upstream no longer knows the session (404)."""


@dataclass
class _Stream:
    """Where a request's response stream got to: what a resumption starts from."""

    last_id: str | None = None
    retry_ms: int | None = None


class SessionCore:
    """The session on the loop; see the module docstring. Only the loop calls it."""

    def __init__(self, sid: str, url: str, shared: Shared) -> None:
        self.sid, self.url, self._shared = sid, url, shared
        self._session_id: str | None = None
        self._version: str | None = None
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._calls: dict[Any, asyncio.Task[None]] = {}
        self._modern_calls: set[Any] = set()
        self._listener: asyncio.Task[None] | None = None
        self._reading = asyncio.Event()
        self._reading.set()
        self._ended = False
        self._worker = asyncio.get_running_loop().create_task(self._work())

    # the adapter's requests

    def send(self, message: dict[str, Any]) -> None:
        if not self._ended:
            self._inbox.put_nowait(message)

    def set_reading(self, reading: bool) -> None:
        if reading:
            self._reading.set()
        else:
            self._reading.clear()

    def stop(self) -> None:
        if not self._ended:
            asyncio.get_running_loop().create_task(self._close())

    # the order of messages

    async def _work(self) -> None:
        try:
            while True:
                message = await self._inbox.get()
                await self._dispatch(message)
        except _Expired as exc:
            self._exit(None, f"upstream ended the session: {exc}")

    async def _dispatch(self, message: dict[str, Any]) -> None:
        method, msg_id = message.get("method"), message.get("id")
        if method == "notifications/cancelled" and self._cancel_modern(message):
            return
        if isinstance(method, str) and jsonrpc.is_id(msg_id):
            if method == "initialize":
                await self._call(message)  # what follows needs its session id
                return
            if method == "tools/call" and rules.is_modern(message):
                await self._look_up_tool(message)
            if rules.is_modern(message):
                self._modern_calls.add(msg_id)
            self._calls[msg_id] = asyncio.get_running_loop().create_task(self._call(message))
            return
        await self._post_one_way(message)
        if method == "notifications/initialized" and self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    def _cancel_modern(self, message: dict[str, Any]) -> bool:
        """A 2026-07-28 cancellation closes the request's stream instead of being posted."""
        params = message.get("params")
        request_id = params.get("requestId") if isinstance(params, dict) else None
        if request_id not in self._modern_calls:
            return False
        task = self._calls.get(request_id)
        if task is not None:
            task.cancel()
        return True

    # requests

    async def _call(self, message: dict[str, Any]) -> None:
        msg_id = message["id"]
        try:
            answered = await self._post_request(message)
            if not answered:
                self._fail(msg_id, Fault("stream_lost", "closed the response stream before answering, not resumably"))
        except asyncio.CancelledError:
            pass
        except _Expired as exc:
            self._exit(None, f"upstream ended the session: {exc}")
        except (httpx.HTTPError, TimeoutError, StatusFault, OSError, ValueError) as exc:
            self._fail(msg_id, describe(exc, self._shared.timeout))
        finally:
            self._calls.pop(msg_id, None)
            self._modern_calls.discard(msg_id)

    async def _post_request(self, message: dict[str, Any]) -> bool:
        """True once the answer is delivered; False when the stream ended without it and cannot resume."""
        shared, msg_id = self._shared, message["id"]
        known, schema = shared.schemas.schema(shared.server, _tool_name(message))
        headers = rules.request_headers(
            message,
            session_id=self._session_id,
            version=self._version,
            schema=schema if known else None,
            credentials=shared.credentials.headers(),
        )
        stream = _Stream()
        request = shared.client.build_request("POST", self.url, json=message, headers=headers)
        async with asyncio.timeout(shared.timeout) as deadline:
            response = await shared.client.send(request, stream=True)
            try:
                self._check_status(response, message)
                kind = rules.content_type(response.headers.get("content-type"))
                if kind == "application/json":
                    body = await self._read_body(response)
                    return self._deliver_body(body, response.status_code, message)
                deadline.reschedule(None)  # a stream may take as long as the call does
                if kind != "text/event-stream":
                    raise _not_mcp(response, kind)
                if await self._read_events(response, msg_id, stream, message.get("method")):
                    return True
            finally:
                await response.aclose()
        return await self._resume(message, stream)

    def _check_status(self, response: httpx.Response, message: dict[str, Any]) -> None:
        status = response.status_code
        if message.get("method") == "initialize" and status < 300:
            self._session_id = response.headers.get("mcp-session-id") or None
        if status == 404 and self._session_id is not None and not rules.is_modern(message):
            raise _Expired(f"HTTP 404 for session {self._session_id[:16]}")
        if status in (401, 403):
            self._shared.credentials.rejected(status)
        if status == 202:
            raise StatusFault(Fault("protocol", "accepted the request (HTTP 202) but will send no answer", 202))
        kind = rules.content_type(response.headers.get("content-type"))
        if status >= 300 and kind != "application/json":
            raise StatusFault(rules.status_fault(status, response.reason_phrase))

    def _deliver_body(self, body: bytes, status: int, message: dict[str, Any]) -> bool:
        parsed = rules.parse_message(body, status)
        if isinstance(parsed, Fault):
            raise StatusFault(rules.status_fault(status) if status >= 300 else parsed)
        if status >= 300 and "error" in parsed and parsed.get("id") is None:
            parsed["id"] = message["id"]  # a server may refuse before reading the id; the answer is still ours
        if not rules.answers(parsed, message["id"]):
            if status >= 300:
                raise StatusFault(rules.status_fault(status))
            self._deliver(parsed, None)
            return False
        self._deliver(parsed, message.get("method"))
        return True

    async def _read_events(self, response: httpx.Response, msg_id: Any, stream: _Stream, method: Any) -> bool:
        """Forward a response stream's messages; True when the answer to ``msg_id`` was among them."""
        parser = SseParser(self._shared.max_bytes)
        try:
            async for data in self._events(response, parser):
                message = rules.parse_message(data, response.status_code)
                if isinstance(message, Fault):
                    log.warning("session %s: skipped an upstream event that is not JSON-RPC", self.sid)
                    continue
                if rules.answers(message, msg_id):
                    self._deliver(message, method)
                    return True
                self._deliver(message, None)
        except (httpx.TransportError, SseError) as exc:
            if isinstance(exc, SseError):
                raise StatusFault(rules.too_large(str(exc), response.status_code, self._shared.max_bytes)) from None
            log.info("session %s: upstream response stream broke (%s)", self.sid, type(exc).__name__)
        finally:
            stream.last_id = parser.last_id or stream.last_id
            stream.retry_ms = parser.retry if parser.retry is not None else stream.retry_ms
        return False

    async def _resume(self, message: dict[str, Any], stream: _Stream) -> bool:
        """Resume a response stream with ``Last-Event-ID`` until its answer arrives or the attempts run out."""
        failures = 0
        while stream.last_id is not None and failures < RESUME_ATTEMPTS:
            await asyncio.sleep(min(stream.retry_ms or RETRY_DEFAULT_MS, RETRY_MAX_MS) / 1000)
            before = stream.last_id
            try:
                async with self._get(stream.last_id, timeout=self._shared.timeout) as response:
                    if response.status_code == 404 and self._session_id is not None:
                        raise _Expired(f"HTTP 404 resuming session {self._session_id[:16]}")
                    if response.status_code >= 300:
                        raise StatusFault(rules.status_fault(response.status_code, response.reason_phrase))
                    log.info("session %s: resumed a response stream after event %s", self.sid, before)
                    if await self._read_events(response, message["id"], stream, message.get("method")):
                        return True
            except httpx.TransportError as exc:
                log.info("session %s: resuming the response stream failed (%s)", self.sid, type(exc).__name__)
            failures = 0 if stream.last_id != before else failures + 1
        return False

    async def _look_up_tool(self, message: dict[str, Any]) -> None:
        """Learn a tool's schema before its first 2026-07-28 call, so its ``Mcp-Param`` headers can be sent."""
        shared, tool = self._shared, _tool_name(message)
        if not tool or shared.schemas.schema(shared.server, tool)[0] or tool in shared.looked_up:
            return
        if len(shared.looked_up) < LOOKUPS_MAX:
            shared.looked_up.add(tool)
        meta = message["params"].get("_meta", {})
        probe = jsonrpc.request(f"troupe-tools-{tool}", "tools/list", {"_meta": meta})
        headers = rules.request_headers(probe, session_id=None, version=None, credentials=shared.credentials.headers())
        try:
            async with asyncio.timeout(shared.timeout):
                response = await shared.client.post(self.url, json=probe, headers=headers)
                if rules.content_type(response.headers.get("content-type")) == "application/json":
                    found = rules.parse_message(response.content[: shared.max_bytes], response.status_code)
                else:
                    parser = SseParser(shared.max_bytes)
                    found = next(
                        (
                            m
                            for e in parser.feed(response.content)
                            if isinstance(m := rules.parse_message(e.data, 200), dict)
                        ),
                        Fault("not_mcp", "no answer"),
                    )
        except (httpx.HTTPError, TimeoutError, SseError) as exc:
            log.info("session %s: could not list the upstream's tools (%s)", self.sid, type(exc).__name__)
            return
        if isinstance(found, dict):
            shared.schemas.learn(shared.server, found.get("result"))

    # notifications and the client's responses

    async def _post_one_way(self, message: dict[str, Any]) -> None:
        shared = self._shared
        headers = rules.request_headers(
            message, session_id=self._session_id, version=self._version, credentials=shared.credentials.headers()
        )
        try:
            async with asyncio.timeout(shared.timeout):
                response = await shared.client.post(self.url, json=message, headers=headers)
        except (httpx.HTTPError, TimeoutError, ssl.SSLError) as exc:
            fault = describe(exc, shared.timeout)
            self._count(fault)
            log.warning("session %s: could not send a %s to the upstream: %s", self.sid, _what(message), fault.message)
            return
        if response.status_code == 404 and self._session_id is not None:
            raise _Expired(f"HTTP 404 for session {self._session_id[:16]}")
        if response.status_code >= 300:
            fault = rules.status_fault(response.status_code, response.reason_phrase)
            self._count(fault)
            log.warning("session %s: the upstream refused a %s: %s", self.sid, _what(message), fault.message)

    # the standalone stream

    async def _listen(self) -> None:
        """The GET stream of unsolicited server messages, reconnected with ``Last-Event-ID`` while the session lives."""
        stream, delay = _Stream(), RETRY_DEFAULT_MS
        while not self._ended:
            try:
                async with self._get(stream.last_id, timeout=None) as response:
                    if response.status_code == 405:
                        log.debug("session %s: the upstream has no standalone stream", self.sid)
                        return
                    if response.status_code == 404:
                        raise _Expired(f"HTTP 404 for the stream of session {(self._session_id or '')[:16]}")
                    if response.status_code < 300:
                        delay = RETRY_DEFAULT_MS
                        await self._read_events(response, object(), stream, None)
                    else:
                        log.warning("session %s: the upstream's GET stream answered %d", self.sid, response.status_code)
                        delay = min(delay * 2, RETRY_MAX_MS)
            except _Expired as exc:
                self._exit(None, f"upstream ended the session: {exc}")
                return
            except (httpx.HTTPError, StatusFault, ssl.SSLError) as exc:
                log.info("session %s: the upstream's GET stream failed (%s)", self.sid, type(exc).__name__)
                delay = min(delay * 2, RETRY_MAX_MS)
            await asyncio.sleep(min(stream.retry_ms or delay, RETRY_MAX_MS) / 1000)

    def _get(self, last_event_id: str | None, *, timeout: float | None) -> Any:
        headers = rules.stream_headers(
            session_id=self._session_id,
            version=self._version,
            last_event_id=last_event_id,
            credentials=self._shared.credentials.headers(),
        )
        limits = httpx.Timeout(self._shared.timeout, read=timeout)
        return self._shared.client.stream("GET", self.url, headers=headers, timeout=limits)

    # reading

    async def _events(self, response: httpx.Response, parser: SseParser) -> AsyncIterator[str]:
        async for chunk in response.aiter_bytes():
            await self._reading.wait()
            for event in parser.feed(chunk):
                if event.data and event.event == "message":
                    yield event.data

    async def _read_body(self, response: httpx.Response) -> bytes:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > self._shared.max_bytes:
                limit = self._shared.max_bytes
                raise StatusFault(rules.too_large(f"sent a body over {limit} bytes", response.status_code, limit))
        return bytes(body)

    # out

    def _deliver(self, message: dict[str, Any], method: Any) -> None:
        if self._ended:
            return
        result = message.get("result")
        if method == "initialize" and isinstance(result, dict) and isinstance(result.get("protocolVersion"), str):
            self._version = result["protocolVersion"]
        elif method == "tools/list":
            self._shared.schemas.learn(self._shared.server, result)
        self._shared.report(("mcp", self.sid, message, False))

    def _fail(self, msg_id: Any, fault: Fault) -> None:
        if self._ended:
            return
        self._count(fault)
        log.warning("session %s: request %r failed upstream: %s", self.sid, msg_id, fault.message)
        self._shared.report(("mcp", self.sid, fault.answer(msg_id, self._shared.server, self.url), True))

    def _count(self, fault: Fault) -> None:
        event: FaultEvent = ("fault", self.sid, fault.kind, fault.status)
        self._shared.report(event)

    def _exit(self, code: int | None, reason: str) -> None:
        if self._ended:
            return
        self._ended = True
        for task in [*self._calls.values(), self._listener, self._worker]:
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self._shared.report(("exited", self.sid, code, reason))

    async def _close(self) -> None:
        session_id = self._session_id
        reason = "upstream session closed"
        if session_id is not None:
            headers = rules.stream_headers(
                session_id=session_id,
                version=self._version,
                last_event_id=None,
                credentials=self._shared.credentials.headers(),
            )
            try:
                response = await self._shared.client.delete(self.url, headers=headers, timeout=DELETE_TIMEOUT)
                reason += f" (DELETE answered {response.status_code})"
            except httpx.HTTPError as exc:
                reason += f" (DELETE failed: {type(exc).__name__})"
        self._exit(0, reason)


class StatusFault(Exception):
    def __init__(self, fault: Fault) -> None:
        super().__init__(fault.message)
        self.fault = fault


def describe(exc: BaseException, timeout: float) -> Fault:
    """The fault an exception of the exchange stands for."""
    if isinstance(exc, StatusFault):
        return exc.fault
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return Fault("timeout", f"did not answer within {timeout:g} s (the server's timeout in troupe's config)")
    cause = _root_cause(exc)
    if isinstance(cause, ssl.SSLError):
        return Fault("tls", f"TLS failed: {cause.reason or cause}; check the URL's scheme and the server's certificate")
    if isinstance(exc, httpx.ConnectError):
        detail = str(cause) or type(cause).__name__
        return Fault("connect", f"cannot be reached ({detail}); is the server running at that address?")
    if isinstance(exc, httpx.HTTPError):
        return Fault("protocol", f"broke the HTTP exchange ({type(exc).__name__}: {str(exc)[:120]})")
    return Fault("protocol", f"failed the exchange ({type(exc).__name__}: {str(exc)[:120]})")


def _root_cause(exc: BaseException) -> BaseException:
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
        if isinstance(seen, ssl.SSLError):
            return seen
    return seen


def _not_mcp(response: httpx.Response, kind: str) -> StatusFault:
    return StatusFault(
        Fault(
            "not_mcp", f"answered with {kind or 'no content type'!r}, not JSON or an event stream", response.status_code
        )
    )


def _tool_name(message: Mapping[str, Any]) -> str:
    params = message.get("params")
    name = params.get("name") if isinstance(params, dict) and message.get("method") == "tools/call" else None
    return name if isinstance(name, str) else ""


def _what(message: Mapping[str, Any]) -> str:
    method = message.get("method")
    return repr(method) if isinstance(method, str) else "response"


class UpstreamSession:
    """The adapter thread's handle on a `SessionCore`: every call crosses to the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sid: str, url: str, shared: Shared) -> None:
        self.sid = sid
        self.url = url
        self._loop = loop
        self._core: SessionCore | None = None
        loop.call_soon_threadsafe(self._open, sid, url, shared)

    def _open(self, sid: str, url: str, shared: Shared) -> None:
        self._core = SessionCore(sid, url, shared)

    @property
    def pid(self) -> int:
        """The adapter's: no process of its own serves the session."""
        return os.getpid()

    def send(self, msg: Mapping[str, Any]) -> None:
        self._loop.call_soon_threadsafe(self._on_loop, "send", dict(msg))

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._on_loop, "stop", None)

    def set_reading(self, reading: bool) -> None:
        self._loop.call_soon_threadsafe(self._on_loop, "reading", reading)

    def _on_loop(self, what: str, value: Any) -> None:
        core = self._core
        assert core is not None  # _open was scheduled first, and the loop runs callbacks in order
        if what == "send":
            core.send(value)
        elif what == "stop":
            core.stop()
        else:
            core.set_reading(value)
