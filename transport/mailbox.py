"""A many-producer, one-consumer mailbox a ``zmq.Poller`` can wake on.

Actors and worker threads must never touch a ZMQ socket (sockets are not
thread-safe). They put items here instead; the I/O loop that owns the sockets
registers `Mailbox.fileno` in its poller and drains the mailbox when it is
readable. This costs one queue and one file descriptor however many producers
there are, where an inproc socket per producer would cost one fd each and hit
libzmq's socket limit (measured: ~1023 per context).
"""

from __future__ import annotations

import os
import queue
from typing import Generic, TypeVar

T = TypeVar("T")


class Mailbox(Generic[T]):
    """`queue.SimpleQueue` plus a wake-up fd (eventfd on Linux, a pipe elsewhere)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[T] = queue.SimpleQueue()
        if hasattr(os, "eventfd"):
            self._read_fd = self._write_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # pragma: no cover - non-Linux
            self._read_fd, self._write_fd = os.pipe()
            os.set_blocking(self._read_fd, False)
            os.set_blocking(self._write_fd, False)
        self._closed = False

    def fileno(self) -> int:
        """The fd that becomes readable when items are waiting."""
        return self._read_fd

    def put(self, item: T) -> None:
        """Queue one item and wake the consumer. Safe from any thread; ignored once closed."""
        if self._closed:
            return
        self._queue.put(item)
        try:
            os.write(self._write_fd, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except BlockingIOError:
            pass  # the counter or pipe is full: the consumer is already due to wake

    def drain(self, limit: int = 4096) -> list[T]:
        """Take up to ``limit`` waiting items (consumer only), clearing the wake-up.

        If more than ``limit`` items wait, the fd is left readable so the loop
        comes back for the rest after serving its sockets.
        """
        try:
            os.read(self._read_fd, 4096)
        except BlockingIOError:
            pass
        items: list[T] = []
        get = self._queue.get_nowait
        try:
            while len(items) < limit:
                items.append(get())
        except queue.Empty:
            return items
        if not self._queue.empty():
            os.write(self._write_fd, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        return items

    def close(self) -> None:
        self._closed = True
        os.close(self._read_fd)
        if self._write_fd != self._read_fd:
            os.close(self._write_fd)
