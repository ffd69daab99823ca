"""Prometheus metrics: the names are a public interface (dashboards, alerts, autoscaling use them).

Base units, bounded labels only: no per-event, per-client or per-run labels. Router and simple
server export the request metrics; workers export the ``charon_worker_*`` family.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

from charon.protocol import tokens

_DURATION_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)

REQUESTS = Counter(
    "charon_requests_total", "Client requests answered, by request kind and outcome", ["kind", "outcome"]
)
PHOTONS = Counter("charon_photons_total", "Photons in PHOTONDATA requests answered with SIM_COMPLETE")
HITS = Counter("charon_hits_total", "Hits returned in SIM_COMPLETE replies")
QUEUE_DEPTH = Gauge("charon_queue_depth", "Requests waiting for a worker")
QUEUE_BYTES = Gauge("charon_queue_bytes", "Bytes of request frames waiting for a worker")
WORKERS = Gauge("charon_workers", "Registered workers by state", ["state"])
IN_FLIGHT = Gauge("charon_in_flight", "Requests being simulated by workers")
REQUEST_DURATION = Histogram(
    "charon_request_duration_seconds",
    "Request latency by phase: queue wait, service (simulation incl. transfer), total",
    ["phase"],
    buckets=_DURATION_BUCKETS,
)
REQUEUED = Counter("charon_requeued_total", "Requests put back in the queue after their worker was lost")
DEDUPLICATED = Counter(
    "charon_deduplicated_total", "Resent requests answered from another requester's simulation"
)
WORKERS_REFUSED = Counter(
    "charon_workers_refused_total", "Workers refused at registration, by reason", ["reason"]
)
WORKERS_EXPIRED = Counter(
    "charon_workers_expired_total", "Workers declared dead: missed heartbeats, or their connection closed while registered"
)

WORKER_PHOTONS = Counter("charon_worker_photons_total", "Photons simulated by this worker")
WORKER_HITS = Counter("charon_worker_hits_total", "Hits produced by this worker")
WORKER_REQUESTS = Counter(
    "charon_worker_requests_total", "Requests handled by this worker, by outcome", ["outcome"]
)
WORKER_SIM_SECONDS = Histogram(
    "charon_worker_simulation_seconds", "Engine time per simulate() call", buckets=_DURATION_BUCKETS
)
WORKER_CONNECTED = Gauge("charon_worker_connected", "1 while this worker is registered with a router")

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
