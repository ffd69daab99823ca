"""``charon router``: the zmq loop around :class:`charon.router.state.RouterState`.

It binds a client-facing ROUTER (v1) and a worker-facing ROUTER (CHARONW1), hands every message
and timer tick to the state machine and sends the actions it returns. Messages are received with
``copy=False`` and the received ``zmq.Frame`` objects themselves are stored and forwarded, so
photon frames cross the router without being copied or parsed. No numpy is imported here. With
``security.curve_secret_key`` both sockets are CURVE servers (:mod:`charon.curve`); a
:class:`charon.auth.Guard` admits the listed keys and counts the refused handshakes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import zmq
from prometheus_client import CollectorRegistry

from charon import curve, sockets
from charon.auth import Guard
from charon.connections import ConnectionGuard, check_descriptors, raise_descriptor_limit
from charon.health import HealthServer
from charon.metrics import RouterMetrics, RunCounts, new_registry
from charon.process import Stop, run_service
from charon.protocol import v1
from charon.protocol.v1 import Frame, as_view
from charon.router.state import Action, RouterState, ToClient
from charon.settings import Settings

log = logging.getLogger("charon.router")

#: Longest poll, so a stop request is seen promptly even with no traffic and no timers due.
_MAX_POLL_S = 0.2
#: Messages taken from one socket before looking at the other (fairness between the two sides).
_BATCH = 64
#: How long the shutdown DISCONNECTs may take to leave before the worker socket closes.
_SHUTDOWN_LINGER_MS = 500


class PrometheusObserver:
    """Maps the state machine's reports onto :class:`charon.metrics.RouterMetrics`.

    Reports are only recorded here and applied by :meth:`flush`, which the loop calls after it has
    sent the replies: metric updates never sit between a worker's reply and the client.
    """

    def __init__(self, metrics: RouterMetrics) -> None:
        self.metrics = metrics
        self._requests: dict[tuple[str, str], Any] = {}
        self._queue = metrics.request_duration.labels("queue")
        self._service = metrics.request_duration.labels("service")
        self._total = metrics.request_duration.labels("total")
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
                child = self._requests[kind, outcome] = self.metrics.requests.labels(kind, outcome)
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
            self.metrics.photons.inc(self._photons)
        if self._hits:
            self.metrics.hits.inc(self._hits)
        self._answered.clear()
        self._queue_s.clear()
        self._service_s.clear()
        self._photons = self._hits = 0

    def requeued(self) -> None:
        self.metrics.requeued.inc()

    def deduplicated(self) -> None:
        self.metrics.deduplicated.inc()

    def refused(self, reason: str) -> None:
        self.metrics.workers_refused.labels(reason).inc()

    def expired(self) -> None:
        self.metrics.workers_expired.inc()

    def overdue(self) -> None:
        self.metrics.execution_deadlines.inc()

    def expelled(self) -> None:
        self.metrics.workers_expelled.inc()


def export_gauges(metrics: RouterMetrics, state: RouterState) -> None:
    """Gauges read the state when scraped: nothing to update per request."""
    metrics.queue_depth.set_function(lambda: state.queued)
    metrics.queue_bytes.set_function(lambda: state.queued_bytes)
    metrics.in_flight.set_function(lambda: state.in_flight)
    metrics.workers.labels("idle").set_function(lambda: state.idle_workers)
    metrics.workers.labels("busy").set_function(lambda: state.busy_workers)


class Sender:
    """Sends the state machine's actions; a worker found unreachable is reported back to it."""

    def __init__(self, state: RouterState, frontend: zmq.Socket[Any], backend: zmq.Socket[Any],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.state = state
        self.frontend = frontend
        self.backend = backend
        self.clock = clock
        #: Told the reason of every reply that could not be sent (see :func:`charon.sockets.send_reply`).
        self.dropped: Callable[[str], None] = _ignore

    def __call__(self, actions: list[Action]) -> None:
        for action in actions:
            if type(action) is ToClient:
                reason = sockets.send_reply(self.frontend, action.frames)
                if reason is not None:
                    self.dropped(reason)
                continue
            try:
                self.backend.send_multipart(action.frames, copy=False)
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EHOSTUNREACH:
                    log.warning("message to a worker dropped: %s", exc)
                    continue
                identity = bytes(as_view(action.frames[0]))
                self(self.state.on_worker_gone(identity, self.clock()))


class Router:
    """The ``charon router`` service: two bound sockets and the state machine between them."""

    stopping = "stopping"

    def __init__(self, settings: Settings, *, context: zmq.Context[Any] | None = None,
                 registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else new_registry()
        self.metrics = RouterMetrics(self.registry)
        self.observer = PrometheusObserver(self.metrics)
        for socket in (sockets.CLIENTS, sockets.WORKERS):  # 0 with CURVE off: nothing is refused
            self.metrics.auth_refused.labels(socket)
        self.state = RouterState(settings.router, settings.heartbeat, self.observer, settings.v2, settings.limits,
                                 runs=settings.runs)
        export_gauges(self.metrics, self.state)
        self.run_counts = RunCounts(self.metrics, self.state.runs) if self.state.runs is not None else None
        self.clock = clock
        self.http = HealthServer(settings.metrics, 9100, self.registry)
        self._ctx: zmq.Context[Any] | None = context
        self._own_ctx = False
        self.frontend: zmq.Socket[Any] | None = None
        self.backend: zmq.Socket[Any] | None = None
        self._guard: Guard | None = None
        self.guard: ConnectionGuard | None = None

    def startup(self) -> dict[str, object]:
        keys = curve.router_keys(self.settings.security)
        metrics_addr = self.http.start()
        if self._ctx is None:
            self._ctx, self._own_ctx = zmq.Context(), True
        limits = self.settings.limits
        self.frontend = sockets.router_frontend(self._ctx, keys.clients if keys else None, limits=limits)
        self.backend = sockets.router_backend(self._ctx, keys.workers if keys else None)
        if keys is not None:
            self._guard = Guard(self._ctx, self.metrics.auth_refused)
            # The frontend's monitor is the connection guard's; it hands failed handshakes on.
            self._guard.protect(self.frontend, sockets.CLIENTS, keys.clients, monitor=False)
            self._guard.protect(self.backend, sockets.WORKERS, keys.workers)
            self._guard.start()
            allowed = keys.clients.allowed
            log.info("CURVE on both sockets: %s, %d allowed worker key(s)",
                     "any client key" if allowed is None else f"{len(allowed)} allowed client key(s)",
                     len(keys.workers.allowed or ()))
        self.guard = ConnectionGuard(self.frontend, limits.max_client_connections, self.metrics,
                                     handshake=self._guard.handshake_event if self._guard else None)
        r = self.settings.router
        endpoint = sockets.bind(self.frontend, r.bind)
        workers_endpoint = sockets.bind(self.backend, r.workers_bind)
        descriptors = check_descriptors(limits.max_client_connections)
        log.info("limits: requests up to %d bytes (%d photons), %d unread replies per client, %d client "
                 "connections (descriptor limit %d)", limits.max_request_bytes, limits.max_request_photons,
                 limits.client_send_hwm, limits.max_client_connections, descriptors)
        self.http.health.set_ready(True)
        log.info("clients on %s, workers on %s; queue %d requests / %d bytes, deadline %g s",
                 endpoint, workers_endpoint, r.queue_max_requests, r.queue_max_bytes, r.queue_deadline_s)
        return {"endpoint": endpoint, "workers_endpoint": workers_endpoint, "metrics": metrics_addr}

    def run(self, stop: Stop) -> int:
        """The loop: poll both sockets until the state's next timer; stop when ``stop`` is set."""
        frontend, backend = self.frontend, self.backend
        assert frontend is not None, "startup() first"
        assert backend is not None
        state, clock = self.state, self.clock
        poller = zmq.Poller()
        poller.register(frontend, zmq.POLLIN)
        poller.register(backend, zmq.POLLIN)
        guard = self.guard
        if guard is not None:
            poller.register(guard.socket, zmq.POLLIN)
        send = Sender(state, frontend, backend, clock)
        send.dropped = sockets.DroppedReplies(self.metrics.replies_dropped)
        async_mode = state.runs is not None
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
                    peer = sockets.peer_address(frames[0]) if async_mode else ""
                    send(state.on_client(cast(list[Frame], frames[:n]), cast(list[Frame], frames[n:]), clock(),
                                         peer))
                    if not cast(int, frontend.get(zmq.EVENTS)) & zmq.POLLIN:
                        break
            if guard is not None and guard.socket in ready:
                guard.handle()
            now = clock()
            if now >= state.next_wakeup():
                send(state.on_tick(now))
            state.housekeeping(now)
            self.observer.flush()
            if self.run_counts is not None:
                self.run_counts.sync()  # (a client that has its RUN_END ACK may see them a loop late)
        return 0

    def shutdown(self) -> None:
        """Not ready; tell every worker to go to the next router; close the sockets."""
        self.http.health.set_ready(False)
        if self.frontend is not None and self.backend is not None:
            self.backend.setsockopt(zmq.ROUTER_MANDATORY, 0)  # workers already gone need no advice
            Sender(self.state, self.frontend, self.backend, self.clock)(self.state.shutdown())
            self.backend.setsockopt(zmq.LINGER, _SHUTDOWN_LINGER_MS)
        if self.guard is not None:
            self.guard.close()
            self.guard = None
        for sock in (self.frontend, self.backend):
            if sock is not None:
                sock.close()
        self.frontend = self.backend = None
        if self._guard is not None:
            self._guard.stop()
            self._guard = None
        if self._own_ctx and self._ctx is not None:
            self._ctx.term()
            self._ctx, self._own_ctx = None, False
        self.http.stop()


def _ignore(reason: str) -> None:
    del reason


def main(settings: Settings) -> int:
    raise_descriptor_limit()
    return run_service(Router(settings))


def _envelope_length(frames: Sequence[zmq.Frame]) -> int:
    """How many leading frames are routing envelope (identity, delimiter)."""
    if len(frames) >= 2 and len(frames[1]) == 0:
        return 2  # REQ peer: the common case, decided without touching the payload
    envelope, _ = v1.split_envelope([f.buffer for f in frames])
    return len(envelope)
