"""`Backlog`: frames held, in order, for peers that cannot take more right now (sans-IO).

A ROUTER socket refuses a frame for a peer whose queue is at its high-water
mark. With ``ROUTER_MANDATORY`` libzmq says so (``EAGAIN``), and for a while
after, until it has processed the peer's "I have read" signal, it answers
``EHOSTUNREACH`` for a peer that is still connected (measured: a client that
sent 10,000 ``close`` frames before reading lost about 8,000 ``closed``
answers). The hub does not drop such a frame: it holds it here, sends every
later frame for that peer after it, and retries on every turn of its loop.

What is held is bounded twice: ``max_bytes`` per peer and ``max_total``
across all peers. A frame that would pass either bound is not taken
(`hold` returns False) and the hub gives up on that peer (`give_up`): what
was held for it is dropped and counted, and the daemon closes its sessions.
How long a peer may hold frames is not bounded here: whether it is still
there is the hub's to know (its connection table), not this table's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class _Held:
    frames: deque[bytes] = field(default_factory=deque)
    size: int = 0


class Backlog(Generic[K]):
    """Frames held per peer key ``K`` (the hub's is ``(socket, routing id)``)."""

    def __init__(self, max_bytes: int, max_total: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_total = max_bytes if max_total is None else max_total
        self._held: dict[K, _Held] = {}
        self.total = 0
        """Bytes held for all peers."""

    def __bool__(self) -> bool:
        return bool(self._held)

    def __contains__(self, peer: K) -> bool:
        return peer in self._held

    def __len__(self) -> int:
        """Frames held for all peers."""
        return sum(len(held.frames) for held in self._held.values())

    def held_bytes(self, peer: K) -> int:
        held = self._held.get(peer)
        return held.size if held is not None else 0

    def largest(self) -> K | None:
        """The peer with the most bytes held."""
        return max(self._held, key=lambda peer: self._held[peer].size, default=None)

    def hold(self, peer: K, data: bytes) -> bool:
        """Keep ``data`` for ``peer`` behind what is held already; False if a bound would be passed."""
        held = self._held.get(peer)
        if (held.size if held else 0) + len(data) > self.max_bytes or self.total + len(data) > self.max_total:
            return False
        if held is None:
            held = self._held[peer] = _Held()
        held.frames.append(data)
        held.size += len(data)
        self.total += len(data)
        return True

    def flush(self, send: Callable[[K, bytes], bool]) -> list[K]:
        """Send what each peer takes, oldest first, until ``send`` returns False.

        Returns the peers whose frames have all gone.
        """
        drained: list[K] = []
        for peer, held in list(self._held.items()):
            frames = held.frames
            while frames and send(peer, frames[0]):
                size = len(frames.popleft())
                held.size -= size
                self.total -= size
            if not frames:
                del self._held[peer]
                drained.append(peer)
        return drained

    def give_up(self, peer: K) -> int:
        """Drop what is held for ``peer``; returns how many frames."""
        held = self._held.pop(peer, None)
        if held is None:
            return 0
        self.total -= held.size
        return len(held.frames)
