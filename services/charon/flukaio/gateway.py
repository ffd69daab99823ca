"""``charon flukaio-gateway``: FlukaIO clients (C/Fortran trackers) use charon over plain TCP.

A thin asyncio driver around the sans-IO parts: per connection a :class:`StreamDecoder` in block
mode and a :class:`GatewaySession`. A finished batch is converted to photons, simulated either by
a v1 endpoint (``gateway.router``: ``charon serve`` or ``charon router``, through the Lazy Pirate
client) or by a local engine, and answered with hit particles plus EOB, written whole in one
write. Conversion and simulation run on a per-connection worker thread, so the event loop keeps
serving every other connection. Any protocol error, timeout or failed simulation closes only
that connection, without a reply (FlukaIO has no error message), after one log line.

Sockets: TCP_NODELAY, and TCP_QUICKACK re-armed after every read (Linux; quick-ack mode is not
sticky), so a client whose last segment waits for an ACK (the library's default Nagle build) is
not held up by a delayed ACK while the gateway, which sends nothing until EOB, stays silent.
A batch is simulated in engine calls of at most ``gateway.chunk_photons`` photons, and abandoned
between calls once its client has gone. The admission rules of :mod:`charon.flukaio.limits`
apply: peers outside ``gateway.allow`` are closed at once; while the particles held reach
``gateway.max_inflight_particles`` nothing read is decoded and nothing more is read (the kernel
then holds the clients back); at ``gateway.max_connections`` a new client closes the connection
idle longest, if idle for ``gateway.reap_idle_s``, or is refused.

The gateway is a :class:`charon.process.Service` running its own event loop. On a stop request it
drains: it stops listening (new connections are refused), reads nothing more, finishes the batches
whose EOB it has already received, answers them and closes each connection; connections that are
idle or in the middle of a batch are closed at once, without a reply. What is still running after
``gateway.drain_grace_s`` (or at once, on a forced stop) is cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, cast

from prometheus_client import CollectorRegistry

from charon.curve import ClientKeys
from charon.engine.base import DetectorInfo, Hits, Photons, Simulator
from charon.errors import SimulationFailed, StartupError
from charon.flukaio import codec, limits, mapping
from charon.flukaio.codec import FlukaIOProtocolError, Layout, StreamDecoder
from charon.flukaio.metrics import GatewayMetrics
from charon.flukaio.session import Batch, Close, GatewaySession, Send, Simulate
from charon.health import HealthServer
from charon.metrics import new_registry
from charon.process import Stop, open_simulator, run_service
from charon.protocol.tokens import PHOTON_FIELDS
from charon.settings import GatewaySettings, Settings, invalid_setting, parse_networks

log = logging.getLogger("charon.flukaio.gateway")

_READ_BYTES = 65536
#: TCP_QUICKACK is Linux's; elsewhere the delayed-ACK stall is left to the client (TCP_NODELAY).
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
_LISTEN = re.compile(r"^tcp://(\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\*|[0-9]{1,5})$")


def parse_listen(endpoint: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` -> (host, port); ``*`` host = every interface of both families (""), ``*`` port = any."""
    match = _LISTEN.match(endpoint)
    if match is None:
        raise invalid_setting("gateway.listen", endpoint, "FlukaIO needs tcp://HOST:PORT")
    host, port = match.groups()
    host = "" if host == "*" else host.strip("[]")
    number = 0 if port == "*" else int(port)
    if number > 65535:
        raise invalid_setting("gateway.listen", endpoint, "port above 65535")
    return host, number


class Backend(Protocol):
    """What the gateway needs from a simulator; called from one connection's worker thread."""

    def detector_info(self) -> DetectorInfo: ...

    def simulate(self, photons: Photons) -> Hits: ...

    def close(self) -> None: ...


class LocalBackend:
    """A local engine shared by all connections, one simulation at a time (engine contract)."""

    def __init__(self, simulator: Simulator) -> None:
        self._simulator = simulator
        self._lock = threading.Lock()
        self._info = simulator.detector_info()

    def detector_info(self) -> DetectorInfo:
        return self._info

    def simulate(self, photons: Photons) -> Hits:
        with self._lock:
            return self._simulator.simulate([photons])[0]

    def close(self) -> None:
        """Shared: nothing to release per connection (the simulator's owner closes it)."""


