"""Is the engine still making progress? The liveness signal behind ``/healthz``.

A process can keep answering heartbeats and health checks while its engine is stuck in one call
(a bug, a hung GPU): then it holds its requests for ever. :class:`Progress` records when the
current engine pass began; a pass running longer than ``engine.stall_timeout_s`` turns ``/healthz``
to 503, so Kubernetes restarts the process and the router gives its requests to another worker.
Sans-IO: the clock comes in as an argument.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Progress:
    """The start time of the engine pass in progress (None when idle); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: float | None = None

    def begin(self, now: float) -> None:
        with self._lock:
            self._since = now

    def end(self) -> None:
        with self._lock:
            self._since = None

    def busy_for(self, now: float) -> float:
        """Seconds the current pass has run; 0 when idle."""
        with self._lock:
            return 0.0 if self._since is None else max(0.0, now - self._since)

    def check(self, limit_s: float, clock: Callable[[], float]) -> Callable[[], str | None]:
        """A liveness check for :class:`charon.health.HealthServer`: a reason once a pass exceeds
        ``limit_s`` seconds (never, when ``limit_s`` is 0)."""

        def liveness() -> str | None:
            if limit_s <= 0:
                return None
            busy = self.busy_for(clock())
            if busy > limit_s:
                return (f"engine stalled: one pass has run {busy:.0f} s, longer than "
                        f"engine.stall_timeout_s = {limit_s:g} s")
            return None

        return liveness
