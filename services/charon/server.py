"""``charon serve``: one process that binds a ROUTER socket and answers every request itself.

The detector is loaded (and the engine warmed) *before* the socket is bound, so a client never
waits on a server that cannot answer yet. Requests are handled one at a time in arrival order;
no input can stop the loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import zmq
from prometheus_client import CollectorRegistry

from charon import sockets
from charon.engine.base import Simulator
from charon.health import HealthServer
from charon.liveness import Progress
from charon.metrics import RequestMetrics, new_registry
from charon.process import Stop, open_simulator, run_service
from charon.protocol import v1
from charon.service import Answer, RequestHandler
from charon.settings import Settings

log = logging.getLogger("charon.serve")
_POLL_MS = 200


class Server:
    """The ``charon serve`` service around one simulator (which its caller opened and closes)."""

    stopping = "stopping after the current request"

    def __init__(self, settings: Settings, simulator: Simulator, *, context: zmq.Context[Any] | None = None,
                 registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.handler = RequestHandler(simulator, legacy_pong=settings.server.legacy_pong)
        self.registry = registry if registry is not None else new_registry()
        self.metrics = RequestMetrics(self.registry)
        self.progress = Progress()
        self.clock = clock
        self.http = HealthServer(settings.metrics, 9100, self.registry)
        self.http.health.liveness = self.progress.check(settings.engine.stall_timeout_s, clock)
        self._ctx: zmq.Context[Any] | None = context
        self._own_ctx = False
        self._sock: zmq.Socket[Any] | None = None

    def startup(self) -> dict[str, object]:
        simulator = self.handler.simulator
        log.info("engine %s ready, detector %s, %d channels", simulator.name, simulator.fingerprint[:12],
                 len(simulator.detector_info()))
        metrics_addr = self.http.start()
        self._sock = sockets.serve_socket(self._context())
        endpoint = sockets.bind(self._sock, self.settings.server.bind)
        self.http.health.set_ready(True)
        log.info("serving on %s", endpoint)
        return {"endpoint": endpoint, "metrics": metrics_addr, "fingerprint": simulator.fingerprint}

    def run(self, stop: Stop) -> int:
        assert self._sock is not None, "startup() first"
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not stop.is_set():
            if poller.poll(_POLL_MS):
                self._answer_one(self._sock)
        return 0

    def _answer_one(self, sock: zmq.Socket[Any]) -> None:
        frames = sock.recv_multipart(copy=False)
        start = time.perf_counter()
        envelope, payload = v1.split_envelope([f.buffer for f in frames])
        self.progress.begin(self.clock())
        try:
            answer = self.handler.handle(payload)
        finally:
            self.progress.end()
        # Counted before the reply leaves, so a client holding a reply always sees it in /metrics.
        self._record(answer, time.perf_counter() - start)
        try:
            sock.send_multipart([*envelope, *answer.reply], copy=False)
        except zmq.ZMQError as exc:
            log.warning("reply to a departed client dropped: %s", exc)

    def _record(self, answer: Answer, seconds: float) -> None:
        """Metrics and the per-request log line of one answered request."""
        m = self.metrics
        m.requests.labels(answer.kind, answer.outcome).inc()
        m.request_duration.labels("service").observe(seconds)
        m.request_duration.labels("total").observe(seconds)
        if answer.outcome == "ok":
            if answer.kind == "photondata":
                m.photons.inc(answer.n_photons)
                m.hits.inc(answer.n_hits)
            log.debug("%s ok: %d photons -> %d hits in %.3f ms", answer.kind, answer.n_photons,
                      answer.n_hits, seconds * 1e3)
        else:
            log.warning("%s rejected (%s): %s", answer.kind, answer.outcome, answer.detail)

    def shutdown(self) -> None:
        self.http.health.set_ready(False)
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._own_ctx and self._ctx is not None:
            self._ctx.term()
            self._ctx, self._own_ctx = None, False
        self.http.stop()

    def _context(self) -> zmq.Context[Any]:
        if self._ctx is None:
            self._ctx, self._own_ctx = zmq.Context(), True
        return self._ctx


def main(settings: Settings) -> int:
    with open_simulator(settings.engine) as simulator:
        return run_service(Server(settings, simulator))
