"""``charon worker``: a DEALER connected to the router, speaking CHARONW1.

The main thread owns the router socket: it sends READY, heartbeats every interval (also while the
engine is busy on the simulation thread), forwards requests to the simulation thread and replies
back, notices a silent router and reconnects on a fresh socket with exponential backoff, and on
SIGTERM drains (DISCONNECT, finish what it holds, exit within ``worker.drain_grace_s``).
Timing decisions live in :mod:`charon.worker.lifecycle`.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any

import zmq

from charon import metrics
from charon.engine.registry import make_simulator
from charon.health import HealthServer, start_health
from charon.protocol import worker as wp
from charon.runtime import announce, connect_ipv6, set_on_signal
from charon.service import RequestHandler
from charon.settings import Settings
from charon.worker.lifecycle import Backoff, Drain, Link, backoff_for, link_for
from charon.worker.simulation import SimulationThread, Work, unpack_head

log = logging.getLogger("charon.worker")
_MAX_POLL_S = 0.1
_results_ids = itertools.count()


class Worker:
    """One worker process: the socket loop around a :class:`SimulationThread`."""

    def __init__(self, settings: Settings, handler: RequestHandler, health: HealthServer | None,
                 metrics_addr: str | None) -> None:
        self.settings = settings
        self.handler = handler
        self.health = health
        self.metrics_addr = metrics_addr
        self.stop = threading.Event()
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.results_endpoint = f"inproc://charon-worker-results-{next(_results_ids)}"
        self.results: zmq.Socket[Any] = self.ctx.socket(zmq.PULL)
        self.results.setsockopt(zmq.LINGER, 0)
        self.results.bind(self.results_endpoint)
        engine = settings.engine
        self.sim = SimulationThread(handler, self.ctx, self.results_endpoint,
                                    batch_max_photons=engine.batch_max_photons,
                                    batch_max_delay_s=engine.batch_max_delay_s)
        info = handler.simulator.detector_info()
        self.ready_msg = wp.ready(handler.simulator.fingerprint, settings.worker.capacity,
                                  handler.simulator.name, [bytes(f) for f in info.frames()])
        self.generation = 0
        self.in_flight: set[int] = set()
        self.drain: Drain | None = None
        self.announced = False

    # ---- lifecycle -------------------------------------------------------------------------------

    def run(self) -> int:
        self.sim.start()
        backoff = backoff_for(self.settings.worker)
        try:
            while True:
                outcome = self._connection(backoff)
                if outcome == "exit" or self.stop.is_set():
                    return 0
                delay = backoff.next_delay()
                if delay is None:
                    log.error("router %s unreachable after %d reconnects: giving up",
                              self.settings.worker.router, backoff.attempts)
                    return 1
                log.info("reconnecting to %s in %.1f s", self.settings.worker.router, delay)
                if self._sleep(delay):
                    return 0
        finally:
            self._close()

    def _sleep(self, seconds: float) -> bool:
        """Wait out a backoff step (dropping stale results); True if told to stop meanwhile."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self.stop.wait(min(left, _MAX_POLL_S)):
                return True
            self._drop_results()
        return False

    def _drop_results(self) -> None:
        while self.results.poll(0):
            self.results.recv_multipart(copy=False)

    def _close(self) -> None:
        stopped = self.sim.stop(timeout=1.0)
        self.results.close(linger=0)
        if stopped:
            self.ctx.term()
        else:
            log.warning("simulation still running at exit")

    # ---- one connection --------------------------------------------------------------------------

    def _connection(self, backoff: Backoff) -> str:
        """Connect, register and serve until the router is lost ("reconnect") or we leave ("exit")."""
        hb = self.settings.heartbeat
        sock: zmq.Socket[Any] = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IPV6, connect_ipv6(self.settings.worker.router))
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        self.generation += 1
        self.sim.generation = self.generation
        self.in_flight.clear()
        self._drop_results()
        try:
            sock.connect(self.settings.worker.router)
            sock.send_multipart(self.ready_msg)
            link: Link = link_for(hb, time.monotonic())
            if not self.announced:
                self.announced = True
                announce(metrics=self.metrics_addr)
            log.info("READY sent to %s (capacity %d)", self.settings.worker.router, self.settings.worker.capacity)
            return self._serve(sock, link, backoff)
        finally:
            metrics.WORKER_CONNECTED.set(0)
            if self.health:
                self.health.set_ready(False)
            sock.close(linger=0 if self.drain is None else 500)

    def _serve(self, sock: zmq.Socket[Any], link: Link, backoff: Backoff) -> str:
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self.results, zmq.POLLIN)
        clock = time.monotonic
        while True:
            if self.stop.is_set() and self.drain is None:
                self._start_drain(sock, clock())
            timeout = min(max(link.next_wakeup() - clock(), 0.0), _MAX_POLL_S)
            ready = dict(poller.poll(int(timeout * 1000.0) + 1))
            if self.results in ready:
                while self.results.poll(0):
                    self._forward_result(sock, self.results.recv_multipart(copy=False))
            if sock in ready:
                while sock.poll(0):
                    verdict = self._from_router(sock.recv_multipart(copy=False), link, backoff)
                    if verdict:
                        return verdict
            now = clock()
            if self.drain is not None and self.drain.may_exit(now, len(self.in_flight), link):
                if self.in_flight:
                    log.warning("drain grace over with %d request(s) unfinished: the router requeues them",
                                len(self.in_flight))
                sock.send_multipart(wp.disconnect(wp.REASON_EXIT))
                return "exit"
            if link.router_dead(now):
                log.warning("router %s silent for %.1f s: reconnecting", self.settings.worker.router,
                            now - link.last_heard)
                return "reconnect"
            if link.heartbeat_due(now):
                sock.send_multipart(wp.heartbeat())

    def _start_drain(self, sock: zmq.Socket[Any], now: float) -> None:
        grace = self.settings.worker.drain_grace_s
        log.info("draining: %d request(s) in hand, exiting within %g s", len(self.in_flight), grace)
        self.drain = Drain(now + grace)
        if self.health:
            self.health.set_ready(False)
        sock.send_multipart(wp.disconnect(wp.REASON_DRAIN))

    def _forward_result(self, sock: zmq.Socket[Any], frames: list[zmq.Frame]) -> None:
        generation, token = unpack_head(frames[0].buffer)
        if generation != self.generation or token not in self.in_flight:
            return
        self.in_flight.discard(token)
        sock.send_multipart([wp.PROTOCOL, wp.REPLY, wp.token_frame(token), *frames[1:]], copy=False)

    def _from_router(self, frames: list[zmq.Frame], link: Link, backoff: Backoff) -> str | None:
        try:
            msg = wp.decode_from_router([f.buffer for f in frames])
        except wp.WorkerProtocolError as exc:
            log.warning("invalid message from the router dropped: %s", exc)
            return None
        if link.heard(time.monotonic()):
            backoff.reset()
            metrics.WORKER_CONNECTED.set(1)
            if self.health and self.drain is None:
                self.health.set_ready(True)
            log.info("registered with %s", self.settings.worker.router)
        if isinstance(msg, wp.Request):
            self.in_flight.add(msg.token)
            # Keep the received zmq frames (zero-copy) as the payload handed to the engine.
            self.sim.inbox.put(Work(self.generation, msg.token, [f.buffer for f in frames[3:]]))
        elif isinstance(msg, wp.Disconnect):
            if msg.reason == wp.REASON_ACK and self.drain is not None:
                self.drain.acknowledged = True
                return None
            if msg.reason == wp.REASON_FINGERPRINT:
                log.error("router %s refused this worker: its detector fingerprint %s differs from the "
                          "pool's (start workers with the same detector, or change router.fingerprint)",
                          self.settings.worker.router, self.handler.simulator.fingerprint[:16])
            else:
                log.info("router asked to reconnect (%s)", msg.reason.decode("ascii", "replace"))
            return "exit" if self.drain is not None else "reconnect"
        return None


def main(settings: Settings) -> int:
    simulator = make_simulator(settings.engine)
    handler = RequestHandler(simulator)
    log.info("engine %s ready, detector %s, %d channels", simulator.name, simulator.fingerprint[:16],
             len(simulator.detector_info()))
    health, metrics_addr = start_health(settings.metrics, default_port=0)
    worker = Worker(settings, handler, health, metrics_addr)
    if health:
        health.liveness = worker.sim.progress.check(settings.engine.stall_timeout_s, time.monotonic)
    set_on_signal(worker.stop, "draining")
    try:
        return worker.run()
    finally:
        if health:
            health.stop()
