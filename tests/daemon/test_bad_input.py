"""Bad frames against a running daemon: each gets a clear error, nothing else is disturbed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq
from conftest import RunningDaemon

from mcp_troupe.transport.client import Session
from mcp_troupe.transport.wire import jsonrpc
from mcp_troupe.transport.wire.frames import encode


class RawClient:
    """A bare DEALER, to send exactly the bytes a test wants."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def ask(self, data: bytes, timeout_ms: int = 5000) -> dict[str, Any]:
        self.sock.send(data)
        assert self.sock.poll(timeout_ms), "no answer from the daemon"
        return msgpack.unpackb(self.sock.recv())

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


@pytest.fixture(scope="module")
def raw(shared_daemon: RunningDaemon) -> Iterator[RawClient]:
    client = RawClient(shared_daemon.front)
    yield client
    client.close()


@pytest.fixture(scope="module")
def survivor(shared_daemon: RunningDaemon) -> Iterator[Session]:
    """A session opened before any bad frame; it must keep working after all of them."""
    client = shared_daemon.client()
    session = client.open("example")
    session.initialize()
    yield session
    assert (
        session.request("tools/call", {"name": "echo", "arguments": {"text": "still here"}})["content"][0]["text"]
        == "still here"
    )
    session.close()
    client.close()


def pack(body: Any) -> bytes:
    return msgpack.packb(body, use_bin_type=True)


ENVELOPE_CASES = [
    ("not msgpack", b"\xc1\xc1\xc1", "bad_frame", "not valid msgpack"),
    ("not a map", pack(["open", 1]), "bad_frame", "must be a msgpack map"),
    ("unknown type", pack({"v": 1, "t": "teleport", "ref": 5}), "unknown_type", "teleport"),
    ("unknown version", pack({"v": 7, "t": "open", "ref": 6, "server": "example"}), "unsupported_version", "7"),
    ("missing field", pack({"v": 1, "t": "open", "ref": 7}), "bad_frame", "missing field 'server'"),
    (
        "wrong type",
        pack({"v": 1, "t": "open", "ref": 8, "server": ["example"]}),
        "bad_frame",
        "'server' must be string",
    ),
    ("unknown server", encode("open", ref=9, server="nope"), "unknown_server", "known servers: example"),
    ("unknown session", encode("mcp", sid="no-such", msg=jsonrpc.request(1, "ping")), "unknown_session", "no-such"),
    ("unknown session close", encode("close", sid="gone", ref=10), "unknown_session", "gone"),
]


@pytest.mark.parametrize(("name", "data", "code", "needle"), ENVELOPE_CASES, ids=[c[0] for c in ENVELOPE_CASES])
def test_envelope_errors(raw: RawClient, survivor: Session, name: str, data: bytes, code: str, needle: str) -> None:
    reply = raw.ask(data)
    assert reply["t"] == "error"
    assert reply["code"] == code
    assert needle in reply["message"]


def test_errors_echo_ref_sid_and_id(raw: RawClient, survivor: Session) -> None:
    reply = raw.ask(encode("mcp", sid="zzz", msg=jsonrpc.request(41, "ping")))
    assert (reply["sid"], reply["id"]) == ("zzz", 41)
    reply = raw.ask(encode("open", ref="r-1", server="nope"))
    assert reply["ref"] == "r-1"


def test_frame_too_large(raw: RawClient, survivor: Session) -> None:
    big = encode("mcp", sid=survivor.sid, msg=jsonrpc.request(1, "x", {"blob": "a" * (5 * 1024 * 1024)}))
    reply = raw.ask(big)
    assert reply["code"] == "frame_too_large" and "max_frame_bytes" in reply["message"]


def test_someone_elses_session_is_refused(raw: RawClient, survivor: Session) -> None:
    reply = raw.ask(encode("mcp", sid=survivor.sid, msg=jsonrpc.request(1, "ping")))
    assert reply["code"] == "not_owner"


INVALID_MCP = [
    ("wrong jsonrpc version", {"jsonrpc": "1.0", "id": 1, "method": "ping"}, '"jsonrpc"'),
    ("positional params", {"jsonrpc": "2.0", "id": 2, "method": "x", "params": [1, 2]}, '"params"'),
    ("no method no result", {"jsonrpc": "2.0", "id": 3}, "exactly one"),
    ("bad id", {"jsonrpc": "2.0", "id": 1.5, "method": "ping"}, '"id"'),
    ("binary value", {"jsonrpc": "2.0", "id": 4, "method": "x", "params": {"b": b"\x00\x01"}}, "bytes"),
]


@pytest.mark.parametrize(("name", "msg", "needle"), INVALID_MCP, ids=[c[0] for c in INVALID_MCP])
def test_invalid_json_rpc_in_a_real_session(
    shared_daemon: RunningDaemon, survivor: Session, name: str, msg: Any, needle: str
) -> None:
    raw = RawClient(shared_daemon.front)
    try:
        opened = raw.ask(encode("open", ref=1, server="example"), timeout_ms=20000)
        assert opened["t"] == "opened"
        reply = raw.ask(encode("mcp", sid=opened["sid"], msg=msg))
        assert reply["t"] == "error" and reply["code"] == "invalid_message" and reply["sid"] == opened["sid"]
        assert needle in reply["message"]
        # the session itself is unharmed: a valid request still gets its answer
        raw.sock.send(
            encode(
                "mcp",
                sid=opened["sid"],
                msg=jsonrpc.request(
                    9,
                    "initialize",
                    {
                        "protocolVersion": "2025-11-25",
                        "capabilities": {},
                        "clientInfo": {"name": "raw", "version": "0"},
                    },
                ),
            )
        )
        assert raw.sock.poll(20000)
        answer = msgpack.unpackb(raw.sock.recv())
        assert answer["t"] == "mcp" and answer["msg"]["id"] == 9 and "result" in answer["msg"]
        closed = raw.ask(encode("close", sid=opened["sid"], ref=2))
        assert closed["t"] == "closed" and closed["ref"] == 2
    finally:
        raw.close()


def test_request_frames_without_a_dealer_envelope_are_not_fatal(
    shared_daemon: RunningDaemon, survivor: Session
) -> None:
    """An empty frame (what a misused REQ socket sends) gets bad_frame, the daemon lives on."""
    raw = RawClient(shared_daemon.front)
    try:
        assert raw.ask(b"")["code"] == "bad_frame"
        assert shared_daemon.health()["status"] == "serving"
    finally:
        raw.close()