class _DetectorCache:
    """The router's detector info, fetched once by whichever connection needs it first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._info: DetectorInfo | None = None

    def get(self, fetch: Callable[[], DetectorInfo]) -> DetectorInfo:
        with self._lock:
            if self._info is None:
                self._info = fetch()
            return self._info


class RouterBackend:
    """One Lazy Pirate client per connection (its REQ socket is used only by that connection)."""

    def __init__(self, endpoint: str, timeout_s: float, retries: int, cache: _DetectorCache,
                 curve: ClientKeys | None = None) -> None:
        from charon.client import Client

        self._client = Client(endpoint, timeout_s=timeout_s, retries=retries, curve=curve)
        self._cache = cache

    def detector_info(self) -> DetectorInfo:
        return self._cache.get(self._client.detector_info)

    def simulate(self, photons: Photons) -> Hits:
        return self._client.simulate(photons)

    def close(self) -> None:
        self._client.close()


class _Abandoned(Exception):
    """The batch's client went away while it was being simulated."""

    def __init__(self, calls: int, of: int) -> None:
        super().__init__(f"{calls} of {of} engine calls made")
        self.calls = calls
        self.of = of


def _chunk(photons: Photons, index: int, start: int, stop: int) -> Photons:
    """Photons[start:stop]; chunks after the first get their own random stream."""
    columns = {name: getattr(photons, name)[start:stop] for name in PHOTON_FIELDS}
    return Photons(event_id=photons.event_id, stream=photons.stream + index, **columns)


def _simulate_chunks(backend: Backend, photons: Photons, chunk: int, gone: threading.Event,
                     calls: Callable[[], None]) -> Hits:
    """The batch in engine calls of at most ``chunk`` photons, stopped once ``gone`` is set."""
    n = len(photons)
    if n <= chunk:
        if gone.is_set():
            raise _Abandoned(0, 1)
        calls()
        return backend.simulate(photons)
    starts = range(0, n, chunk)
    parts = []
    for index, start in enumerate(starts):
        if gone.is_set():
            raise _Abandoned(index, len(starts))
        calls()
        parts.append(backend.simulate(_chunk(photons, index, start, min(start + chunk, n))))
    return Hits.concatenate(parts)


@dataclass(frozen=True, slots=True)
class _Answer:
    reply: bytes
    conversion: mapping.Conversion | None
    hits: int


def _answer_batch(backend: Backend, batch: Batch, layout: Layout | None, seed: int, gw: GatewaySettings,
                  gone: threading.Event, calls: Callable[[], None]) -> _Answer:
    """Runs on the connection's worker thread: the reply bytes, what was converted, the hit count."""
    if layout is None or batch.particles == 0:
        return _Answer(codec.EOB_BYTES, None, 0)
    particles = mapping.records(batch.blocks, layout)
    conversion = mapping.convert(particles, layout, batch.event_id, seed, gen_flags=gw.gen == "flags")
    photons = conversion.photons
    if len(photons) == 0:
        return _Answer(codec.EOB_BYTES, conversion, 0)
    try:
        hits = _simulate_chunks(backend, photons, gw.chunk_photons, gone, calls)
        info = backend.detector_info()
        body = mapping.hits_to_bytes(hits, info, layout)
    except _Abandoned:
        raise
    except Exception as exc:
        raise SimulationFailed(f"{type(exc).__name__}: {exc}", batch.event_id) from exc
    return _Answer(body + codec.EOB_BYTES, conversion, len(hits))


class _IdleTimeout(Exception):
    pass


class _WriteTimeout(Exception):
    pass


class _PeerClosed(Exception):
    """The peer closed the connection before END."""


class _Drained(Exception):
    """The gateway's drain closed the connection before END."""


class _Reaped(Exception):
    """Closed to make room for a new client."""


