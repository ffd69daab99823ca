"""How :class:`charon.client.Client` moves one request: the seam between its retry policy and ZeroMQ.

A :class:`Transport` makes one Lazy Pirate try at a time: send the request, wait a bounded time
for the reply, or abandon the try (a REQ socket that is still waiting for a reply cannot send
again, so the next try needs a fresh socket). :class:`ZmqTransport` is the real one;
:class:`MockTransport` answers from a function, as httpx's ``MockTransport`` does, so the
client's retries, timeouts and reply checks are unit-tested without sockets or waiting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import zmq

from charon import sockets
from charon.protocol.v1 import Frame, as_view

if TYPE_CHECKING:
    from charon.curve import ClientKeys


class Transport(Protocol):
    """One request at a time to one endpoint."""

    def send(self, frames: Sequence[Frame]) -> None:
        """Send a request (the previous one was answered or abandoned with :meth:`reset`)."""
        ...

    def receive(self, timeout_s: float) -> list[memoryview] | None:
        """The reply payload, or None when none came within ``timeout_s`` seconds."""
        ...

    def reset(self) -> None:
        """Abandon the request in flight: its late reply must never be taken for the next one's."""
        ...

    def close(self) -> None: ...


class ZmqTransport:
    """A REQ socket to ``endpoint``, replaced after every abandoned try (ratpac-two does the same);
    with ``curve``, a CURVE client of the server whose public key it holds."""

    def __init__(self, endpoint: str, context: zmq.Context[Any] | None = None,
                 curve: ClientKeys | None = None) -> None:
        self.endpoint = endpoint
        self.curve = curve
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket[Any] | None = None

    def send(self, frames: Sequence[Frame]) -> None:
        if self._sock is None:
            self._sock = sockets.client_req(self._ctx, self.endpoint, self.curve)
            self._sock.connect(self.endpoint)
        self._sock.send_multipart(list(frames), copy=False)

    def receive(self, timeout_s: float) -> list[memoryview] | None:
        assert self._sock is not None, "send() first"
        if not self._sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            return None
        return [f.buffer for f in self._sock.recv_multipart(copy=False)]

    def reset(self) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None


#: A fake server: the request's frames in, the reply's out, or None for a reply that never comes.
Responder = Callable[[list[bytes]], Sequence[bytes] | None]


class MockTransport:
    """Answers each request with ``responder``; ``sent`` records every try, ``waits`` the timeout
    of each wait for a reply, ``resets`` how many tries were abandoned."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.sent: list[list[bytes]] = []
        self.waits: list[float] = []
        self.resets = 0
        self.closed = False
        self._reply: Sequence[bytes] | None = None
        self._waiting = False

    def send(self, frames: Sequence[Frame]) -> None:
        if self._waiting:
            raise RuntimeError("a request is already waiting for its reply (reset() first)")
        request = [bytes(as_view(f)) for f in frames]
        self.sent.append(request)
        self._reply = self.responder(request)
        self._waiting = True

    def receive(self, timeout_s: float) -> list[memoryview] | None:
        if not self._waiting:
            raise RuntimeError("nothing sent")
        self.waits.append(timeout_s)
        if self._reply is None:
            return None  # the reply never comes: the client's timeout decides, without waiting
        reply, self._reply, self._waiting = self._reply, None, False
        return [memoryview(f) for f in reply]

    def reset(self) -> None:
        self.resets += 1
        self._reply = None
        self._waiting = False

    def close(self) -> None:
        self.closed = True
