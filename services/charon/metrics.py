"""Prometheus metrics: the names are a public interface (dashboards, alerts, autoscaling use them).

Base units, bounded labels only: no per-event, per-client or per-run labels. Each service creates
its metric families in its own :class:`~prometheus_client.CollectorRegistry` (as client_python's
registries are meant to be used), so several services can run in one process (the in-process
tests do) and each ``/metrics`` shows only its own. :func:`new_registry` adds the process, platform
and GC collectors the default registry would have. Router and simple server export
:class:`RequestMetrics`; workers export :class:`WorkerMetrics` (the ``charon_worker_*`` family).
"""

from __future__ import annotations

from typing import Any, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from charon.protocol import tokens

_DURATION_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)


def new_registry() -> CollectorRegistry:
    """A registry for one service, with the process, platform and GC collectors."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def auth_refused(registry: CollectorRegistry) -> Counter:
    """``charon_auth_refused_total{socket}``: connections refused at the CURVE handshake or by an
    allow-list (the peer gets no reply). Every service that refuses peers exports it, under this one
    definition, in its own registry."""
    return Counter("charon_auth_refused_total",
                   "Connection attempts refused at the CURVE handshake (no CURVE, another server key, or a "
                   "client key not allowed) or by an allow-list of networks, by server socket", ["socket"],
                   registry=registry)


class RequestMetrics:
    """Client requests answered by ``charon serve`` or ``charon router``, and the router's queue."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.auth_refused = auth_refused(registry)
        self.requests = Counter("charon_requests_total", "Client requests answered, by request kind and outcome",
                                ["kind", "outcome"], registry=registry)
        self.photons = Counter("charon_photons_total", "Photons of PHOTONDATA requests answered with SIM_COMPLETE and of v2 events simulated",
                               registry=registry)
        self.hits = Counter("charon_hits_total", "Hits returned in SIM_COMPLETE replies and v2 RESULTs", registry=registry)
        self.request_duration = Histogram(
            "charon_request_duration_seconds",
            "Request latency by phase: queue wait, service (simulation incl. transfer), total",
            ["phase"], buckets=_DURATION_BUCKETS, registry=registry,
        )
        self.replies_dropped = Counter(
            "charon_replies_dropped_total",
            "Replies not sent: hwm = the client connection already had limits.client_send_hwm replies "
            "unread; gone = the connection had closed",
            ["reason"], registry=registry,
        )
        for reason in ("hwm", "gone"):  # every series exists from the start (alerts, dashboards)
            self.replies_dropped.labels(reason)
        self.client_connections = Gauge("charon_client_connections", "Client connections open now",
                                        registry=registry)
        self.client_connections_refused = Counter(
            "charon_client_connections_refused_total",
            "Client connections closed at once because limits.max_client_connections were open",
            registry=registry,
        )
        self.runs_open = Gauge("charon_runs_open", "Async-mode runs open (RUN_BEGIN seen, file not closed yet)",
                               registry=registry)
        self.run_events_written = Counter("charon_run_events_written_total",
                                          "Async-mode events written (flushed and fsynced) to run files",
                                          registry=registry)
        self.runs_closed = Counter("charon_runs_closed_total",
                                   "Async-mode runs closed, by reason (run_end, idle, replaced)", ["reason"],
                                   registry=registry)


class RouterMetrics(RequestMetrics):
    """:class:`RequestMetrics` plus the router's queue, pool and worker-loss families."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.queue_depth = Gauge("charon_queue_depth", "Requests waiting for a worker", registry=registry)
        self.queue_bytes = Gauge("charon_queue_bytes", "Bytes of request frames waiting for a worker",
                                 registry=registry)
        self.workers = Gauge("charon_workers", "Registered workers by state", ["state"], registry=registry)
        self.in_flight = Gauge("charon_in_flight", "Requests being simulated by workers", registry=registry)
        self.requeued = Counter("charon_requeued_total",
                                "Requests put back in the queue after their worker was lost", registry=registry)
        self.deduplicated = Counter("charon_deduplicated_total",
                                    "Resent requests answered from another requester's simulation",
                                    registry=registry)
        self.workers_refused = Counter("charon_workers_refused_total",
                                       "Workers refused at registration, by reason", ["reason"], registry=registry)
        self.workers_expired = Counter(
            "charon_workers_expired_total",
            "Workers declared dead: missed heartbeats, or their connection closed while registered",
            registry=registry,
        )
        self.execution_deadlines = Counter(
            "charon_execution_deadlines_total",
            "Requests taken back from a worker that held them past router.execution_deadline_s",
            registry=registry,
        )
        self.workers_expelled = Counter(
            "charon_workers_expelled_total",
            "Workers expelled after router.deadline_expel_after execution deadlines missed in a row",
            registry=registry,
        )


class WorkerMetrics:
    """What one ``charon worker`` simulated, and whether it is registered."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.photons = Counter("charon_worker_photons_total", "Photons simulated by this worker", registry=registry)
        self.hits = Counter("charon_worker_hits_total", "Hits produced by this worker", registry=registry)
        self.requests = Counter("charon_worker_requests_total", "Requests handled by this worker, by outcome",
                                ["outcome"], registry=registry)
        self.simulation_seconds = Histogram("charon_worker_simulation_seconds", "Engine time per simulate() call",
                                            buckets=_DURATION_BUCKETS, registry=registry)
        self.connected = Gauge("charon_worker_connected", "1 while this worker is registered with a router",
                               registry=registry)
        self.run_events_written = Counter("charon_worker_run_events_written_total",
                                          "Async-mode events this worker wrote to run files", registry=registry)


_KINDS: Final = {
    tokens.PING: "ping",
    tokens.RUN_BEGIN: "run_begin",
    tokens.RUN_END: "run_end",
    tokens.DETECTOR_INFO: "detector_info",
    tokens.PHOTONDATA: "photondata",
}


def kind_label(header: bytes) -> str:
    """The bounded ``kind`` label of a request header."""
    return _KINDS.get(header, "unknown")


class RunCounts:
    """Keeps the async-run families of :class:`RequestMetrics` in step with a run ledger
    (:class:`charon.runs.ledger.RunLedger`, which counts in plain integers): call :meth:`sync`
    after handing the ledger work."""

    def __init__(self, metrics: RequestMetrics, ledger: object) -> None:
        self.metrics = metrics
        self.ledger: Any = ledger
        self._written = 0
        self._closed: dict[str, int] = {}
        metrics.runs_open.set_function(lambda: self.ledger.open_runs)

    def sync(self) -> None:
        written = self.ledger.events_written
        if written > self._written:
            self.metrics.run_events_written.inc(written - self._written)
            self._written = written
        for reason, n in self.ledger.closed_runs.items():
            before = self._closed.get(reason, 0)
            if n > before:
                self.metrics.runs_closed.labels(reason).inc(n - before)
                self._closed[reason] = n