class _Protocol(asyncio.StreamReaderProtocol):
    """A stream protocol that applies the allow-list, sets the socket options and notices the peer going.

    ``gone`` is a thread-safe flag (the batch's worker thread reads it between engine calls).
    """

    def __init__(self, gateway: Gateway, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(asyncio.StreamReader(limit=_READ_BYTES, loop=loop),
                         lambda r, w: gateway.accept(r, w, self), loop=loop)
        self.gateway = gateway
        self.gone = threading.Event()
        self._sock: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        if not self.gateway.allowed(peer):
            self.gone.set()
            cast(asyncio.Transport, transport).abort()  # no reply at all, not even a handshake
            return
        self._sock = transport.get_extra_info("socket")
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._quickack()
        super().connection_made(transport)

    def _quickack(self) -> None:
        if _QUICKACK is not None and self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._quickack()  # after every read: quick-ack mode ends by itself

    def eof_received(self) -> bool | None:
        self.gone.set()
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone.set()
        super().connection_lost(exc)


class _Connection:
    """One FlukaIO client: read, decode, hand messages to the session, act on its actions."""

    def __init__(self, gateway: Gateway, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 gone: threading.Event) -> None:
        self.gateway = gateway
        self.gw: GatewaySettings = gateway.gw
        self.reader = reader
        self.writer = writer
        self.gone = gone
        self.peer = _peer_name(writer)
        self.decoder = StreamDecoder(gateway.layout, blocks=True)
        self.session = GatewaySession(echo=self.gw.echo, max_batch_particles=self.gw.max_batch_particles)
        #: True while messages already received are handled (a batch simulated, a reply written):
        #: a drain lets that finish instead of cutting it off.
        self.busy = False
        #: True while the connection waits for the in-flight budget (not idle: the gateway holds it).
        self.waiting = False
        #: Particles of the batch being simulated (0 when none).
        self.simulating = 0
        #: Loop time of the last data received (or of the connection), and when the batch being
        #: collected began (for the in-flight budget's tie-break).
        self.last_read = gateway.now()
        self.batch_began = self.last_read
        self.reaped = False
        self._executor: ThreadPoolExecutor | None = None
        self._backend: Backend | None = None

    @property
    def held(self) -> int:
        """Particles this connection holds: the batch being received plus the one being simulated."""
        return self.session.pending_particles + self.simulating

    @property
    def idle(self) -> bool:
        """Waiting for the peer (not while the gateway is the one working or holding it back)."""
        return not (self.busy or self.waiting or self.simulating)

    def holding(self) -> limits.Holding:
        return limits.Holding(self.session.pending_particles, self.simulating, self.batch_began)

    async def run(self) -> None:
        """Serve until END, an error, or the gateway's drain; one log line and metric for an error."""
        log.info("flukaio %s: connected", self.peer)
        try:
            try:
                await self._serve()
            except asyncio.CancelledError:
                if not (self.gateway.draining or self.reaped):
                    raise
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()  # the drain's or the reaper's own cancellation: handled here
                raise (_Reaped if self.reaped else _Drained) from None
        except _Drained:
            held = f" ({self.session.pending_particles} particles of an unfinished batch dropped)" \
                if self.session.pending_particles else ""
            log.info("flukaio %s: closed by the gateway's drain%s", self.peer, held)
            self.gateway.metrics.error("shutdown")
        except Exception as exc:  # noqa: BLE001 - every failure closes only this connection
            self._failed(exc)
        finally:
            self.gone.set()  # a batch still on the worker thread stops at its next engine call
            if self._executor is not None:
                if self._backend is not None:
                    self._executor.submit(self._backend.close)
                self._executor.shutdown(wait=False)

    async def _serve(self) -> None:
        while True:
            if self.gateway.draining:
                raise _Drained  # nothing more is read once the drain began
            data = await self._read()
            await self.gateway.admit(self)  # nothing read is decoded while over the budget
            self.busy = True
            try:
                for message in self.decoder.feed(data):
                    if await self._handle(message):
                        return
            finally:
                self.busy = False

    async def _read(self) -> bytes:
        try:
            data = await asyncio.wait_for(self.reader.read(_READ_BYTES), self.gw.idle_timeout_s)
        except TimeoutError:
            raise _IdleTimeout from None
        self.last_read = self.gateway.now()
        if not data:
            self.decoder.check_eof()
            if not self.session.finished:
                raise _PeerClosed
        return data

    async def _handle(self, message: codec.Decoded) -> bool:
        """Act on one message; True once the connection is finished (END answered)."""
        if isinstance(message, codec.ParticleBlock) and not self.session.pending_particles:
            self.batch_began = self.gateway.now()
        for action in self.session.handle(message):
            if isinstance(action, Send):
                await self._write(action.data)
            elif isinstance(action, Simulate):
                await self._simulate(action.batch)
            elif isinstance(action, Close):
                log.info("flukaio %s: END answered; closing", self.peer)
                return True
        if isinstance(message, codec.Hsk):
            log.info("flukaio %s: handshake ok (key %d)", self.peer, self.session.key)
        elif isinstance(message, codec.Conf | codec.IntVar | codec.DbleVar):
            log.info("flukaio %s: %s ignored", self.peer, message)
        return False

    async def _simulate(self, batch: Batch) -> None:
        loop = asyncio.get_running_loop()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="flukaio-batch")
        m = self.gateway.metrics
        self.simulating = batch.particles
        try:
            if self._backend is None:
                self._backend = await loop.run_in_executor(self._executor, self.gateway.make_backend)
            answer = await loop.run_in_executor(
                self._executor, _answer_batch, self._backend, batch, self.decoder.layout,
                self.gateway.settings.engine.seed, self.gw, self.gone, m.engine_calls.inc)
        except _Abandoned as exc:
            m.abandoned.inc()
            log.warning("flukaio %s: event %d abandoned, the client has gone (%s)", self.peer,
                        batch.event_id, exc)
            raise _PeerClosed from None
        finally:
            self.simulating = 0
            self.gateway.budget_freed()
        await self._write(answer.reply)
        m.batches.inc()
        conversion = answer.conversion
        photons = 0 if conversion is None else len(conversion.photons)
        skipped = 0 if conversion is None else conversion.skipped
        m.particles.labels(kind="photon").inc(photons)
        m.particles.labels(kind="skipped").inc(skipped)
        m.particles.labels(kind="hit").inc(answer.hits)
        if conversion is not None and skipped:
            for reason, count in conversion.dropped.items():
                m.not_propagated.labels(reason=reason).inc(count)
            detail = ", ".join(f"{reason}={count}" for reason, count in conversion.dropped.items() if count)
            log.info("flukaio %s: event %d: %d of %d particles not propagated (%s; "
                     "charon_gateway_not_propagated_total)", self.peer, batch.event_id, skipped,
                     batch.particles, detail)
        log.debug("flukaio %s: event %d (ipt %s): %d photons -> %d hits", self.peer, batch.event_id,
                  batch.ipt, photons, answer.hits)

    async def _write(self, data: bytes) -> None:
        """Whole messages in one write; waits (bounded) until the kernel has taken them."""
        self.writer.write(data)
        try:
            await asyncio.wait_for(self.writer.drain(), self.gw.write_timeout_s)
        except TimeoutError:
            raise _WriteTimeout from None

    def _failed(self, exc: Exception) -> None:
        reason, level, text = _failure(exc, self)
        log.log(level, "flukaio %s: %s", self.peer, text, exc_info=reason == "internal_error")
        self.gateway.metrics.error(reason)


