"""Frames for a peer that reads slowly wait in the hub, in order; a peer that reads nothing loses them, counted."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import zmq

from conftest import wait_for
from transport.backlog import Backlog
from transport.hub import FRONT, Hub, HubOptions

# -- the sans-IO core ---------------------------------------------------------------


def test_held_frames_go_in_order_as_far_as_the_peer_takes_them() -> None:
    backlog = Backlog(max_bytes=100, timeout=5.0)
    for data in (b"a", b"b", b"c"):
        assert backlog.hold("p", data, now=0.0)
    taken: list[bytes] = []

    def take_two(peer: object, data: bytes) -> bool:
        if len(taken) == 2:
            return False
        taken.append(data)
        return True

    assert backlog.flush(take_two, now=1.0) == []
    assert taken == [b"a", b"b"] and "p" in backlog and len(backlog) == 1
    assert backlog.flush(lambda peer, data: taken.append(data) is None, now=2.0) == []
    assert taken == [b"a", b"b", b"c"] and "p" not in backlog and not backlog


def test_a_peer_that_takes_nothing_for_the_timeout_is_given_up() -> None:
    backlog = Backlog(max_bytes=100, timeout=5.0)
    backlog.hold("slow", b"x", now=0.0)
    backlog.hold("dead", b"y", now=0.0)
    backlog.hold("dead", b"z", now=1.0)

    def only_slow_reads_once(peer: object, data: bytes) -> bool:
        return peer == "slow" and data == b"x"

    assert backlog.flush(only_slow_reads_once, now=4.9) == []
    backlog.hold("slow", b"x2", now=4.9)
    assert backlog.flush(lambda peer, data: False, now=5.0) == [("dead", 2)]
    assert "slow" in backlog, "progress at 4.9 s restarted the slow peer's timeout"
    assert backlog.flush(lambda peer, data: False, now=9.9) == [("slow", 1)]
    assert not backlog


def test_holding_is_bounded_in_bytes_per_peer() -> None:
    backlog = Backlog(max_bytes=10, timeout=5.0)
    assert backlog.hold("p", b"12345", 0.0) and backlog.hold("p", b"67890", 0.0)
    assert not backlog.hold("p", b"1", 0.0)
    assert backlog.hold("q", b"1234567890", 0.0), "the bound is per peer"


# -- the hub, with real sockets -----------------------------------------------------


class _Peers:
    """Records the routing id of whoever says hello on the front socket."""

    def __init__(self) -> None:
        self.front: list[bytes] = []

    def on_front(self, peer: bytes, data: bytes) -> None:
        self.front.append(peer)

    def on_back(self, peer: bytes, data: bytes) -> None: ...

    def on_tick(self, now: float) -> None: ...


@pytest.fixture
def small_hub(tmp_path: object) -> Iterator[tuple[Hub, _Peers, str]]:
    hub = Hub(HubOptions(sndhwm=10, backlog_bytes=4 * 1024 * 1024, backlog_timeout=0.5, linger_ms=0))
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


def test_frames_for_a_client_that_never_reads_are_dropped_after_the_timeout(
    small_hub: tuple[Hub, _Peers, str],
) -> None:
    hub, peers, endpoint = small_hub
    ctx = zmq.Context()
    try:
        _sock, peer = _client(ctx, endpoint, peers)
        hub.call(lambda: [hub.send_front(peer, b"x" * 1000) for _ in range(2000)])
        wait_for(lambda: hub.stats().dropped["front_unroutable"] > 0, 10, "the stalled peer to be given up")
        stats = hub.stats()
        assert stats.held["front"] >= stats.dropped["front_unroutable"]
        assert stats.frames_out["front"] + stats.dropped["front_unroutable"] == 2000, "every frame sent or counted"
        assert not hub.stats().held.keys() - {"front"}
    finally:
        ctx.destroy(linger=0)
