"""Helpers for the HTTP front's tests: a daemon serving HTTP, the conformance everything-server, raw HTTP.

Raw requests use the standard library's ``http.client`` on purpose: the tests must send what no
well-behaved client library would (no ``Accept``, a batch, a lying header) and drop connections
in the middle of a stream.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import ROOT, RunningDaemon, start_daemon

EVERYTHING_FIXTURE = ROOT.parent / "shared" / "fixtures" / "mcp-everything-server"
"""The official Python SDK's conformance everything-server (third-party, used in place, never copied)."""
EVERYTHING_STDIO = [sys.executable, "-c", "from mcp_everything_server.server import mcp; mcp.run()"]
LEGACY = "2025-11-25"
MODERN = "2026-07-28"
ACCEPT_BOTH = "application/json, text/event-stream"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def everything_env() -> dict[str, str]:
    assert (EVERYTHING_FIXTURE / "mcp_everything_server" / "server.py").exists(), (
        f"the conformance everything-server is expected at {EVERYTHING_FIXTURE} (../shared/fixtures)"
    )
    return {"PYTHONPATH": str(EVERYTHING_FIXTURE)}


def http_config(port: int, extra: str = "", *, everything: bool = True, daemon: str = "", servers: str = "") -> Path:
    """A config serving the example server (and the everything-server over stdio) with HTTP on ``port``;
    ``servers``: more ``[servers.NAME]`` tables."""
    tables = f"[servers.example]\ncommand = {json.dumps([sys.executable, '-m', 'mcp_troupe.examples.server'])}\n"
    if everything:
        tables += f"[servers.everything]\ncommand = {json.dumps(EVERYTHING_STDIO)}\n"
        tables += f'env = {{ PYTHONPATH = "{EVERYTHING_FIXTURE}" }}\n'
    text = f'[daemon]\n{daemon}\n[http]\naddress = "127.0.0.1:{port}"\n{extra}\n{tables}{servers}'
    path = Path(tempfile.mkdtemp(prefix="trp-http-", dir="/tmp")) / "troupe.toml"
    path.write_text(text)
    return path


@dataclass
class HttpDaemon:
    daemon: RunningDaemon
    port: int
    metrics_port: int | None = None

    def url(self, server: str = "example") -> str:
        return f"http://127.0.0.1:{self.port}/mcp/{server}"


def start_http_daemon(
    extra: str = "", *, everything: bool = True, daemon: str = "", servers: str = "", more: int = 0
) -> HttpDaemon:
    """``extra``: more of ``[http]``; ``daemon``: lines of ``[daemon]``; ``servers``: ``more`` server tables."""
    port = free_port()
    config = http_config(port, extra, everything=everything, daemon=daemon, servers=servers)
    daemon = start_daemon(["--config", str(config)], servers=(2 if everything else 1) + more)
    http = HttpDaemon(daemon, port)
    from conftest import wait_for

    wait_for(lambda: front_answers(port), 30, "the HTTP front to serve")
    return http


def front_answers(port: int) -> bool:
    try:
        status, _, _ = request(port, "GET", "/mcp/example", headers={"Accept": "text/event-stream"})
    except OSError:
        return False
    return status == 400  # no session id: the front is up and answering


# -- raw HTTP ----------------------------------------------------------------------------


def request(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request on a connection of its own, read whole: status, headers (lower-case names), body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def post_headers(session: str | None = None, version: str | None = LEGACY, **more: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH}
    if session is not None:
        headers["Mcp-Session-Id"] = session
    if version is not None:
        headers["MCP-Protocol-Version"] = version
    headers.update(more)
    return headers


def initialize_body(msg_id: int = 1, capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": msg_id,
        "method": "initialize",
        "params": {
            "protocolVersion": LEGACY,
            "capabilities": capabilities or {},
            "clientInfo": {"name": "troupe-tests", "version": "1"},
        },
    }


@dataclass
class Event:
    id: str | None
    data: str
    retry: int | None = None

    def message(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.data)
        return found


def sse_events(payload: bytes) -> list[Event]:
    return list(_parse(iter(payload.decode().splitlines())))


def _parse(lines: Iterator[str]) -> Iterator[Event]:
    current: dict[str, Any] = {}
    for line in lines:
        if not line:
            if current:
                yield Event(current.get("id"), "\n".join(current.get("data", [])), current.get("retry"))
            current = {}
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            current.setdefault("data", []).append(value)
        elif name == "id":
            current["id"] = value
        elif name == "retry":
            current["retry"] = int(value)
    if current:
        yield Event(current.get("id"), "\n".join(current.get("data", [])), current.get("retry"))


def answer_of(headers: dict[str, str], body: bytes, msg_id: Any) -> dict[str, Any]:
    """The response to ``msg_id`` in a POST's answer, whether the front sent it as JSON or as SSE."""
    if headers.get("content-type", "").startswith("application/json"):
        found: dict[str, Any] = json.loads(body)
        return found
    for event in sse_events(body):
        if event.data and event.message().get("id") == msg_id and "method" not in event.message():
            return event.message()
    raise AssertionError(f"no answer to {msg_id!r} in {body[:500]!r}")


@dataclass
class Stream:
    """An SSE response read event by event; `close` drops the connection mid-stream."""

    conn: http.client.HTTPConnection
    response: http.client.HTTPResponse
    events: list[Event] = field(default_factory=list)

    @property
    def status(self) -> int:
        return self.response.status

    def header(self, name: str) -> str | None:
        return self.response.getheader(name)

    def next(self) -> Event | None:
        """The next event with data or an id, or None at the end of the stream."""
        current: dict[str, Any] = {}
        while True:
            raw = self.response.readline()
            if not raw:
                return None
            line = raw.decode().rstrip("\r\n")
            if line:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    current.setdefault("data", []).append(value)
                elif name in ("id", "retry"):
                    current[name] = value
                continue
            if current:
                retry = current.get("retry")
                event = Event(current.get("id"), "\n".join(current.get("data", [])), int(retry) if retry else None)
                self.events.append(event)
                return event

    def until_answer(self, msg_id: Any) -> list[Event]:
        """Events up to and including the response to ``msg_id`` (an answer sent as JSON is one event)."""
        if (self.header("content-type") or "").startswith("application/json"):
            event = Event(None, self.response.read().decode())
            self.events.append(event)
            return [event]
        seen = []
        while (event := self.next()) is not None:
            seen.append(event)
            if event.data and event.message().get("id") == msg_id and "method" not in event.message():
                return seen
        raise AssertionError(f"the stream ended before the answer to {msg_id!r}: {seen}")

    def close(self) -> None:
        self.conn.sock.shutdown(socket.SHUT_RDWR) if self.conn.sock else None
        self.conn.close()


def open_stream(port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Stream:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers=headers or {})
    return Stream(conn, conn.getresponse())


def troupe_sid(session_id: str) -> str:
    """The troupe session behind an ``Mcp-Session-Id`` (``<sid>.<nonce>``: docs/http.rst)."""
    return session_id.partition(".")[0]


def start_session(port: int, server: str = "example", capabilities: dict[str, Any] | None = None) -> str:
    """initialize + notifications/initialized over raw HTTP; the session id."""
    stream = open_stream(port, "POST", f"/mcp/{server}", initialize_body(1, capabilities), post_headers(version=None))
    assert stream.status == 200, stream.response.read()
    sid = stream.header("mcp-session-id")
    assert sid
    stream.until_answer(1)
    stream.close()
    status, _, _ = request(
        port,
        "POST",
        f"/mcp/{server}",
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        post_headers(sid),
    )
    assert status == 202
    return sid