def _failure(exc: Exception, conn: _Connection) -> tuple[str, int, str]:
    """(metric reason, log level, log text) of the error that ended a connection."""
    gw = conn.gw
    if isinstance(exc, FlukaIOProtocolError):
        return exc.reason, logging.WARNING, f"{exc} (reason={exc.reason}); closing without reply"
    if isinstance(exc, SimulationFailed):
        return "simulation_failed", logging.ERROR, f"simulation failed: {exc}; closing without reply"
    if isinstance(exc, _IdleTimeout):
        held = conn.decoder.buffered
        detail = f", {held} bytes of an incomplete message held" if held else ""
        return "timeout", logging.WARNING, (f"nothing received for {gw.idle_timeout_s:g} s "
                                            f"(gateway.idle_timeout_s){detail}; closing")
    if isinstance(exc, _WriteTimeout):
        return "write_timeout", logging.WARNING, (f"reply not written within {gw.write_timeout_s:g} s "
                                                  "(gateway.write_timeout_s); closing")
    if isinstance(exc, _PeerClosed):
        return "connection_lost", logging.WARNING, "peer closed the connection before END"
    if isinstance(exc, _Reaped):
        return "idle_reaped", logging.WARNING, (f"idle for at least {gw.reap_idle_s:g} s "
                                                "(gateway.reap_idle_s); closed to make room for a new client")
    if isinstance(exc, OSError):
        return "connection_lost", logging.WARNING, f"connection lost: {exc}"
    return "internal_error", logging.ERROR, "internal error; closing without reply"


