"""``charon flukaio-gateway``: FlukaIO clients (C/Fortran trackers) use charon over plain TCP.

A thin asyncio driver around the sans-IO parts: per connection a :class:`StreamDecoder` in block
mode and a :class:`GatewaySession`. A finished batch is converted to photons, simulated either by
a v1 endpoint (``gateway.router``: ``charon serve`` or ``charon router``, through the Lazy Pirate
client) or by a local engine, and answered with hit particles plus EOB, written whole in one
write. Conversion and simulation run on a per-connection worker thread, so the event loop keeps
serving every other connection. Any protocol error, timeout or failed simulation closes only
that connection, without a reply (FlukaIO has no error message), after one log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from charon.engine.base import DetectorInfo, Hits, Photons, Simulator
from charon.errors import ConfigError
from charon.flukaio import codec, mapping
from charon.flukaio import metrics as m
from charon.flukaio.codec import FlukaIOProtocolError, Layout, StreamDecoder
from charon.flukaio.session import Batch, Close, GatewaySession, Send, Simulate
from charon.settings import Settings

log = logging.getLogger("charon.flukaio.gateway")

_READ_BYTES = 65536
_LISTEN = re.compile(r"^tcp://(\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\*|[0-9]{1,5})$")


def parse_listen(endpoint: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` -> (host, port); ``*`` host = every interface of both families (""), ``*`` port = any."""
    match = _LISTEN.match(endpoint)
    if match is None:
        raise ConfigError(f"invalid setting gateway.listen = {endpoint!r}: FlukaIO needs tcp://HOST:PORT")
    host, port = match.groups()
    host = "" if host == "*" else host.strip("[]")
    number = 0 if port == "*" else int(port)
    if number > 65535:
        raise ConfigError(f"invalid setting gateway.listen = {endpoint!r}: port above 65535")
    return host, number


class SimulationError(Exception):
    """A batch could not be simulated (engine exception, router unreachable or refusing)."""


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
        """Shared: nothing to release per connection."""


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

    def __init__(self, endpoint: str, timeout_s: float, retries: int, cache: _DetectorCache) -> None:
        from charon.client import Client

        self._client = Client(endpoint, timeout_s=timeout_s, retries=retries)
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
        raise SimulationError(f"{type(exc).__name__}: {exc}") from exc
    return body + codec.EOB_BYTES, len(photons), skipped, len(hits)


