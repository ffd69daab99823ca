"""``charon serve``: one process that binds a ROUTER socket and answers every request itself.

The detector is loaded (and the engine warmed) *before* the socket is bound, so a client never
waits on a server that cannot answer yet. Requests are handled one at a time in arrival order;
no input can stop the loop.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import zmq

from charon import metrics
from charon.engine.registry import make_simulator
from charon.health import start_health
from charon.liveness import Progress
from charon.protocol import v1
from charon.runtime import announce, resolve_endpoint, set_on_signal
from charon.service import Answer, RequestHandler
from charon.settings import Settings

log = logging.getLogger("charon.serve")
_POLL_MS = 200


def main(settings: Settings) -> int:
    simulator = make_simulator(settings.engine)
    handler = RequestHandler(simulator, legacy_pong=settings.server.legacy_pong)
    log.info("engine %s ready, detector %s, %d channels", simulator.name, simulator.fingerprint[:12],
             len(simulator.detector_info()))

    stop = threading.Event()
    set_on_signal(stop, "stopping after the current request")
    progress = Progress()
    health, metrics_addr = start_health(settings.metrics, default_port=9100,
                                        liveness=progress.check(settings.engine.stall_timeout_s, time.monotonic))
    ctx: zmq.Context[Any] = zmq.Context.instance()
    sock: zmq.Socket[Any] = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IPV6, 1)  # IPv6 endpoints too; libzmq falls back to IPv4 where it must
    try:
        sock.bind(settings.server.bind)
    except zmq.ZMQError as exc:
        log.error("cannot bind %s: %s", settings.server.bind, exc)
        sock.close()
        if health:
            health.stop()
        return 1
    endpoint = resolve_endpoint(sock)
    if health:
        health.set_ready(True)
    log.info("serving on %s", endpoint)
    announce(endpoint=endpoint, metrics=metrics_addr, fingerprint=simulator.fingerprint)
    try:
        serve_forever(sock, handler, stop, progress)
    finally:
        sock.close(linger=0)
        if health:
            health.stop()
        close = getattr(simulator, "close", None)
        if callable(close):
            close()
    return 0


def serve_forever(sock: zmq.Socket[Any], handler: RequestHandler, stop: threading.Event,
                  progress: Progress | None = None) -> None:
    progress = progress or Progress()
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    while not stop.is_set():
        if not poller.poll(_POLL_MS):
            continue
        frames = sock.recv_multipart(copy=False)
        start = time.perf_counter()
        envelope, payload = v1.split_envelope([f.buffer for f in frames])
        progress.begin(time.monotonic())
        try:
            answer = handler.handle(payload)
        finally:
            progress.end()
        # Counted before the reply leaves, so a client holding a reply always sees it in /metrics.
        record(answer, time.perf_counter() - start)
        try:
            sock.send_multipart([*envelope, *answer.reply], copy=False)
        except zmq.ZMQError as exc:
            log.warning("reply to a departed client dropped: %s", exc)


def record(answer: Answer, seconds: float) -> None:
    """Metrics and the per-request log line of one answered request."""
    metrics.REQUESTS.labels(answer.kind, answer.outcome).inc()
    metrics.REQUEST_DURATION.labels("service").observe(seconds)
    metrics.REQUEST_DURATION.labels("total").observe(seconds)
    if answer.outcome == "ok":
        if answer.kind == "photondata":
            metrics.PHOTONS.inc(answer.n_photons)
            metrics.HITS.inc(answer.n_hits)
        log.debug("%s ok: %d photons -> %d hits in %.3f ms", answer.kind, answer.n_photons,
                  answer.n_hits, seconds * 1e3)
    else:
        log.warning("%s rejected (%s): %s", answer.kind, answer.outcome, answer.detail)
