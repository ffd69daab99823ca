"""Prometheus metrics of the FlukaIO gateway (public names; bounded label values)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge

from charon.flukaio.codec import REASONS

#: Reasons a gateway connection ends abnormally: every codec/session reason plus the driver's.
ERROR_REASONS: Final[tuple[str, ...]] = (
    *REASONS,
    "timeout",               # no complete message within gateway.idle_timeout_s
    "write_timeout",         # a reply could not be written within gateway.write_timeout_s
    "simulation_failed",     # the engine or the router failed the batch
    "too_many_connections",  # refused: gateway.max_connections already open
    "connection_lost",       # reset or closed by the peer before END
    "internal_error",        # a defect in the gateway itself (logged with its traceback)
)
PARTICLE_KINDS: Final = ("photon", "skipped", "hit")

CONNECTIONS: Final = Gauge("charon_gateway_connections", "Open FlukaIO connections")
BATCHES: Final = Counter("charon_gateway_batches_total", "FlukaIO batches (EOB) answered")
PARTICLES: Final = Counter(
    "charon_gateway_particles_total",
    "FlukaIO particles: photons received, other particles skipped, hits sent back",
    ["kind"],
)
ERRORS: Final = Counter(
    "charon_gateway_errors_total", "FlukaIO connections closed because of an error", ["reason"]
)

for _kind in PARTICLE_KINDS:
    PARTICLES.labels(kind=_kind)
for _reason in ERROR_REASONS:
    ERRORS.labels(reason=_reason)


def error(reason: str) -> None:
    ERRORS.labels(reason=reason if reason in ERROR_REASONS else "unexpected").inc()