class Gateway:
    """The listening gateway; ``backend_factory`` gives each connection its backend."""

    def __init__(self, settings: Settings, backend_factory: Callable[[], Backend]) -> None:
        self.settings = settings
        self.gw = settings.gateway
        self._backend_factory = backend_factory
        self._layout = Layout.from_setting(self.gw.layout)
        self._server: asyncio.Server | None = None
        self._open = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def open_connections(self) -> int:
        return self._open

    async def start(self) -> tuple[str, int]:
        host, port = parse_listen(self.gw.listen)
        # Every interface of both families; with a free port ("*" or 0) asyncio would give each
        # family its own port, so then IPv4 alone.
        bind_host = host or (None if port else "0.0.0.0")
        self._server = await asyncio.start_server(self._accept, bind_host, port, backlog=128)
        bound = self._server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = _peer_name(writer)
        try:
            if self._open >= self.gw.max_connections:
                log.warning("flukaio %s: refused, %d connections already open (gateway.max_connections)",
                            peer, self._open)
                m.error("too_many_connections")
                return
            self._open += 1
            m.CONNECTIONS.inc()
            try:
                await self._serve(peer, reader, writer)
            finally:
                self._open -= 1
                m.CONNECTIONS.dec()
        finally:
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()  # a peer that does not read must not hold the socket open
            else:
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            self._tasks.discard(task)

    async def _serve(self, peer: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        gw = self.gw
        decoder = StreamDecoder(self._layout, blocks=True)
        session = GatewaySession(echo=gw.echo, max_batch_particles=gw.max_batch_particles)
        loop = asyncio.get_running_loop()
        executor: ThreadPoolExecutor | None = None
        backend: Backend | None = None
        warned_skip = False
        log.info("flukaio %s: connected", peer)
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(_READ_BYTES), gw.idle_timeout_s)
                except TimeoutError:
                    held = f", {decoder.buffered} bytes of an incomplete message held" if decoder.buffered else ""
                    log.warning("flukaio %s: nothing received for %g s (gateway.idle_timeout_s)%s; closing",
                                peer, gw.idle_timeout_s, held)
                    m.error("timeout")
                    return
                if not data:
                    decoder.check_eof()
                    if not session.finished:
                        log.warning("flukaio %s: peer closed the connection before END", peer)
                        m.error("connection_lost")
                    return
                for message in decoder.feed(data):
                    for action in session.handle(message):
                        if isinstance(action, Send):
                            await self._write(writer, action.data)
                        elif isinstance(action, Simulate):
                            if executor is None:
                                executor = ThreadPoolExecutor(1, thread_name_prefix="flukaio-batch")
                                backend = await loop.run_in_executor(executor, self._make_backend)
                            assert backend is not None
                            reply, photons, skipped, hits = await loop.run_in_executor(
                                executor, _answer_batch, backend, action.batch, decoder.layout,
                                self.settings.engine.seed)
                            await self._write(writer, reply)
                            m.BATCHES.inc()
                            m.PARTICLES.labels(kind="photon").inc(photons)
                            m.PARTICLES.labels(kind="skipped").inc(skipped)
                            m.PARTICLES.labels(kind="hit").inc(hits)
                            if skipped:
                                log.log(logging.DEBUG if warned_skip else logging.INFO,
                                        "flukaio %s: event %d: skipped %d particles that are not photons "
                                        "(counted in charon_gateway_particles_total{kind=\"skipped\"})",
                                        peer, action.batch.event_id, skipped)
                                warned_skip = True
                            log.debug("flukaio %s: event %d (ipt %s): %d photons -> %d hits", peer,
                                      action.batch.event_id, action.batch.ipt, photons, hits)
                        elif isinstance(action, Close):
                            log.info("flukaio %s: END answered; closing", peer)
                            return
                    if isinstance(message, codec.Hsk):
                        log.info("flukaio %s: handshake ok (key %d)", peer, session.key)
                    elif isinstance(message, codec.Conf | codec.IntVar | codec.DbleVar):
                        log.info("flukaio %s: %s ignored", peer, message)
        except FlukaIOProtocolError as exc:
            log.warning("flukaio %s: %s (reason=%s); closing without reply", peer, exc, exc.reason)
            m.error(exc.reason)
        except SimulationError as exc:
            log.error("flukaio %s: simulation failed: %s; closing without reply", peer, exc)
            m.error("simulation_failed")
        except _WriteTimeout:
            log.warning("flukaio %s: reply not written within %g s (gateway.write_timeout_s); closing",
                        peer, gw.write_timeout_s)
            m.error("write_timeout")
        except OSError as exc:
            log.warning("flukaio %s: connection lost: %s", peer, exc)
            m.error("connection_lost")
        except Exception:
            log.exception("flukaio %s: internal error; closing without reply", peer)
            m.error("internal_error")
        finally:
            if executor is not None:
                if backend is not None:
                    executor.submit(backend.close)
                executor.shutdown(wait=False)

    def _make_backend(self) -> Backend:
        try:
            return self._backend_factory()
        except Exception as exc:
            raise SimulationError(f"no simulator: {type(exc).__name__}: {exc}") from exc

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        """Whole messages in one write; waits (bounded) until the kernel has taken them."""
        writer.write(data)
        try:
            await asyncio.wait_for(writer.drain(), self.gw.write_timeout_s)
        except TimeoutError:
            raise _WriteTimeout from None


class _WriteTimeout(Exception):
    pass


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def make_backend_factory(settings: Settings) -> Callable[[], Backend]:
    """Router client per connection when ``gateway.router`` is set, else one shared local engine."""
    router = settings.gateway.router
    if router is not None:
        cache = _DetectorCache()
        timeout_s, retries = settings.client.timeout_s, settings.client.retries
        return lambda: RouterBackend(router, timeout_s, retries, cache)
    from charon.engine.registry import make_simulator

    local = LocalBackend(make_simulator(settings.engine))
    return lambda: local


async def _run(settings: Settings, backend_factory: Callable[[], Backend]) -> int:
    from charon.health import start_health
    from charon.runtime import announce

    gateway = Gateway(settings, backend_factory)
    host, port = await gateway.start()
    health, metrics_addr = start_health(settings.metrics, default_port=0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    mode = "echo" if settings.gateway.echo else (
        f"router {settings.gateway.router}" if settings.gateway.router else f"engine {settings.engine.backend}")
    log.info("flukaio gateway listening on %s:%d (layout %s, %s)", host, port, settings.gateway.layout, mode)
    if health is not None:
        health.set_ready(True)
    announce(endpoint=f"tcp://{shown}:{port}", metrics=metrics_addr)
    try:
        await stop.wait()
        log.info("stopping: closing %d connections", gateway.open_connections)
    finally:
        await gateway.stop()
        if health is not None:
            health.stop()
    return 0


def main(settings: Settings) -> int:
    """Run the gateway until SIGTERM/SIGINT; returns the exit status."""
    parse_listen(settings.gateway.listen)
    if settings.gateway.echo:
        def factory() -> Backend:
            raise AssertionError("echo mode never simulates")
    else:
        factory = make_backend_factory(settings)
    return asyncio.run(_run(settings, factory))
