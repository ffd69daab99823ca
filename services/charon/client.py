"""A synchronous charon client with the Lazy Pirate pattern (zguide ch. 4), returning numpy arrays.

Each try waits ``timeout_s`` for the reply; after a timeout the REQ socket is closed (dropping the
late reply), a fresh one is opened and the same request is sent again, up to ``retries`` resends.
The socket side is a :class:`charon.transport.Transport`, so the policy here is tested without one.
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
from charon.transport import Transport, ZmqTransport

T = TypeVar("T")

if TYPE_CHECKING:  # numpy is imported only where arrays are made: `charon ping` needs none
    from charon.curve import ClientKeys
    from charon.engine.base import DetectorInfo, Hits, Photons


class Client:
    """Talks v1 to ``charon serve`` or ``charon router`` (or ChAR0N).

    ``curve`` (from :func:`charon.curve.client_keys`) makes the socket a CURVE client of a server
    whose public key it holds; ``transport`` replaces the ZeroMQ REQ socket (tests use
    :class:`charon.transport.MockTransport`); ``sleep`` is how the pause after a NO_WORKERS reply
    is waited. A server that refuses the key sends nothing: the request ends as a timeout.
    """

    def __init__(self, endpoint: str, *, timeout_s: float = 30.0, retries: int = 3,
                 context: zmq.Context[Any] | None = None, transport: Transport | None = None,
                 sleep: Callable[[float], None] = time.sleep, curve: ClientKeys | None = None) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.retries = retries
        self.curve = curve
        self.transport: Transport = (transport if transport is not None
                                     else ZmqTransport(endpoint, context, curve))
        self._sleep = sleep

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.transport.close()

    def request(self, frames: Sequence[Frame]) -> list[memoryview]:
        """Send one request and return the reply payload; resends after timeouts and NO_WORKERS."""
        tries = self.retries + 1
        last = "no reply"
        for attempt in range(tries):
            self.transport.send(frames)
            reply = self.transport.receive(self.timeout_s)
            if reply is None:
                last = f"no reply within {self.timeout_s:g} s"
                self.transport.reset()  # its late reply must not answer the resend
                continue
            if v1.header_of(reply) != tokens.NO_WORKERS:
                return reply
            last = "NO_WORKERS"
            if attempt + 1 < tries:
                self._sleep(min(0.1 * 2**attempt, 2.0))
        hint = ("; with CURVE a server that refuses this client's key sends nothing: check "
                "security.curve_server_key and that the server allows this key") if self.curve else ""
        raise ServerUnavailable(f"{self.endpoint}: {last} after {tries} tries{hint}")

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

        reply = self.request(v1.photondata_request(photons.event_id, photons.frames()))
        done = self._check(lambda p: v1.check_sim_complete(p, photons.event_id), reply)
        return Hits.from_frames(done.hit_frames)

    @staticmethod
    def _check(validate: Callable[[list[memoryview]], T], reply: list[memoryview]) -> T:
        try:
            return validate(reply)
        except InvalidReply as exc:
            raise RequestFailed(str(exc), exc.header) from None
