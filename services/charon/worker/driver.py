"""``charon worker``: a DEALER connected to the router, speaking CHARONW1.

The thread that runs the service owns the router socket: it sends READY, heartbeats every interval
(also while the engine is busy on the simulation thread), forwards requests to the simulation
thread and replies back, notices a silent router and reconnects on a fresh socket with exponential
backoff, and on a stop request drains (DISCONNECT, finish what it holds, exit within
``worker.drain_grace_s``; a forced stop leaves at once). Timing decisions live in
:mod:`charon.worker.lifecycle`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any, Literal

import zmq
from prometheus_client import CollectorRegistry

from charon import curve, sockets
from charon.engine.base import Simulator
from charon.errors import WorkerProtocolError
from charon.health import HealthServer
from charon.liveness import Progress
from charon.metrics import WorkerMetrics, new_registry
from charon.process import Stop, open_simulator, run_service
from charon.protocol import worker as wp
from charon.runs import ledger
from charon.runs.recorder import CLOSED, Recorder, RunCommand, unpack_report
from charon.service import RequestHandler
from charon.settings import Settings
from charon.worker.lifecycle import Backoff, Drain, Link, backoff_for, link_for
from charon.worker.outbox import Outbox, Reply
from charon.worker.simulation import SimulationThread, Work

log = logging.getLogger("charon.worker")
_MAX_POLL_S = 0.1
#: How long the last messages of a drained connection (replies, DISCONNECT exit) may take to leave.
_DRAIN_LINGER_MS = 500

#: A CURVE router that refuses this worker sends nothing at all: say where to look.
_CURVE_HINT = (" (CURVE: a router that refuses this worker's key answers nothing; check that its public "
               "certificate is in the router's security.curve_workers and security.curve_server_key is the "
               "router's)")
#: How one connection ended: the router is lost or refused us (reconnect), or we leave (exit).
Verdict = Literal["reconnect", "exit"]


class Worker:
    """The ``charon worker`` service: the socket loop around a :class:`SimulationThread`."""

    stopping = "draining"

    def __init__(self, settings: Settings, simulator: Simulator, *, context: zmq.Context[Any] | None = None,
                 registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.handler = RequestHandler(simulator)
        self.clock = clock
        self.registry = registry if registry is not None else new_registry()
        self.metrics = WorkerMetrics(self.registry)
        self._ctx: zmq.Context[Any] | None = context
        self._own_ctx = False
        self.outbox: Outbox | None = None
        #: When the engine pass in progress began: the liveness behind /healthz.
        self.progress = Progress()
        self.sim: SimulationThread | None = None
        self.http = HealthServer(settings.metrics, 0, self.registry)
        self.http.health.liveness = self.progress.check(settings.engine.stall_timeout_s, clock)
        info = simulator.detector_info()
        outdir = settings.runs.outdir
        #: Writes the async runs the router gives it (only with --outdir).
        self.recorder = (Recorder(self.handler, outdir, events_written=self.metrics.run_events_written)
                         if outdir is not None else None)
        self.ready_msg = wp.ready(simulator.fingerprint, settings.worker.capacity, simulator.name,
                                  [bytes(f) for f in info.frames()], runs=self.recorder is not None)
        self.generation = 0
        self.in_flight: set[int] = set()
        self.drain: Drain | None = None
        #: Expelled by the router for missed execution deadlines: re-register only once the engine is idle.
        self._expelled = False
        self.curve: curve.ClientKeys | None = None

    # ---- lifecycle -------------------------------------------------------------------------------

    def startup(self) -> dict[str, object]:
        self.curve = curve.worker_keys(self.settings.security)
        simulator = self.handler.simulator
        log.info("engine %s ready, detector %s, %d channels", simulator.name, simulator.fingerprint[:16],
                 len(simulator.detector_info()))
        metrics_addr = self.http.start()
        if self._ctx is None:
            self._ctx, self._own_ctx = zmq.Context(), True
        self.outbox = Outbox()
        engine = self.settings.engine
        self.sim = SimulationThread(self.handler, self.outbox,
                                    batch_max_photons=engine.batch_max_photons,
                                    batch_max_delay_s=engine.batch_max_delay_s, progress=self.progress,
                                    metrics=self.metrics, clock=self.clock, recorder=self.recorder,
                                    finish_runs=False)
        self.sim.start()
        return {"metrics": metrics_addr}

    def run(self, stop: Stop) -> int:
        backoff = backoff_for(self.settings.worker)
        while True:
            if self._connection(backoff, stop) == "exit" or stop.is_set():
                return 0
            if self._expelled and self._wait_for_engine(stop):
                return 0
            delay = backoff.next_delay()
            if delay is None:
                log.error("router %s unreachable after %d reconnects: giving up",
                          self.settings.worker.router, backoff.attempts)
                return 1
            log.info("reconnecting to %s in %.1f s", self.settings.worker.router, delay)
            if self._sleep(delay, stop):
                return 0

    def shutdown(self) -> None:
        self.http.health.set_ready(False)
        stopped = self.sim is None or self.sim.stop(timeout=1.0)
        if not stopped:
            log.warning("simulation still running at exit")
        else:
            if self.outbox is not None:  # a simulation still running may yet put its answer
                self.outbox.close()
                self.outbox = None
            if self._own_ctx and self._ctx is not None:
                self._ctx.term()
                self._ctx, self._own_ctx = None, False
        self.http.stop()

    def _wait_for_engine(self, stop: Stop) -> bool:
        """After an expulsion for missed execution deadlines: register again only once the engine
        pass in progress has ended (a stuck engine takes no new work; /healthz restarts the
        process). True if told to stop meanwhile."""
        self._expelled = False
        if self.progress.busy_for(self.clock()) > 0:
            log.warning("engine pass still running after the expulsion: registering again when it ends")
        while self.progress.busy_for(self.clock()) > 0:
            if stop.wait(_MAX_POLL_S):
                return True
            self._drop_results()
        return False

    def _sleep(self, seconds: float, stop: Stop) -> bool:
        """Wait out a backoff step (dropping stale results); True if told to stop meanwhile."""
        end = self.clock() + seconds
        while (left := end - self.clock()) > 0:
            if stop.wait(min(left, _MAX_POLL_S)):
                return True
            self._drop_results()
        return False

    def _drop_results(self) -> None:
        assert self.outbox is not None
        self.outbox.take()

    # ---- one connection --------------------------------------------------------------------------

    def _connection(self, backoff: Backoff, stop: Stop) -> Verdict:
        """Connect, register and serve until the router is lost or refuses us, or we leave."""
        assert self._ctx is not None, "startup() first"
        assert self.sim is not None
        router = self.settings.worker.router
        sock = sockets.worker_dealer(self._ctx, router, self.curve)
        self.generation += 1
        self.sim.new_generation(self.generation)
        self.in_flight.clear()
        self._drop_results()
        try:
            sock.connect(router)
            sock.send_multipart(self.ready_msg)
            log.info("READY sent to %s (capacity %d%s)", router, self.settings.worker.capacity,
                     ", CURVE" if self.curve else "")
            return self._serve(sock, link_for(self.settings.heartbeat, self.clock()), backoff, stop)
        except zmq.Again:  # no connection left to queue on: the router refused the handshake for good
            log.warning("router %s closed this connection for good%s", router,
                        " (it refused this worker's CURVE key)" if self.curve else "")
            return "exit" if self.drain is not None else "reconnect"
        finally:
            self.metrics.connected.set(0)
            self.http.health.set_ready(False)
            sock.close(linger=0 if self.drain is None else _DRAIN_LINGER_MS)

    def _serve(self, sock: zmq.Socket[Any], link: Link, backoff: Backoff, stop: Stop) -> Verdict:
        assert self.outbox is not None
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self.outbox.fd, zmq.POLLIN)
        while True:
            if stop.is_set() and self.drain is None:
                self._start_drain(sock, self.clock())
            timeout = min(max(link.next_wakeup() - self.clock(), 0.0), _MAX_POLL_S)
            ready = dict(poller.poll(int(timeout * 1000.0) + 1))
            if self.outbox.fd in ready:
                for reply in self.outbox.take():
                    self._forward_result(sock, reply)
            if sock in ready:
                while sock.poll(0):
                    verdict = self._from_router(sock.recv_multipart(copy=False), link, backoff)
                    if verdict:
                        return verdict
            verdict = self._on_timer(sock, link, stop)
            if verdict:
                return verdict

    def _on_timer(self, sock: zmq.Socket[Any], link: Link, stop: Stop) -> Verdict | None:
        """Drain over, router silent, or a heartbeat due."""
        now = self.clock()
        if self.drain is not None and (stop.forced or self.drain.may_exit(now, len(self.in_flight), link)):
            if self.in_flight:
                log.warning("leaving with %d request(s) unfinished (%s): the router requeues them",
                            len(self.in_flight), "forced stop" if stop.forced else "drain grace over")
            sock.send_multipart(wp.disconnect(wp.REASON_EXIT))
            return "exit"
        if link.router_dead(now):
            log.warning("router %s silent for %.1f s: reconnecting%s", self.settings.worker.router,
                        now - link.last_heard, _CURVE_HINT if self.curve else "")
            return "reconnect"
        if link.heartbeat_due(now):
            sock.send_multipart(wp.heartbeat())
        return None

    def _start_drain(self, sock: zmq.Socket[Any], now: float) -> None:
        grace = self.settings.worker.drain_grace_s
        log.info("draining: %d request(s) in hand, exiting within %g s", len(self.in_flight), grace)
        self.drain = Drain(now + grace)
        self.http.health.set_ready(False)
        sock.send_multipart(wp.disconnect(wp.REASON_DRAIN))

    def _forward_result(self, sock: zmq.Socket[Any], reply: Reply) -> None:
        if reply.token == 0:  # a run's progress, from the recorder
            if reply.generation == self.generation:
                run_id, count = unpack_report(reply.frames[1])
                sock.send_multipart(wp.run_written(run_id, count, closed=bytes(reply.frames[0]) == CLOSED))
            return
        if reply.generation != self.generation or reply.token not in self.in_flight:
            return
        self.in_flight.discard(reply.token)
        sock.send_multipart([wp.PROTOCOL, wp.REPLY, wp.token_frame(reply.token), *reply.frames], copy=False)

    def _from_router(self, frames: list[zmq.Frame], link: Link, backoff: Backoff) -> Verdict | None:
        try:
            msg = wp.decode_from_router([f.buffer for f in frames])
        except WorkerProtocolError as exc:
            log.warning("invalid message from the router dropped: %s", exc)
            return None
        if link.heard(self.clock(), registers=not isinstance(msg, wp.Disconnect)):
            backoff.reset()
            self.metrics.connected.set(1)
            if self.drain is None:
                self.http.health.set_ready(True)
            log.info("registered with %s", self.settings.worker.router)
        if isinstance(msg, wp.Request):
            assert self.sim is not None
            self.in_flight.add(msg.token)
            # Keep the received zmq frames (zero-copy) as the payload handed to the engine.
            self.sim.inbox.put(Work(self.generation, msg.token, [f.buffer for f in frames[3:]]))
        elif isinstance(msg, wp.Disconnect):
            return self._disconnected(msg.reason)
        elif isinstance(msg, (wp.RunOpen, wp.RunEvent, wp.RunClose)):
            self._run_command(msg, frames)
        return None

    def _run_command(self, msg: wp.RunOpen | wp.RunEvent | wp.RunClose, frames: list[zmq.Frame]) -> None:
        assert self.sim is not None
        action: ledger.Open | ledger.Record | ledger.Close
        if isinstance(msg, wp.RunEvent):
            action = ledger.Record(msg.run_id, msg.seq, [f.buffer for f in frames[4:]])
        elif isinstance(msg, wp.RunOpen):
            action = ledger.Open(msg.run_id, PurePosixPath(msg.name), msg.resume_from, msg.flush_events,
                                 msg.flush_bytes)
        else:
            action = ledger.Close(msg.run_id)
        self.sim.inbox.put(RunCommand(self.generation, action))

    def _disconnected(self, reason: bytes) -> Verdict | None:
        if reason == wp.REASON_ACK and self.drain is not None:
            self.drain.acknowledged = True
            return None
        if reason == wp.REASON_FINGERPRINT:
            log.error("router %s refused this worker: its detector fingerprint %s differs from the "
                      "pool's (start workers with the same detector, or change router.fingerprint)",
                      self.settings.worker.router, self.handler.simulator.fingerprint[:16])
        elif reason == wp.REASON_DEADLINE:
            log.error("router %s expelled this worker: it kept missing router.execution_deadline_s "
                      "(a stuck engine fails /healthz after engine.stall_timeout_s)", self.settings.worker.router)
            self._expelled = True
        else:
            log.info("router asked to reconnect (%s)", reason.decode("ascii", "replace"))
        return "exit" if self.drain is not None else "reconnect"


def main(settings: Settings) -> int:
    with open_simulator(settings.engine) as simulator:
        return run_service(Worker(settings, simulator))
