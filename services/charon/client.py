"""A synchronous charon client with the Lazy Pirate pattern (zguide ch. 4), returning numpy arrays.

Each try waits ``timeout_s`` for the reply; after a timeout the REQ socket is closed (dropping the
late reply), a fresh one is opened and the same request is sent again, up to ``retries`` resends.
The socket side is a :class:`charon.transport.Transport`, so the policy here is tested without one.
``NO_WORKERS`` (router saturated) is retried the same way after a short pause; a request the
server cannot simulate raises :class:`RequestFailed` at once, since resending it cannot help.

:meth:`Client.simulate_many` (and :meth:`AsyncClient.simulate_many`, on ``zmq.asyncio``) speak
protocol v2 on one DEALER connection: HELLO (the run's seed; the server's detector checked against
what the caller expects), then many events per SIMULATE within the server's credit window, with
each event's result yielded as it arrives. :class:`charon.pipeline.Pipeline` decides what to send.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar, cast

import zmq
import zmq.asyncio

from charon import sockets
from charon.errors import GeometryMismatch, InvalidReply, RequestFailed, ServerUnavailable
from charon.pipeline import EventResult, Pipeline
from charon.protocol import tokens, v1, v2
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
        self._ctx = context
        self.curve = curve
        #: The WELCOME of the last v2 run (engine, fingerprint, PMT digest, limits).
        self.welcome: v2.Welcome | None = None
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

    # ---- protocol v2 -----------------------------------------------------------------------------

    def simulate_many(self, events: Iterable[Photons], *, seed: int = 0, fingerprint: str | None = None,
                      pmt_digest: str | None = None, max_events: int | None = None) -> Iterator[EventResult]:
        """Simulate many events over v2, yielding each event's result as it arrives (any order;
        ``index`` says which event). ``fingerprint`` / ``pmt_digest``, when given, must match the
        server's WELCOME or :class:`GeometryMismatch` is raised before anything is sent. Retryable
        errors are resent up to ``retries`` times (after a backoff when the server had no room);
        silence for ``timeout_s`` with events in flight raises ServerUnavailable.
        """
        batch = list(events)
        sock = sockets.client_dealer(self._ctx or zmq.Context.instance(), self.endpoint, self.curve)
        sock.connect(self.endpoint)
        try:
            welcome = self._hello(sock, seed, fingerprint, pmt_digest)
            pipe = Pipeline([len(e) for e in batch], [e.event_id for e in batch], welcome,
                            retries=self.retries, max_events=max_events)
            heard = time.monotonic()
            while not pipe.complete():
                if pipe.needs_hello:
                    meanwhile: list[EventResult] = []
                    pipe.hello_again(self._hello(sock, seed, fingerprint, pmt_digest, pipe, meanwhile))
                    yield from meanwhile
                while indices := pipe.next_batch(time.monotonic()):
                    sock.send_multipart(simulate_frames(pipe, batch, indices), copy=False)
                yield from pipe.local_results()
                if pipe.complete():
                    break
                if not sock.poll(_poll_ms(self.endpoint, self.timeout_s, pipe, heard), zmq.POLLIN):
                    continue
                heard = time.monotonic()
                while True:
                    result = _on_reply(pipe, sock.recv_multipart(copy=False), heard)
                    if result is not None:
                        yield result
                    if not sock.poll(0, zmq.POLLIN):
                        break
        finally:
            sock.close(linger=0)

    def _hello(self, sock: zmq.Socket[Any], seed: int, fingerprint: str | None, pmt_digest: str | None,
               pipe: Pipeline | None = None, results: list[EventResult] | None = None) -> v2.Welcome:
        """HELLO until WELCOME (again while the answer is NO_WORKERS). During a run (``pipe``), the
        replies of events still in flight that arrive meanwhile go to ``pipe`` and ``results``."""
        hs = _Handshake(self.endpoint, self.timeout_s, time.monotonic(), fingerprint, pmt_digest, pipe, results)
        hello = v2.hello(v2.Hello(seed=seed, client="charon-python"))
        sock.send_multipart(hello)
        while True:
            if not sock.poll(hs.wait_ms(time.monotonic()), zmq.POLLIN):
                raise hs.timed_out()
            step = hs.on_frames(sock.recv_multipart(copy=False), time.monotonic())
            if isinstance(step, v2.Welcome):
                self.welcome = step
                return step
            if step is not None:
                self._sleep(step)
                sock.send_multipart(hello)

class AsyncClient:
    """The asyncio v2 client (``zmq.asyncio``): :meth:`simulate_many` is an async iterator."""

    def __init__(self, endpoint: str, *, timeout_s: float = 30.0, retries: int = 3,
                 context: zmq.asyncio.Context | None = None, curve: ClientKeys | None = None) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.retries = retries
        self._ctx = context
        self.curve = curve
        self.welcome: v2.Welcome | None = None

    async def simulate_many(self, events: Iterable[Photons], *, seed: int = 0, fingerprint: str | None = None,
                            pmt_digest: str | None = None, max_events: int | None = None
                            ) -> AsyncIterator[EventResult]:
        """As :meth:`Client.simulate_many`, without blocking the event loop."""
        batch = list(events)
        ctx = self._ctx or zmq.asyncio.Context.instance()
        sock = cast(zmq.asyncio.Socket, sockets.client_dealer(cast("zmq.Context[Any]", ctx), self.endpoint,
                                                               self.curve))
        sock.connect(self.endpoint)
        try:
            welcome = await self._hello(sock, seed, fingerprint, pmt_digest)
            pipe = Pipeline([len(e) for e in batch], [e.event_id for e in batch], welcome,
                            retries=self.retries, max_events=max_events)
            heard = time.monotonic()
            while not pipe.complete():
                if pipe.needs_hello:
                    meanwhile: list[EventResult] = []
                    pipe.hello_again(await self._hello(sock, seed, fingerprint, pmt_digest, pipe, meanwhile))
                    for early in meanwhile:
                        yield early
                while indices := pipe.next_batch(time.monotonic()):
                    await sock.send_multipart(simulate_frames(pipe, batch, indices), copy=False)
                for local in pipe.local_results():
                    yield local
                if pipe.complete():
                    break
                if not await sock.poll(_poll_ms(self.endpoint, self.timeout_s, pipe, heard)):
                    continue
                heard = time.monotonic()
                result = _on_reply(pipe, await sock.recv_multipart(copy=False), heard)
                if result is not None:
                    yield result
        finally:
            sock.close(linger=0)

    async def _hello(self, sock: zmq.asyncio.Socket, seed: int, fingerprint: str | None, pmt_digest: str | None,
                     pipe: Pipeline | None = None, results: list[EventResult] | None = None) -> v2.Welcome:
        """As :meth:`Client._hello`."""
        hs = _Handshake(self.endpoint, self.timeout_s, time.monotonic(), fingerprint, pmt_digest, pipe, results)
        hello = v2.hello(v2.Hello(seed=seed, client="charon-python-asyncio"))
        await sock.send_multipart(hello)
        while True:
            if not await sock.poll(hs.wait_ms(time.monotonic())):
                raise hs.timed_out()
            step = hs.on_frames(await sock.recv_multipart(copy=False), time.monotonic())
            if isinstance(step, v2.Welcome):
                self.welcome = step
                return step
            if step is not None:
                await asyncio.sleep(step)
                await sock.send_multipart(hello)

def simulate_frames(pipe: Pipeline, events: Sequence[Photons], indices: Sequence[int]) -> list[Frame]:
    """The SIMULATE of ``events[i] for i in indices``: one table, each photon column concatenated."""
    import numpy as np

    from charon.engine.base import frame_of

    if len(indices) == 1:
        arrays = events[indices[0]].frames()
    else:
        chosen = [events[i].columns() for i in indices]
        arrays = [frame_of(np.concatenate([cols[k] for cols in chosen])) for k in range(v2.N_PHOTON_FRAMES)]
    return v2.simulate(pipe.events(indices), arrays)


class _Handshake:
    """Waiting for WELCOME, for both clients (sans-IO: they poll, receive, sleep and send).

    Each message received is the WELCOME (checked against the expected geometry), a refusal for now
    (no worker yet: say HELLO again after a doubling pause), or, during a run, the reply of an event
    still in flight (handed to ``pipe``; its result joins ``results``)."""

    def __init__(self, endpoint: str, timeout_s: float, now: float, fingerprint: str | None,
                 pmt_digest: str | None, pipe: Pipeline | None, results: list[EventResult] | None) -> None:
        self.endpoint, self.timeout_s = endpoint, timeout_s
        self.deadline = now + timeout_s
        self.pause = 0.05
        self.fingerprint, self.pmt_digest = fingerprint, pmt_digest
        self.pipe, self.results = pipe, results

    def timed_out(self) -> ServerUnavailable:
        return ServerUnavailable(f"{self.endpoint}: no WELCOME within {self.timeout_s:g} s")

    def wait_ms(self, now: float) -> int:
        """How long to poll for the next message; raises once the deadline has passed."""
        left = self.deadline - now
        if left <= 0:
            raise self.timed_out()
        return int(left * 1000) + 1

    def on_frames(self, frames: Sequence[zmq.Frame], now: float) -> v2.Welcome | float | None:
        """The WELCOME; or seconds to pause before saying HELLO again; or None (nothing to do)."""
        reply = _hello_reply(frames, self.pipe)
        if isinstance(reply, v2.Welcome):
            return _check_welcome(self.endpoint, reply, self.fingerprint, self.pmt_digest)
        if reply == "event":
            assert self.pipe is not None
            assert self.results is not None
            result = _on_reply(self.pipe, frames, now)
            if result is not None:
                self.results.append(result)
            return None
        if now + self.pause > self.deadline:
            raise ServerUnavailable(f"{self.endpoint}: no worker behind the server within {self.timeout_s:g} s")
        pause = self.pause
        self.pause = min(self.pause * 2, 1.0)
        return pause


def _hello_reply(frames: Sequence[zmq.Frame], pipe: Pipeline | None) -> v2.Welcome | Literal["retry", "event"]:
    """What a message received while waiting for WELCOME is: the WELCOME; "retry" (HELLO refused for
    now: no worker yet); "event" (the reply of an event of ``pipe`` still in flight). Anything else
    raises."""
    payload = _payload(frames)
    reply = v2.decode_from_server(payload) if v2.is_v2(payload) else None
    if isinstance(reply, v2.Welcome):
        if reply.version != v2.VERSION:
            raise RequestFailed(f"WELCOME of version {reply.version}, expected {v2.VERSION}", v2.MAGIC)
        return reply
    if pipe is not None and isinstance(reply, v2.Result | v2.Error) and reply.tag != v2.NO_TAG:
        return "event"
    if isinstance(reply, v2.Error) and reply.code.retryable:
        return "retry"
    if isinstance(reply, v2.Error):
        raise RequestFailed(f"HELLO refused: {reply.code.name}: {reply.message}", v2.MAGIC)
    header = v1.header_of(payload)
    raise RequestFailed(f"HELLO answered with {header!r}: the server does not speak v2", header)


def _check_welcome(endpoint: str, welcome: v2.Welcome, fingerprint: str | None, pmt_digest: str | None
                   ) -> v2.Welcome:
    if fingerprint is not None and welcome.fingerprint != fingerprint:
        raise GeometryMismatch(f"{endpoint} simulates detector {welcome.fingerprint[:16]}, expected {fingerprint[:16]}")
    if pmt_digest is not None and welcome.pmt_digest != pmt_digest:
        raise GeometryMismatch(f"{endpoint}: PMT positions digest {welcome.pmt_digest[:16]} differs from this "
                               f"client's {pmt_digest[:16]} (the channel maps would not match)")
    return welcome


def _payload(frames: Sequence[zmq.Frame]) -> list[memoryview]:
    views = [f.buffer for f in frames]
    return views[1:] if views and len(views[0]) == 0 else views  # a DEALER peer may have sent a delimiter


def _poll_ms(endpoint: str, timeout_s: float, pipe: Pipeline, heard: float) -> int:
    """How long to wait for a reply: until the next resend is due, and never past ``timeout_s`` of
    silence with events in flight (then the server is taken for gone: ServerUnavailable)."""
    now = time.monotonic()
    limit = heard + timeout_s
    if pipe.in_flight and now >= limit:
        raise ServerUnavailable(f"{endpoint}: no v2 reply within {timeout_s:g} s ({pipe.in_flight} events in flight)")
    wake = pipe.next_wakeup()
    until = limit if wake is None else min(limit, wake) if pipe.in_flight else wake
    return max(int((until - now) * 1000), 0) + 1


def _on_reply(pipe: Pipeline, frames: Sequence[zmq.Frame], now: float) -> EventResult | None:
    payload = _payload(frames)
    if not v2.is_v2(payload):
        raise RequestFailed(f"non-v2 reply {v1.header_of(payload)!r} on a v2 connection", v1.header_of(payload))
    reply = v2.decode_from_server(payload)
    if isinstance(reply, v2.Welcome):
        return None
    if isinstance(reply, v2.Result):
        return pipe.on_reply(reply, hits_of(reply), now)
    return pipe.on_reply(reply, now=now)


def hits_of(result: v2.Result) -> Hits:
    """The hits of a RESULT as read-only numpy views of its hits frame (positions when it has them)."""
    import numpy as np

    from charon.engine.base import Hits

    n = result.n_hits
    block = np.frombuffer(result.hits, dtype="<u4").reshape(v2.hit_arrays(result.flags), n)
    f = block.view("<f4")
    positions = (f[10], f[11], f[12]) if result.has_positions else (None, None, None)
    return Hits(block[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], block[9], *positions)
