"""``charon router``: the zmq loop around :class:`charon.router.state.RouterState`.

It binds a client-facing ROUTER (v1) and a worker-facing ROUTER (CHARONW1), hands every message
and timer tick to the state machine and sends the actions it returns. Messages are received with
``copy=False`` and the received ``zmq.Frame`` objects themselves are stored and forwarded, so
photon frames cross the router without being copied or parsed. No numpy is imported here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, cast

import zmq

from charon import metrics
from charon.health import start_health
from charon.protocol import v1
from charon.protocol.v1 import Frame, as_view
from charon.router.state import Action, RouterState, ToClient
from charon.runtime import announce, resolve_endpoint, set_on_signal
from charon.settings import Settings

log = logging.getLogger("charon.router")

#: Longest poll, so a stop request is seen promptly even with no traffic and no timers due.
_MAX_POLL_S = 0.2
#: Messages taken from one socket before looking at the other (fairness between the two sides).
_BATCH = 64


class PrometheusObserver:
    """Maps the state machine's reports onto the metrics in :mod:`charon.metrics`.

    Reports are only recorded here and applied by :meth:`flush`, which the loop calls after it has
    sent the replies: metric updates never sit between a worker's reply and the client.
    """

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str], Any] = {}
        self._queue = metrics.REQUEST_DURATION.labels("queue")
        self._service = metrics.REQUEST_DURATION.labels("service")
        self._total = metrics.REQUEST_DURATION.labels("total")
        self._answered: list[tuple[str, str, float]] = []
        self._queue_s: list[float] = []
        self._service_s: list[float] = []
        self._photons = 0
        self._hits = 0

    def answered(self, kind: str, outcome: str, total_s: float) -> None:
        self._answered.append((kind, outcome, total_s))

    def dispatched(self, queue_s: float) -> None:
        self._queue_s.append(queue_s)

    def completed(self, n_photons: int, n_hits: int, service_s: float) -> None:
        self._service_s.append(service_s)
        self._photons += n_photons
        self._hits += n_hits

    def flush(self) -> None:
        for kind, outcome, total_s in self._answered:
            child = self._requests.get((kind, outcome))
            if child is None:
                child = self._requests[kind, outcome] = metrics.REQUESTS.labels(kind, outcome)
            child.inc()
            # Rejections are answered at once: counted by outcome above, they would drag the
            # latency percentiles down exactly when the queue overflows.
            if kind == "photondata" and outcome == "ok":
                self._total.observe(total_s)
        for queue_s in self._queue_s:
            self._queue.observe(queue_s)
        for service_s in self._service_s:
            self._service.observe(service_s)
        if self._photons:
            metrics.PHOTONS.inc(self._photons)
        if self._hits:
            metrics.HITS.inc(self._hits)
        self._answered.clear()
        self._queue_s.clear()
        self._service_s.clear()
        self._photons = self._hits = 0

    def requeued(self) -> None:
        metrics.REQUEUED.inc()

    def deduplicated(self) -> None:
        metrics.DEDUPLICATED.inc()

    def refused(self, reason: str) -> None:
        metrics.WORKERS_REFUSED.labels(reason).inc()

    def expired(self) -> None:
        metrics.WORKERS_EXPIRED.inc()


def _export_gauges(state: RouterState) -> None:
    """Gauges read the state when scraped: nothing to update per request."""
    metrics.QUEUE_DEPTH.set_function(lambda: state.queued)
    metrics.QUEUE_BYTES.set_function(lambda: state.queued_bytes)
    metrics.IN_FLIGHT.set_function(lambda: state.in_flight)
    metrics.WORKERS.labels("idle").set_function(lambda: state.idle_workers)
    metrics.WORKERS.labels("busy").set_function(lambda: state.busy_workers)


def _socket(ctx: zmq.Context[Any]) -> zmq.Socket[Any]:
    sock: zmq.Socket[Any] = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IPV6, 1)  # IPv6 endpoints too; libzmq falls back to IPv4 where it must
    # The state machine bounds the queue; zmq must never drop silently at a high-water mark.
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    return sock


def _backend_socket(ctx: zmq.Context[Any]) -> zmq.Socket[Any]:
    sock = _socket(ctx)
    # A send to a worker whose connection closed fails (EHOSTUNREACH) instead of vanishing, so
    # the requests it held are requeued at once (see Sender).
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    return sock


class Sender:
    """Sends the state machine's actions; a worker found unreachable is reported back to it."""

    def __init__(self, state: RouterState, frontend: zmq.Socket[Any], backend: zmq.Socket[Any]) -> None:
        self.state = state
        self.frontend = frontend
        self.backend = backend

    def __call__(self, actions: list[Action]) -> None:
        for action in actions:
            if type(action) is ToClient:
                try:
                    self.frontend.send_multipart(action.frames, copy=False)
                except zmq.ZMQError as exc:
                    log.warning("reply dropped: %s", exc)
                continue
            try:
                self.backend.send_multipart(action.frames, copy=False)
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EHOSTUNREACH:
                    log.warning("message to a worker dropped: %s", exc)
                    continue
                identity = bytes(as_view(action.frames[0]))
                self(self.state.on_worker_gone(identity, time.monotonic()))


