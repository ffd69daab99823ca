"""Prometheus metrics of the FlukaIO gateway (public names; bounded label values)."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge

from charon.flukaio.codec import REASONS

#: Reasons a gateway connection ends abnormally: every codec/session reason plus the driver's.
ERROR_REASONS: Final[tuple[str, ...]] = (
    *REASONS,
    "timeout",               # no complete message within gateway.idle_timeout_s
    "write_timeout",         # a reply could not be written within gateway.write_timeout_s
    "simulation_failed",     # the engine or the router failed the batch
    "too_many_connections",  # refused: gateway.max_connections already open
    "connection_lost",       # reset or closed by the peer before END
    "shutdown",              # closed by the gateway's drain (SIGTERM) before END
    "internal_error",        # a defect in the gateway itself (logged with its traceback)
)
PARTICLE_KINDS: Final = ("photon", "skipped", "hit")


class GatewayMetrics:
    """The gateway's metric families, in the registry of one gateway."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.connections = Gauge("charon_gateway_connections", "Open FlukaIO connections", registry=registry)
        self.batches = Counter("charon_gateway_batches_total", "FlukaIO batches (EOB) answered", registry=registry)
        self.particles = Counter(
            "charon_gateway_particles_total",
            "FlukaIO particles: photons received, other particles skipped, hits sent back",
            ["kind"], registry=registry,
        )
        self.errors = Counter(
            "charon_gateway_errors_total", "FlukaIO connections closed because of an error", ["reason"],
            registry=registry,
        )
        for kind in PARTICLE_KINDS:
            self.particles.labels(kind=kind)
        for reason in ERROR_REASONS:
            self.errors.labels(reason=reason)

    def error(self, reason: str) -> None:
        self.errors.labels(reason=reason if reason in ERROR_REASONS else "unexpected").inc()
