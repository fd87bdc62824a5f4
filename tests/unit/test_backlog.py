"""Frames for a peer that reads slowly wait in the hub, in order; a peer that reads nothing loses them, counted."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import zmq
from conftest import wait_for

from mcp_troupe.transport.hub.backlog import Backlog
from mcp_troupe.transport.hub.loop import FRONT, Hub, HubOptions

# -- the sans-IO core ---------------------------------------------------------------


def test_held_frames_go_in_order_as_far_as_the_peer_takes_them() -> None:
    backlog = Backlog(max_bytes=100)
    for data in (b"a", b"b", b"c"):
        assert backlog.hold("p", data)
    taken: list[bytes] = []

    def take_two(peer: object, data: bytes) -> bool:
        if len(taken) == 2:
            return False
        taken.append(data)
        return True

    assert backlog.flush(take_two) == []
    assert taken == [b"a", b"b"] and "p" in backlog and len(backlog) == 1
    assert backlog.flush(lambda peer, data: taken.append(data) is None) == ["p"], "drained peers are reported"
    assert taken == [b"a", b"b", b"c"] and "p" not in backlog and not backlog and backlog.total == 0


def test_holding_is_bounded_per_peer_and_in_total() -> None:
    backlog = Backlog(max_bytes=10, max_total=25)
    assert backlog.hold("p", b"12345") and backlog.hold("p", b"67890")
    assert not backlog.hold("p", b"1"), "the bound per peer"
    assert backlog.hold("q", b"1234567890"), "the bound is per peer"
    assert not backlog.hold("r", b"123456"), "the bound in total"
    assert backlog.largest() in ("p", "q") and backlog.total == 20
    assert backlog.give_up("p") == 2 and backlog.total == 10 and "p" not in backlog
    assert backlog.hold("r", b"123456")


# -- the hub, with real sockets -----------------------------------------------------


class _Peers:
    """Records the routing id of whoever says hello on the front socket."""

    def __init__(self) -> None:
        self.front: list[bytes] = []
        self.lost: list[tuple[bytes, str]] = []
        self.blocked: list[tuple[bytes, bool]] = []

    def on_front(self, peer: bytes, data: bytes) -> None:
        self.front.append(peer)

    def on_back(self, peer: bytes, data: bytes) -> None: ...

    def on_tick(self, now: float) -> None: ...

    def on_peer_lost(self, which: int, peer: bytes, reason: str) -> None:
        self.lost.append((peer, reason))

    def on_peer_blocked(self, which: int, peer: bytes, blocked: bool) -> None:
        self.blocked.append((peer, blocked))


@pytest.fixture
def small_hub(tmp_path: object) -> Iterator[tuple[Hub, _Peers, str]]:
    hub = Hub(HubOptions(sndhwm=10, backlog_bytes=4 * 1024 * 1024, linger_ms=0))
    peers = _Peers()
    hub.start(peers)
    endpoint = hub.bind(FRONT, "tcp://127.0.0.1:0")
    yield hub, peers, endpoint
    hub.stop()


def _client(ctx: zmq.Context, endpoint: str, peers: _Peers) -> tuple[zmq.Socket, bytes]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVHWM, 10)
    sock.setsockopt(zmq.RCVBUF, 4096)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    before = len(peers.front)
    sock.send(b"hello")
    wait_for(lambda: len(peers.front) > before, 5, "the hub to see the client")
    return sock, peers.front[-1]


def test_a_client_that_reads_late_gets_every_frame_in_order(small_hub: tuple[Hub, _Peers, str]) -> None:
    hub, peers, endpoint = small_hub
    ctx = zmq.Context()
    try:
        sock, peer = _client(ctx, endpoint, peers)
        count, pad = 2000, b"." * 1000  # far more than the socket queues and kernel buffers hold
        sent = threading.Event()

        def send_all() -> None:
            for i in range(count):
                hub.send_front(peer, i.to_bytes(4, "big") + pad)
            sent.set()

        hub.call(send_all)
        wait_for(sent.is_set, 10, "the hub to queue every frame")
        wait_for(lambda: hub.stats().held["front"] > 0, 5, "frames to wait in the backlog")
        received = []
        while len(received) < count:
            assert sock.poll(5000), f"only {len(received)} of {count} frames arrived"
            received.append(int.from_bytes(sock.recv()[:4], "big"))
        assert received == list(range(count))
        stats = hub.stats()
        assert not stats.dropped, stats.dropped
        assert stats.frames_out["front"] == count
    finally:
        ctx.destroy(linger=0)


def test_a_client_that_never_reads_is_held_for_up_to_its_share_then_given_up(
    small_hub: tuple[Hub, _Peers, str],
) -> None:
    hub, peers, endpoint = small_hub
    ctx = zmq.Context()
    try:
        _sock, peer = _client(ctx, endpoint, peers)
        count = 6000  # 6 MB: more than the socket, the kernel and the 4 MiB share hold together
        hub.call(lambda: [hub.send_front(peer, b"x" * 1000) for _ in range(count)])
        wait_for(lambda: (peer, "not_reading") in peers.lost, 10, "the peer to be given up")
        assert (peer, True) in peers.blocked, "the handler heard the peer was blocked first"
        stats = hub.stats()
        assert stats.dropped["front_not_reading"] > 0
        assert stats.frames_out["front"] + stats.dropped["front_not_reading"] + stats.backlog_bytes // 1000 == count
        assert stats.backlog_bytes <= 4 * 1024 * 1024, "never more than its share held"
    finally:
        ctx.destroy(linger=0)


def test_frames_held_for_a_client_that_goes_away_are_dropped_and_it_is_reported_lost(
    small_hub: tuple[Hub, _Peers, str],
) -> None:
    hub, peers, endpoint = small_hub
    ctx = zmq.Context()
    try:
        sock, peer = _client(ctx, endpoint, peers)
        hub.call(lambda: [hub.send_front(peer, b"x" * 1000) for _ in range(2000)])
        wait_for(lambda: hub.stats().backlog_bytes > 0, 10, "frames to wait for the peer")
        sock.close(linger=0)
        wait_for(lambda: (peer, "disconnected") in peers.lost, 10, "the peer's end to be reported")
        stats = hub.stats()
        assert stats.backlog_bytes == 0 and stats.dropped["front_peer_gone"] > 0
        assert stats.frames_out["front"] + stats.dropped["front_peer_gone"] == 2000, "every frame sent or counted"
        hub.call(lambda: hub.send_front(peer, b"late"))
        wait_for(lambda: hub.stats().dropped["front_unroutable"] == 1, 5, "a frame for the gone peer to be dropped")
    finally:
        ctx.destroy(linger=0)
