"""``charon flukaio-gateway``: FlukaIO clients (C/Fortran trackers) use charon over plain TCP.

A thin asyncio driver around the sans-IO parts: per connection a :class:`StreamDecoder` in block
mode and a :class:`GatewaySession`. A finished batch is converted to photons, simulated either by
a v1 endpoint (``gateway.router``: ``charon serve`` or ``charon router``, through the Lazy Pirate
client) or by a local engine, and answered with hit particles plus EOB, written whole in one
write. Conversion and simulation run on a per-connection worker thread, so the event loop keeps
serving every other connection. Any protocol error, timeout or failed simulation closes only
that connection, without a reply (FlukaIO has no error message), after one log line.

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
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from charon.curve import ClientKeys
from charon.engine.base import DetectorInfo, Hits, Photons, Simulator
from charon.errors import SimulationFailed, StartupError
from charon.flukaio import codec, mapping
from charon.flukaio.codec import FlukaIOProtocolError, Layout, StreamDecoder
from charon.flukaio.metrics import GatewayMetrics
from charon.flukaio.session import Batch, Close, GatewaySession, Send, Simulate
from charon.health import HealthServer
from charon.metrics import new_registry
from charon.process import Stop, open_simulator, run_service
from charon.settings import GatewaySettings, Settings, invalid_setting

log = logging.getLogger("charon.flukaio.gateway")

_READ_BYTES = 65536
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


def _answer_batch(backend: Backend, batch: Batch, layout: Layout | None, seed: int) -> tuple[bytes, int, int, int]:
    """Runs on the connection's worker thread: (reply bytes, photons, skipped, hits)."""
    if layout is None or batch.particles == 0:
        return codec.EOB_BYTES, 0, 0, 0
    particles = mapping.records(batch.blocks, layout)
    photons = mapping.to_photons(particles, layout, batch.event_id, seed)
    skipped = len(particles) - len(photons)
    if len(photons) == 0:
        return codec.EOB_BYTES, 0, skipped, 0
    try:
        hits = backend.simulate(photons)
        info = backend.detector_info()
        body = mapping.hits_to_bytes(hits, info, layout)
    except Exception as exc:
        raise SimulationFailed(f"{type(exc).__name__}: {exc}", batch.event_id) from exc
    return body + codec.EOB_BYTES, len(photons), skipped, len(hits)


class _IdleTimeout(Exception):
    pass


class _WriteTimeout(Exception):
    pass


class _PeerClosed(Exception):
    """The peer closed the connection before END."""


class _Drained(Exception):
    """The gateway's drain closed the connection before END."""


class _Connection:
    """One FlukaIO client: read, decode, hand messages to the session, act on its actions."""

    def __init__(self, gateway: Gateway, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.gateway = gateway
        self.gw: GatewaySettings = gateway.gw
        self.reader = reader
        self.writer = writer
        self.peer = _peer_name(writer)
        self.decoder = StreamDecoder(gateway.layout, blocks=True)
        self.session = GatewaySession(echo=self.gw.echo, max_batch_particles=self.gw.max_batch_particles)
        #: True while messages already received are handled (a batch simulated, a reply written):
        #: a drain lets that finish instead of cutting it off.
        self.busy = False
        self._executor: ThreadPoolExecutor | None = None
        self._backend: Backend | None = None
        self._warned_skip = False

    async def run(self) -> None:
        """Serve until END, an error, or the gateway's drain; one log line and metric for an error."""
        log.info("flukaio %s: connected", self.peer)
        try:
            try:
                await self._serve()
            except asyncio.CancelledError:
                if not self.gateway.draining:
                    raise
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()  # the drain's own cancellation: handled here
                raise _Drained from None
        except _Drained:
            held = f" ({self.session.pending_particles} particles of an unfinished batch dropped)" \
                if self.session.pending_particles else ""
            log.info("flukaio %s: closed by the gateway's drain%s", self.peer, held)
            self.gateway.metrics.error("shutdown")
        except Exception as exc:  # noqa: BLE001 - every failure closes only this connection
            self._failed(exc)
        finally:
            if self._executor is not None:
                if self._backend is not None:
                    self._executor.submit(self._backend.close)
                self._executor.shutdown(wait=False)

    async def _serve(self) -> None:
        while True:
            if self.gateway.draining:
                raise _Drained  # nothing more is read once the drain began
            data = await self._read()
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
        if not data:
            self.decoder.check_eof()
            if not self.session.finished:
                raise _PeerClosed
        return data

    async def _handle(self, message: codec.Decoded) -> bool:
        """Act on one message; True once the connection is finished (END answered)."""
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
        if self._backend is None:
            self._backend = await loop.run_in_executor(self._executor, self.gateway.make_backend)
        reply, photons, skipped, hits = await loop.run_in_executor(
            self._executor, _answer_batch, self._backend, batch, self.decoder.layout,
            self.gateway.settings.engine.seed)
        await self._write(reply)
        m = self.gateway.metrics
        m.batches.inc()
        m.particles.labels(kind="photon").inc(photons)
        m.particles.labels(kind="skipped").inc(skipped)
        m.particles.labels(kind="hit").inc(hits)
        if skipped:
            log.log(logging.DEBUG if self._warned_skip else logging.INFO,
                    "flukaio %s: event %d: skipped %d particles that are not photons "
                    "(counted in charon_gateway_particles_total{kind=\"skipped\"})",
                    self.peer, batch.event_id, skipped)
            self._warned_skip = True
        log.debug("flukaio %s: event %d (ipt %s): %d photons -> %d hits", self.peer, batch.event_id,
                  batch.ipt, photons, hits)

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
        self.metrics = GatewayMetrics(self.registry)
        self.http = HealthServer(settings.metrics, 0, self.registry)
        #: Set when the drain begins: connections read nothing more.
        self.draining = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}

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
        try:
            self._server = await asyncio.start_server(self._accept, bind_host, port, backlog=128)
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

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            if self.draining:
                return
            if len(self._connections) >= self.gw.max_connections:
                log.warning("flukaio %s: refused, %d connections already open (gateway.max_connections)",
                            _peer_name(writer), len(self._connections))
                self.metrics.error("too_many_connections")
                return
            conn = self._connections[task] = _Connection(self, reader, writer)
            self.metrics.connections.inc()
            try:
                await conn.run()
            finally:
                del self._connections[task]
                self.metrics.connections.dec()
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
