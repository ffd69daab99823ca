"""A synchronous charon client with the Lazy Pirate pattern (zguide ch. 4), returning numpy arrays.

Each try waits ``timeout_s`` for the reply; after a timeout the REQ socket is closed (dropping the
late reply), a fresh one is opened and the same request is sent again, up to ``retries`` resends.
``NO_WORKERS`` (router saturated) is retried the same way after a short pause; a request the
server cannot simulate raises :class:`RequestFailed` at once, since resending it cannot help.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Self, TypeVar

import zmq

from charon.errors import InvalidReply, RequestFailed, ServerUnavailable
from charon.protocol import tokens, v1
from charon.protocol.v1 import Frame
from charon.sockets import connect_ipv6

T = TypeVar("T")

if TYPE_CHECKING:  # numpy is imported only where arrays are made: `charon ping` needs none
    from charon.engine.base import DetectorInfo, Hits, Photons


class Client:
    """Talks v1 to ``charon serve`` or ``charon router`` (or ChAR0N)."""

    def __init__(self, endpoint: str, *, timeout_s: float = 30.0, retries: int = 3,
                 context: zmq.Context[Any] | None = None) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.retries = retries
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket[Any] | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def _socket(self) -> zmq.Socket[Any]:
        if self._sock is None:
            sock = self._ctx.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IPV6, connect_ipv6(self.endpoint))
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock

    def request(self, frames: Sequence[Frame]) -> list[memoryview]:
        """Send one request and return the reply payload; resends after timeouts and NO_WORKERS."""
        tries = self.retries + 1
        last = "no reply"
        for attempt in range(tries):
            sock = self._socket()
            sock.send_multipart(list(frames), copy=False)
            if sock.poll(int(self.timeout_s * 1000), zmq.POLLIN):
                reply = [f.buffer for f in sock.recv_multipart(copy=False)]
                if v1.header_of(reply) != tokens.NO_WORKERS:
                    return reply
                last = "NO_WORKERS"
                if attempt + 1 < tries:
                    time.sleep(min(0.1 * 2**attempt, 2.0))
            else:
                last = f"no reply within {self.timeout_s:g} s"
                self.close()  # a REQ socket waiting for a reply cannot send again
        raise ServerUnavailable(f"{self.endpoint}: {last} after {tries} tries")

    def ping(self) -> float:
        """Round-trip time in seconds of one PING."""
        start = time.perf_counter()
        reply = self.request([tokens.PING])
        self._check(v1.check_ack, reply)
        return time.perf_counter() - start

    def run_begin(self, filename: str = "output.root") -> None:
        self._check(v1.check_ack, self.request([tokens.RUN_BEGIN, filename.encode()]))

    def run_end(self) -> None:
        self._check(v1.check_ack, self.request([tokens.RUN_END]))

    def detector_info(self) -> DetectorInfo:
        from charon.engine.base import DetectorInfo

        reply = self.request([tokens.DETECTOR_INFO])
        info = self._check(v1.check_detector_info, reply)
        return DetectorInfo.from_frames(info.frames)

    def simulate(self, photons: Photons) -> Hits:
        """Simulate one event; the hits are read-only views of the reply frames."""
        from charon.engine.base import Hits

        frames: list[Frame] = [tokens.PHOTONDATA, photons.metadata(), *photons.frames()]
        reply = self.request(frames)
        done = self._check(lambda p: v1.check_sim_complete(p, photons.event_id), reply)
        return Hits.from_frames(done.hit_frames)

    @staticmethod
    def _check(validate: Callable[[list[memoryview]], T], reply: list[memoryview]) -> T:
        try:
            return validate(reply)
        except InvalidReply as exc:
            raise RequestFailed(str(exc), exc.header) from None
