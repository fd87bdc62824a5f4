"""`Backlog`: frames held, in order, for peers that cannot take more right now (sans-IO).

A ROUTER socket refuses a frame for a peer whose queue is at its high-water
mark. With ``ROUTER_MANDATORY`` libzmq says so (``EAGAIN``), and for a while
after, until it has processed the peer's "I have read" signal, it answers
``EHOSTUNREACH`` for a peer that is still connected (measured: a client that
sent 10,000 ``close`` frames before reading lost about 8,000 ``closed``
answers). The hub does not drop such a frame: it holds it here, sends every
later frame for that peer after it, and retries on every turn of its loop.

A peer that takes nothing for ``timeout`` seconds is taken to be gone (libzmq
answers the same ``EHOSTUNREACH`` for a peer that disconnected): what is held
for it is dropped and counted. A peer may have at most ``max_bytes`` held;
beyond that new frames are refused, so a client that stops reading cannot
grow the daemon without bound.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Held:
    since: float
    """When this peer last took a frame (or its first frame was held)."""
    frames: deque[bytes] = field(default_factory=deque)
    size: int = 0


class Backlog:
    def __init__(self, max_bytes: int, timeout: float) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._held: dict[Hashable, _Held] = {}

    def __bool__(self) -> bool:
        return bool(self._held)

    def __contains__(self, peer: Hashable) -> bool:
        return peer in self._held

    def __len__(self) -> int:
        """Frames held for all peers."""
        return sum(len(held.frames) for held in self._held.values())

    def hold(self, peer: Hashable, data: bytes, now: float) -> bool:
        """Keep ``data`` for ``peer`` behind what is held already; False if its backlog is full."""
        held = self._held.get(peer)
        if held is None:
            held = self._held[peer] = _Held(now)
        if held.size + len(data) > self.max_bytes:
            return False
        held.frames.append(data)
        held.size += len(data)
        return True

    def flush(self, send: Callable[[Hashable, bytes], bool], now: float) -> list[tuple[Hashable, int]]:
        """Send what each peer takes, oldest first, until ``send`` returns False.

        Returns the peers given up on (nothing taken for ``timeout`` seconds)
        with the number of frames dropped for each.
        """
        given_up: list[tuple[Hashable, int]] = []
        for peer, held in list(self._held.items()):
            frames = held.frames
            while frames and send(peer, frames[0]):
                held.size -= len(frames.popleft())
                held.since = now
            if not frames:
                del self._held[peer]
            elif now - held.since >= self.timeout:
                del self._held[peer]
                given_up.append((peer, len(frames)))
        return given_up
