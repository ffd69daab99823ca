"""Replies handed from the simulation thread to the socket thread that sends them.

A deque and a pipe: the simulation thread appends a reply and writes one byte; the socket thread
polls the pipe's read end beside its zmq sockets (``zmq.Poller`` takes file descriptors), so it
wakes at once, and takes every reply waiting. The frames of a reply are passed as Python objects and
sent once, to the peer, instead of travelling through an inproc socket first.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from dataclasses import dataclass

from charon.protocol.v1 import Frame


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to request ``token`` taken on connection ``generation``."""

    generation: int
    token: int
    frames: list[Frame]


class Outbox:
    """Many writers may :meth:`put`; one reader polls :attr:`fd` and calls :meth:`take`."""

    def __init__(self) -> None:
        self._items: deque[Reply] = deque()
        self.fd, self._wake = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._wake, False)
        self._lock = threading.Lock()  # a put racing close() never writes to a reused descriptor
        self._closed = False

    def put(self, reply: Reply) -> None:
        self._items.append(reply)
        with self._lock:
            if self._closed:
                return
            with contextlib.suppress(BlockingIOError):  # a full pipe: the reader is awake already
                os.write(self._wake, b"\0")

    def take(self) -> list[Reply]:
        """Every reply waiting, oldest first (an empty list after a spurious wake-up)."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 65536):
                pass
        out: list[Reply] = []
        while self._items:
            out.append(self._items.popleft())
        return out

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self.fd)
                os.close(self._wake)
