"""Diagnostic: the daemon's Python work per request, with no threads and no sockets.

    python -m bench.inline_cost [--requests N]

Builds the daemon's `Dispatcher` with a fake hub that runs everything on the
calling thread (the session actors are `mcp_troupe.actors.shells.loop_actor.LoopActor`s, so
their messages run from the fake hub's run queue, as on the real hub's
loop), registers a fake adapter, opens and
initializes one session, then times N round trips of the benchmark's
``tools/call``: ``Dispatcher.on_front`` with the client's frame (decode, route,
the session core, encode for the adapter) plus ``Dispatcher.on_back`` with the
echo adapter's answer (decode, route, the session core, encode for the
client). What is left out is what the poller and ZeroMQ add.

It uses the daemon's internal APIs (`Dispatcher`, `SessionActor`), unlike the
rest of the harness, which only speaks the wire protocol; it is a diagnostic
of ``--profile``, not one of the measurements.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgpack

from bench.echo_adapter import answer
from bench.wire import INITIALIZE_PARAMS, call_frame, mcp_frame

_pack = msgpack.Packer(use_bin_type=True).pack


class _Hub:
    def __init__(self) -> None:
        self.front: list[bytes] = []
        self.back: list[bytes] = []
        self.soon: deque[Callable[[], object]] = deque()

    def send_front(self, peer: bytes, data: bytes) -> None:
        self.front.append(data)

    def send_back(self, peer: bytes, data: bytes) -> None:
        self.back.append(data)

    def send_events(self, *args: Any) -> None:
        pass

    def call(self, fn: Callable[[], object]) -> None:
        self.soon.append(fn)

    def on_loop_thread(self) -> bool:
        return True

    def run(self) -> None:
        soon = self.soon
        while soon:
            soon.popleft()()

    def ask(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        return fn()

    def connection(self, which: int, peer: bytes) -> Any:
        """Every peer is a local one with every right, as an ipc peer of the daemon's own user is."""
        from mcp_troupe.transport.hub.peers import Connection
        from mcp_troupe.transport.keys import ANY_SERVER, OPERATOR, VOUCH

        return Connection(number=1, identity=peer, rights=frozenset({ANY_SERVER, OPERATOR, VOUCH}), assigned=True)

    def __getattr__(self, name: str) -> Callable[..., None]:  # anything newer the dispatcher may use
        return lambda *args, **kwargs: None


def measure(requests: int = 20_000) -> dict[str, Any]:
    from mcp_troupe.actors.core.options import Limits
    from mcp_troupe.actors.daemon.dispatcher import Dispatcher, DispatcherOptions

    hub = _Hub()
    dispatcher = Dispatcher(hub, DispatcherOptions(limits=Limits(rate_per_session=0, open_rate_per_client=0)))  # type: ignore[arg-type]
    adapter, client = b"adapter", b"client"
    dispatcher.on_back(adapter, _pack({"v": 1, "t": "register", "server": "echo", "capacity": 0, "adapter_id": "x"}))
    hub.back.clear()
    dispatcher.on_front(client, _pack({"v": 1, "t": "open", "ref": 1, "server": "echo"}))
    hub.run()
    spawn = msgpack.unpackb(hub.back.pop())
    sid = spawn["sid"]
    dispatcher.on_back(adapter, _pack({"v": 1, "t": "spawned", "sid": sid, "pid": 1}))
    hub.run()

    def through(frame: bytes) -> None:
        dispatcher.on_front(client, frame)
        hub.run()
        forwarded = msgpack.unpackb(hub.back.pop())
        reply = answer(forwarded["msg"])
        dispatcher.on_back(adapter, _pack({"v": 1, "t": "mcp", "sid": sid, "msg": reply}))
        hub.run()
        hub.front.clear()

    through(mcp_frame(sid, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INITIALIZE_PARAMS}))
    dispatcher.on_front(client, mcp_frame(sid, {"jsonrpc": "2.0", "method": "notifications/initialized"}))
    hub.run()
    hub.back.clear()
    # time only the daemon: prepare the adapter's answers beforehand
    for request_id in range(1, 2001):
        through(call_frame(sid, request_id))
    frames = [call_frame(sid, i) for i in range(2001, 2001 + requests)]
    replies = [
        _pack({"v": 1, "t": "mcp", "sid": sid, "msg": answer(msgpack.unpackb(f)["msg"]), "checked": True})
        for f in frames
    ]
    on_front, on_back, run = dispatcher.on_front, dispatcher.on_back, hub.run
    began = time.process_time()
    for frame, reply in zip(frames, replies, strict=True):
        on_front(client, frame)
        run()
        on_back(adapter, reply)
        run()
    cpu = time.process_time() - began
    if len(hub.front) < requests:
        raise RuntimeError(f"only {len(hub.front)} of {requests} responses reached the client")
    return {
        "what": "CPU time per request of the daemon's Python work (dispatcher + session actor + session core, both "
        "directions), no sockets",
        "requests": requests,
        "cpu_us_per_request": round(cpu / requests * 1e6, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    json.dump(measure(parser.parse_args().requests), sys.stdout)
    print()
