"""Prometheus metrics of the FlukaIO gateway (public names; bounded label values)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge

from charon.flukaio.codec import REASONS
from charon.flukaio.mapping import NOT_PROPAGATED
from charon.metrics import auth_refused

#: Reasons a gateway connection ends abnormally: every codec/session reason plus the driver's.
ERROR_REASONS: Final[tuple[str, ...]] = (
    *REASONS,
    "timeout",               # no complete message within gateway.idle_timeout_s
    "write_timeout",         # a reply could not be written within gateway.write_timeout_s
    "simulation_failed",     # the engine or the router failed the batch
    "too_many_connections",  # refused: gateway.max_connections already open, none idle enough to reap
    "idle_reaped",           # closed to make room for a new client (idle >= gateway.reap_idle_s)
    "connection_lost",       # reset or closed by the peer before END
    "shutdown",              # closed by the gateway's drain (SIGTERM) before END
    "internal_error",        # a defect in the gateway itself (logged with its traceback)
)
PARTICLE_KINDS: Final = ("photon", "skipped", "hit")
#: The ``socket`` label of the gateway's refusals in ``charon_auth_refused_total``.
AUTH_SOCKET: Final = "flukaio"


class GatewayMetrics:
    """The gateway's metric families, in the registry of one gateway."""

    def __init__(self, registry: CollectorRegistry, inflight: Callable[[], float] = lambda: 0.0) -> None:
        self.connections = Gauge("charon_gateway_connections", "Open FlukaIO connections", registry=registry)
        self.batches = Counter("charon_gateway_batches_total", "FlukaIO batches (EOB) answered", registry=registry)
        self.particles = Counter(
            "charon_gateway_particles_total",
            "FlukaIO particles: photons propagated, particles not propagated (skipped), hits sent back",
            ["kind"], registry=registry,
        )
        self.not_propagated = Counter(
            "charon_gateway_not_propagated_total",
            "Particles of a batch not propagated: not a photon, unusable pc, non-finite position/time or "
            "direction, finished (terminal flags with gateway.gen=flags)", ["reason"], registry=registry,
        )
        self.abandoned = Counter(
            "charon_gateway_batches_abandoned_total",
            "Batches whose simulation was stopped because their client had gone", registry=registry,
        )
        self.engine_calls = Counter(
            "charon_gateway_engine_calls_total",
            "Engine (or router) calls, one per chunk of at most gateway.chunk_photons photons", registry=registry,
        )
        self.inflight = Gauge(
            "charon_gateway_inflight_particles",
            "Particles held by the gateway: batches being received or simulated (gateway.max_inflight_particles)",
            registry=registry,
        )
        self.inflight.set_function(inflight)
        self.read_waits = Counter(
            "charon_gateway_read_waits_total",
            "Times a connection was not read because gateway.max_inflight_particles was reached",
            registry=registry,
        )
        self.errors = Counter(
            "charon_gateway_errors_total", "FlukaIO connections closed because of an error", ["reason"],
            registry=registry,
        )
        self.refused = auth_refused(registry).labels(socket=AUTH_SOCKET)
        for kind in PARTICLE_KINDS:
            self.particles.labels(kind=kind)
        for reason in NOT_PROPAGATED:
            self.not_propagated.labels(reason=reason)
        for reason in ERROR_REASONS:
            self.errors.labels(reason=reason)

    def error(self, reason: str) -> None:
        self.errors.labels(reason=reason if reason in ERROR_REASONS else "unexpected").inc()
