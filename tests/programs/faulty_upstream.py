"""A remote MCP server (Streamable HTTP, legacy era) that fails on purpose: ``python faulty_upstream.py PORT``.

``/mcp/MODE`` answers ``initialize``, notifications and other requests properly; ``tools/call`` does what
MODE says: ``ok`` answers; ``401``, ``403``, ``500``, ``503`` answer that status without MCP; ``slow``
waits 5 s; ``html`` sends a web page; ``big`` and ``bigsse`` answer 300 kB, as JSON or as one event;
``drop`` starts an event stream, sends a progress event and cuts the connection, the answer coming only
to a ``GET`` with ``Last-Event-ID``; ``expire`` answers once and then forgets every session (404 from
then on). ``GET /stats`` says how many times each answer was sent, and how many sessions are open.

The standard library's server, on purpose: a failing upstream must be able to do what no framework
would (cut a stream, lie about its content).
"""

from __future__ import annotations

import json
import secrets
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SESSIONS: set[str] = set()
PARKED: dict[str, dict[str, Any]] = {}
"""Last-Event-ID -> the answer a resumption gets (``drop``)."""
SENT: Counter[str] = Counter()
"""What was sent, by request id: an answer must go out once."""
HEADERS_SEEN: list[dict[str, str]] = []
BIG = 300_000
"""Characters of the answer's text in modes ``big`` (a JSON body) and ``bigsse`` (one event)."""


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/stats":
            self._json(200, {"sent": dict(SENT), "headers": HEADERS_SEEN[-5:], "sessions": len(SESSIONS)})
            return
        answer = PARKED.pop(self.headers.get("Last-Event-ID") or "", None)
        if answer is None:
            self._json(405, {"error": "no standalone stream here"})
            return
        self._stream([("2", answer)])
        SENT[str(answer["id"])] += 1

    def do_DELETE(self) -> None:
        SESSIONS.discard(self.headers.get("Mcp-Session-Id") or "")
        self._json(200, {})

    def do_POST(self) -> None:
        mode = self.path.rsplit("/", 1)[-1]
        message = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        HEADERS_SEEN.append({k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-")})
        method, msg_id = message.get("method"), message.get("id")
        if method == "initialize":
            session = secrets.token_hex(8)
            SESSIONS.add(session)
            result = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": f"faulty-{mode}", "version": "1"},
            }
            self._json(200, {"jsonrpc": "2.0", "id": msg_id, "result": result}, {"Mcp-Session-Id": session})
            return
        if self.headers.get("Mcp-Session-Id") not in SESSIONS:
            self._json(404, {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "unknown session"}})
            return
        if msg_id is None or method is None:
            self._json(202, None)
            return
        self._call(mode, message)

    def _call(self, mode: str, message: dict[str, Any]) -> None:
        msg_id = message["id"]
        answer = {"jsonrpc": "2.0", "id": msg_id, "result": {"content": [{"type": "text", "text": f"ok {mode}"}]}}
        if message["method"] != "tools/call":
            self._json(200, {"jsonrpc": "2.0", "id": msg_id, "result": {}})
        elif mode in ("401", "403", "500", "503"):
            self._raw(int(mode), "text/plain", b"no")
        elif mode == "slow":
            time.sleep(5)
            self._json(200, answer)
        elif mode == "html":
            self._raw(200, "text/html", b"<html><body>a login page</body></html>")
        elif mode in ("big", "bigsse"):
            answer["result"]["content"][0]["text"] = "x" * BIG
            if mode == "big":
                self._json(200, answer)
            else:
                self._stream([("1", answer)])
        elif mode == "drop":
            PARKED["1"] = answer
            progress = {"progressToken": msg_id, "progress": 1, "total": 2}
            self._stream([("1", {"jsonrpc": "2.0", "method": "notifications/progress", "params": progress})])
        else:
            self._json(200, answer)
            SENT[str(msg_id)] += 1
            if mode == "expire":
                SESSIONS.clear()

    def _stream(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """An event stream that ends by closing the connection (HTTP/1.0), answer or not."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for event_id, data in events:
            self.wfile.write(f"id: {event_id}\nretry: 50\ndata: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        self._raw(status, "application/json", payload, headers)

    def _raw(self, status: int, kind: str, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("serving", flush=True)
    sys.stdin.read()  # until the test closes our stdin


if __name__ == "__main__":
    main()
