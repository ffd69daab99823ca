"""The worker's simulation thread: takes requests from a queue, batches them, pushes replies back.

It runs the engine off the socket thread so heartbeats continue during long simulations. Several
queued PHOTONDATA requests (a worker with capacity > 1) are passed to one ``simulate`` call up to
``engine.batch_max_photons`` photons, waiting at most ``engine.batch_max_delay_s`` for more; the
hits come back per request. Replies go to the socket thread through an :class:`~charon.worker.outbox.Outbox`,
which wakes its poller at once; every reply is tagged with the connection generation it belongs to, so
work taken on a connection that has since been replaced is skipped. The socket thread announces a
new connection through the same inbox as the work (:meth:`SimulationThread.new_generation`), so
the two threads share nothing but that queue and the outbox.
"""

from __future__ import annotations

import logging
import queue
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from prometheus_client import CollectorRegistry

from charon.engine.batching import BatchPlanner
from charon.errors import CharonError
from charon.liveness import Progress
from charon.metrics import WorkerMetrics
from charon.protocol import tokens, v1, v2
from charon.runs.recorder import Recorder, RunCommand, pack_report
from charon.service import Answer, RequestHandler
from charon.worker.outbox import Outbox, Reply

log = logging.getLogger("charon.worker")


@dataclass(frozen=True, slots=True)
class Work:
    generation: int
    token: int
    payload: list[Any]
    #: The payload already decoded by the socket thread (serve validates it there), else None.
    request: v1.PhotonData | None = None


@dataclass(frozen=True, slots=True)
class Generation:
    """The socket thread opened connection ``number``: work of older connections is stale."""

    number: int


#: What :meth:`SimulationThread._take` returns when an async run's batch is due.
RECORD: Final = "record"

Inbox = Work | Generation | RunCommand | None