class Gateway:
    """The ``charon flukaio-gateway`` service; ``backend_factory`` gives each connection its backend."""

    stopping = "draining"

    def __init__(self, settings: Settings, backend_factory: Callable[[], Backend], *,
                 registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.gw = settings.gateway
        self._backend_factory = backend_factory
        self.layout = Layout.from_setting(self.gw.layout)
        self.registry = registry if registry is not None else new_registry()
        self.metrics = GatewayMetrics(self.registry, self.held)
        self.http = HealthServer(settings.metrics, 0, self.registry)
        #: Set when the drain begins: connections read nothing more.
        self.draining = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        #: Set (and replaced) whenever in-flight particles are freed; connections over the budget wait on it.
        self._budget = asyncio.Event()
        self._allow = limits.AllowList(parse_networks(self.gw.allow))

    @staticmethod
    def now() -> float:
        return time.monotonic()

    def held(self) -> int:
        """Particles held by every connection (read from the metrics thread too: a snapshot)."""
        return sum(c.held for c in list(self._connections.values()))

    def allowed(self, peer: object) -> bool:
        """Whether ``gateway.allow`` lets this peer in; a refusal is counted, and logged once per address."""
        host = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
        if self._allow.allows(host):
            return True
        self.metrics.refused.inc()
        if self._allow.first_refusal(host):
            log.warning("flukaio %s: refused, not in gateway.allow (counted in "
                        "charon_auth_refused_total{socket=\"flukaio\"}; logged once per address)", host)
        return False

    def _may_read(self, conn: _Connection) -> bool:
        holdings = {c: c.holding() for c in list(self._connections.values())}
        return limits.may_read(holdings[conn], holdings.values(), self.gw.max_inflight_particles)

    async def admit(self, conn: _Connection) -> None:
        """Wait until ``conn`` may be read under ``gateway.max_inflight_particles``."""
        if self._may_read(conn):
            return
        self.metrics.read_waits.inc()
        log.debug("flukaio %s: not read, %d particles in flight (gateway.max_inflight_particles)",
                  conn.peer, self.held())
        conn.waiting = True
        try:
            while not self._may_read(conn):
                await self._budget.wait()
        finally:
            conn.waiting = False
            conn.last_read = self.now()

    def budget_freed(self) -> None:
        """A batch finished or a connection ended: every waiting connection checks again."""
        freed, self._budget = self._budget, asyncio.Event()
        freed.set()

    def make_backend(self) -> Backend:
        try:
            return self._backend_factory()
        except Exception as exc:
            raise SimulationFailed(f"no simulator: {type(exc).__name__}: {exc}") from exc

    # ---- service shape ---------------------------------------------------------------------------

    def startup(self) -> dict[str, object]:
        host, port = parse_listen(self.gw.listen)
        self._loop = asyncio.new_event_loop()
        bound_host, bound_port = self._loop.run_until_complete(self._listen(host, port))
        metrics_addr = self.http.start()
        shown = "127.0.0.1" if bound_host in ("", "0.0.0.0", "::") else bound_host
        shown = f"[{shown}]" if ":" in shown else shown
        mode = "echo" if self.gw.echo else (
            f"router {self.gw.router}" if self.gw.router else f"engine {self.settings.engine.backend}")
        log.info("flukaio gateway listening on %s:%d (layout %s, %s)", bound_host, bound_port, self.gw.layout, mode)
        self.http.health.set_ready(True)
        return {"endpoint": f"tcp://{shown}:{bound_port}", "metrics": metrics_addr}

    def run(self, stop: Stop) -> int:
        assert self._loop is not None, "startup() first"
        self._loop.run_until_complete(self._serve_until(stop))
        return 0

    def shutdown(self) -> None:
        self.http.health.set_ready(False)
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.run_until_complete(self._close(cut=True))
            loop.close()
        self.http.stop()

    # ---- the event loop's side -------------------------------------------------------------------

    async def _listen(self, host: str, port: int) -> tuple[str, int]:
        # Every interface of both families; with a free port ("*" or 0) asyncio would give each
        # family its own port, so then IPv4 alone.
        bind_host = host or (None if port else "0.0.0.0")
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(lambda: _Protocol(self, loop), bind_host, port, backlog=128)
        except OSError as exc:
            raise StartupError(f"cannot listen on {self.gw.listen}: {exc}") from None
        bound = self._server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def _serve_until(self, stop: Stop) -> None:
        loop = asyncio.get_running_loop()
        requested, forced = asyncio.Event(), asyncio.Event()

        def hand_over() -> None:  # runs in the thread that set ``stop`` (a signal handler)
            loop.call_soon_threadsafe(requested.set)
            if stop.forced:
                loop.call_soon_threadsafe(forced.set)

        unregister = stop.on_change(hand_over)
        try:
            await requested.wait()
            await self._drain(forced)
        finally:
            unregister()

    async def _drain(self, forced: asyncio.Event) -> None:
        busy = sum(c.busy for c in self._connections.values())
        log.info("draining: %d connection(s) open, %d with a batch in hand; exiting within %g s",
                 len(self._connections), busy, self.gw.drain_grace_s)
        self.http.health.set_ready(False)
        self.draining = True
        if self._server is not None:
            self._server.close()  # new connections are refused from here on
        for task, conn in list(self._connections.items()):
            if not conn.busy:
                task.cancel()  # idle, or in the middle of a batch: nothing to finish
        tasks = set(self._connections)
        if not tasks:
            return
        everyone: asyncio.Future[Any] = asyncio.gather(*tasks, return_exceptions=True)
        cut: asyncio.Future[Any] = asyncio.ensure_future(forced.wait())
        done, _ = await asyncio.wait({everyone, cut}, timeout=self.gw.drain_grace_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        cut.cancel()
        if everyone not in done:
            log.warning("drain %s with %d connection(s) still busy: closing them",
                        "forced" if forced.is_set() else "grace over", len(self._connections))
        await self._close(cut=True)

    async def _close(self, *, cut: bool) -> None:
        self.draining = True
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections)
        if cut:
            for task in tasks:
                task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _reap(self) -> bool:
        """At the connection limit: close the connection idle longest, if idle for ``gateway.reap_idle_s``."""
        idle_since = {task: conn.last_read for task, conn in self._connections.items()
                      if conn.idle and not conn.reaped}
        task = limits.reap_choice(idle_since, self.now(), self.gw.reap_idle_s)
        if task is None:
            return False
        self._connections[task].reaped = True
        task.cancel()
        return True

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: _Protocol) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            if self.draining:
                return
            open_now = sum(not c.reaped for c in self._connections.values())
            if open_now >= self.gw.max_connections and not self._reap():
                log.warning("flukaio %s: refused, %d connections already open (gateway.max_connections) "
                            "and none idle for %g s (gateway.reap_idle_s)", _peer_name(writer), open_now,
                            self.gw.reap_idle_s)
                self.metrics.error("too_many_connections")
                return
            conn = self._connections[task] = _Connection(self, reader, writer, protocol.gone)
            self.metrics.connections.inc()
            try:
                await conn.run()
            finally:
                del self._connections[task]
                self.metrics.connections.dec()
                self.budget_freed()
        finally:
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()  # a peer that does not read must not hold the socket open
            else:
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def router_backend_factory(settings: Settings) -> Callable[[], Backend]:
    """A Lazy Pirate client per connection to ``gateway.router``, sharing one detector-info fetch
    (a CURVE client of the router when ``security.curve_server_key`` is set)."""
    from charon.curve import client_keys

    router = settings.gateway.router
    assert router is not None
    cache = _DetectorCache()
    timeout_s, retries = settings.client.timeout_s, settings.client.retries
    keys = client_keys(settings.security)
    return lambda: RouterBackend(router, timeout_s, retries, cache, keys)


def _no_backend() -> Backend:
    raise AssertionError("echo mode never simulates")


def main(settings: Settings) -> int:
    """Run the gateway until SIGTERM/SIGINT; returns the exit status."""
    parse_listen(settings.gateway.listen)
    if settings.gateway.echo:
        return run_service(Gateway(settings, _no_backend))
    if settings.gateway.router is not None:
        return run_service(Gateway(settings, router_backend_factory(settings)))
    with open_simulator(settings.engine) as simulator:
        local = LocalBackend(simulator)
        return run_service(Gateway(settings, lambda: local))