def main(settings: Settings) -> int:
    observer = PrometheusObserver()
    state = RouterState(settings.router, settings.heartbeat, observer)
    _export_gauges(state)
    stop = threading.Event()
    set_on_signal(stop, "stopping")
    health, metrics_addr = start_health(settings.metrics, default_port=9100)
    ctx: zmq.Context[Any] = zmq.Context()
    frontend, backend = _socket(ctx), _backend_socket(ctx)
    try:
        for sock, endpoint in ((frontend, settings.router.bind), (backend, settings.router.workers_bind)):
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                log.error("cannot bind %s: %s", endpoint, exc)
                return 1
        endpoint, workers_endpoint = resolve_endpoint(frontend), resolve_endpoint(backend)
        if health:
            health.set_ready(True)
        log.info("clients on %s, workers on %s; queue %d requests / %d bytes, deadline %g s",
                 endpoint, workers_endpoint, settings.router.queue_max_requests,
                 settings.router.queue_max_bytes, settings.router.queue_deadline_s)
        announce(endpoint=endpoint, workers_endpoint=workers_endpoint, metrics=metrics_addr)
        run(state, frontend, backend, stop, observer)
        if health:
            health.set_ready(False)
        backend.setsockopt(zmq.ROUTER_MANDATORY, 0)  # workers already gone need no reconnect advice
        Sender(state, frontend, backend)(state.shutdown())
        backend.setsockopt(zmq.LINGER, 500)  # let the DISCONNECTs leave before the socket closes
        return 0
    finally:
        frontend.close()
        backend.close()
        ctx.term()
        if health:
            health.stop()


def run(state: RouterState, frontend: zmq.Socket[Any], backend: zmq.Socket[Any], stop: threading.Event,
        observer: PrometheusObserver | None = None) -> None:
    """The loop: poll both sockets until the state's next timer; stop when ``stop`` is set."""
    poller = zmq.Poller()
    poller.register(frontend, zmq.POLLIN)
    poller.register(backend, zmq.POLLIN)
    clock = time.monotonic
    send = Sender(state, frontend, backend)
    while not stop.is_set():
        timeout = min(max(state.next_wakeup() - clock(), 0.0), _MAX_POLL_S)
        ready = dict(poller.poll(int(timeout * 1000.0) + 1))
        if backend in ready:
            for _ in range(_BATCH):
                frames = backend.recv_multipart(copy=False)
                send(state.on_worker(frames[0].bytes, cast(list[Frame], frames[1:]), clock()))
                if not cast(int, backend.get(zmq.EVENTS)) & zmq.POLLIN:
                    break
        if frontend in ready:
            for _ in range(_BATCH):
                frames = frontend.recv_multipart(copy=False)
                n = _envelope_length(frames)
                send(state.on_client(cast(list[Frame], frames[:n]), cast(list[Frame], frames[n:]), clock()))
                if not cast(int, frontend.get(zmq.EVENTS)) & zmq.POLLIN:
                    break
        now = clock()
        if now >= state.next_wakeup():
            send(state.on_tick(now))
        state.housekeeping(now)
        if observer is not None:
            observer.flush()


def _envelope_length(frames: Sequence[zmq.Frame]) -> int:
    """How many leading frames are routing envelope (identity, delimiter)."""
    if len(frames) >= 2 and len(frames[1]) == 0:
        return 2  # REQ peer: the common case, decided without touching the payload
    envelope, _ = v1.split_envelope([f.buffer for f in frames])
    return len(envelope)