class SimulationThread:
    """Owns the engine; one ``simulate`` call at a time, as the Simulator protocol requires."""

    def __init__(self, handler: RequestHandler, outbox: Outbox, *,
                 batch_max_photons: int, batch_max_delay_s: float, progress: Progress | None = None,
                 metrics: WorkerMetrics | None = None, clock: Callable[[], float] = time.monotonic,
                 recorder: Recorder | None = None, finish_runs: bool = True) -> None:
        self.handler = handler
        #: Async runs written by this thread (None: this process writes no run files).
        self.recorder = recorder
        #: At a stop: write every run's buffered events (serve) or leave the files at their last
        #: flush for the router to resume elsewhere (a worker).
        self._finish_runs = finish_runs
        #: When the engine pass in progress began: the worker's liveness signal.
        self.progress = progress or Progress()
        self._clock = clock
        self.inbox: queue.Queue[Inbox] = queue.Queue()
        self._generation = 0  # the socket thread's current connection (this thread's copy)
        self.outbox = outbox
        self._planner = BatchPlanner(batch_max_photons, batch_max_delay_s)
        self._pending: list[Work] = []
        self._arrived: list[float] = []
        self._stopping = False
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="simulation", daemon=True)
        self.metrics = metrics if metrics is not None else WorkerMetrics(CollectorRegistry())
        self._requests = {o: self.metrics.requests.labels(o)
                          for o in ("ok", "malformed", "unknown_request", "simulation_failed")}

    def new_generation(self, number: int) -> None:
        """Called by the socket thread when it opens connection ``number``: work queued from older
        connections is skipped from here on (in inbox order)."""
        self.inbox.put(Generation(number))

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10.0)

    def stop(self, timeout: float) -> bool:
        """Ask the thread to finish; True if it did within ``timeout``."""
        self.inbox.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        if self.recorder is not None:
            self.recorder.report = lambda generation, kind, run_id, count: self.outbox.put(
                Reply(generation, 0, [kind, pack_report(run_id, count)]))
        self._ready.set()
        try:
            self._loop()
        finally:
            if self.recorder is not None:
                self.recorder.close_all()

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                if self.recorder is not None and self._finish_runs:
                    self.recorder.finish()  # stopping: every run's remaining events written, closed
                return
            if isinstance(batch, str):  # RECORD: a run's batch is due
                self._record_step()
                continue
            try:
                answers = self._answer(batch)
            except Exception:  # a bug must not leave requests unanswered or stop the thread
                log.exception("answering %d request(s) failed", len(batch))
                answers = [(work, _failure(work)) for work in batch]
            for work, answer in answers:
                self.outbox.put(Reply(work.generation, work.token, list(answer.reply)))

    def _record_step(self) -> None:
        assert self.recorder is not None
        self.progress.begin(self._clock())
        try:
            self.recorder.step()
        except Exception:  # a bug or a full disk must not stop the thread
            log.exception("writing a run failed")
        finally:
            self.progress.end()

    def _take(self) -> list[Work] | Literal["record"] | None:
        """The next engine pass as the batch planner chooses it; RECORD when a run's batch is due
        first; None once stopped and drained."""
        while True:
            self._drain_inbox()
            if self.recorder is not None and self.recorder.due() and not self._stopping:
                return RECORD
            decision = self._planner.decide([_photons(w) for w in self._pending], self._arrived,
                                            time.monotonic(), flush=self._stopping)
            if decision.run:
                group = decision.run[0]  # groups cover the pending list in order from its head
                batch = self._pending[group.start : group.stop]
                del self._pending[: group.stop], self._arrived[: group.stop]
                return [w for w in batch if w.generation == self._generation]
            if self._stopping:
                return None
            wait = decision.wait_s
            idle = self.recorder.wait_s() if self.recorder is not None else None
            if idle is not None and (wait is None or idle < wait):
                wait = idle + 0.001
            try:
                item = self.inbox.get(timeout=wait)
            except queue.Empty:
                continue
            self._accept(item)

    def _drain_inbox(self) -> None:
        while not self._stopping:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return
            self._accept(item)

    def _accept(self, item: Inbox) -> None:
        if item is None:
            self._stopping = True  # finish what is pending, then stop
        elif isinstance(item, Generation):
            self._generation = item.number
            if self.recorder is not None:
                self.recorder.new_generation(item.number)
        elif isinstance(item, RunCommand):
            if self.recorder is None:
                log.warning("async run command without --outdir: ignored")
            elif item.generation == self._generation:
                self.recorder.accept(item)
        else:
            self._pending.append(item)
            self._arrived.append(time.monotonic())

    def _jobs(self, works: list[Work]) -> list[Answer]:
        """v2 JOBs of one batch: all their events in one engine pass."""
        start = time.perf_counter()
        self.progress.begin(self._clock())
        try:
            answers = self.handler.simulate_jobs([w.payload for w in works])
        finally:
            self.progress.end()
        self.metrics.simulation_seconds.observe(time.perf_counter() - start)
        for answer in answers:
            if answer.outcome == "ok":
                self.metrics.photons.inc(answer.n_photons)
                self.metrics.hits.inc(answer.n_hits)
            else:
                log.warning("v2 job failed: %s", answer.detail)
        return answers

    def _answer(self, batch: list[Work]) -> list[tuple[Work, Answer]]:
        out: list[tuple[Work, Answer]] = []
        events: list[tuple[Work, v1.PhotonData]] = []
        jobs = [work for work in batch if v2.is_job(work.payload)]
        if jobs:
            out.extend(zip(jobs, self._jobs(jobs), strict=True))
        for work in batch:
            if v2.is_job(work.payload):
                continue
            request: v1.Request | None = work.request
            if request is None:
                try:
                    request = v1.decode_request(work.payload)
                except CharonError:
                    request = None
            if isinstance(request, v1.PhotonData):
                events.append((work, request))
            else:
                out.append((work, self.handler.handle(work.payload)))
        if events:
            start = time.perf_counter()
            self.progress.begin(self._clock())
            try:
                answers = self.handler.simulate_many([r for _, r in events])
            finally:
                self.progress.end()
            self.metrics.simulation_seconds.observe(time.perf_counter() - start)
            for (work, _), answer in zip(events, answers, strict=True):
                out.append((work, answer))
                if answer.outcome == "ok":
                    self.metrics.photons.inc(answer.n_photons)
                    self.metrics.hits.inc(answer.n_hits)
                else:
                    log.warning("event failed: %s", answer.detail)
        for _, answer in out:
            child = self._requests.get(answer.outcome)
            if child is None:
                child = self._requests[answer.outcome] = self.metrics.requests.labels(answer.outcome)
            child.inc()
        return out


def _failure(work: Work) -> Answer:
    """SIM_FAILED for a PHOTONDATA whose event id is readable, else UNKNOWN_REQUEST; a v2 JOB_DONE
    failing each event of a JOB."""
    if v2.is_job(work.payload):
        try:
            job = v2.decode_job(work.payload)
        except CharonError:
            return Answer(v2.job_done([]), "job_v2", "simulation_failed")
        return Answer(v2.failed_job(job, v2.ErrorCode.SIMULATION_FAILED, "the worker failed"), "job_v2",
                      "simulation_failed")
    header = v1.header_of(work.payload)
    event_id = v1.read_event_id(work.payload[1]) if len(work.payload) > 1 else None
    if header == tokens.PHOTONDATA and event_id is not None:
        return Answer(v1.sim_failed(event_id), "photondata", "simulation_failed")
    return Answer(v1.unknown_request(), "unknown", "simulation_failed")


def _photons(work: Work) -> int:
    """Photon count from the metadata frame (a v2 JOB: its table), without decoding the request."""
    if v2.is_job(work.payload):
        return v2.job_photons(work.payload)
    if len(work.payload) > 1:
        meta = v1.as_view(work.payload[1])
        if len(meta) >= 8:
            return int(struct.unpack_from("<I", meta, 4)[0])
    return 0
