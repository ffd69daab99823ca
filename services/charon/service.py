"""Answers decoded v1 requests with a simulator: the logic shared by ``charon serve`` and workers.

Plain Python, no sockets: it takes payload frames and returns reply frames plus what the drivers
need for logs and metrics. Several PHOTONDATA requests can be answered from one ``simulate`` call
(:meth:`RequestHandler.simulate_many`), which is how workers batch; a v2 JOB (many events of one
client, with its seed) is answered by :meth:`RequestHandler.simulate_job`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from charon.engine.base import Hits, Photons, Simulator, frame_of
from charon.errors import CharonError, SimulationFailed
from charon.metrics import kind_label
from charon.protocol import tokens, v1, v2
from charon.protocol.v1 import Frame

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Answer:
    """A reply and what it means for logs and metrics."""

    reply: Sequence[Frame]
    kind: str
    outcome: str
    n_photons: int = 0
    n_hits: int = 0
    detail: str = ""


class RequestHandler:
    """Turns v1 request payloads into replies using one simulator."""

    def __init__(self, simulator: Simulator, *, legacy_pong: bool = False) -> None:
        self.simulator = simulator
        info = simulator.detector_info()
        self._n_channels = len(info)
        self._detector_info_reply = v1.detector_info(*info.frames())
        self._legacy_pong = legacy_pong

    def handle(self, payload: Sequence[Frame]) -> Answer:
        """Answer one request; never raises for bad input."""
        kind = kind_label(v1.header_of(payload))
        try:
            request = v1.decode_request(payload)
        except CharonError as exc:
            return Answer(v1.error_reply(exc), kind, exc.outcome, detail=str(exc))
        if isinstance(request, v1.PhotonData):
            return self.simulate_many([request])[0]
        if isinstance(request, v1.DetectorInfoRequest):
            return Answer(self._detector_info_reply, kind, "ok")
        if isinstance(request, v1.Ping) and self._legacy_pong:
            return Answer([tokens.PONG], kind, "ok")
        return Answer(v1.ack(), kind, "ok")

    def simulate_many(self, requests: Sequence[v1.PhotonData]) -> list[Answer]:
        """Simulate several events in one engine call; one answer per request, in order.

        Any failure of the engine, or hits it returns that cannot be encoded, answers every
        request of the call with SIM_FAILED instead of raising: no request goes unanswered.
        """
        events = [Photons.from_request(r) for r in requests]
        try:
            if any(len(e) for e in events):
                hits = self.simulator.simulate(events)
            else:
                hits = [Hits.empty() for _ in events]
            if len(hits) != len(events):
                raise RuntimeError(f"engine returned {len(hits)} hit sets for {len(events)} events")
            return [self._complete(r, h) for r, h in zip(requests, hits, strict=True)]
        except Exception as exc:  # the engine's failure must not take the service down
            log.exception("simulation of %d event(s) failed", len(events))
            return [self._failed(r, exc) for r in requests]

    def _complete(self, request: v1.PhotonData, hits: Hits) -> Answer:
        if len(hits) and int(hits.channel.max()) >= self._n_channels:
            bad = hits.channel >= self._n_channels
            log.error("engine returned %d hits on channels >= %d; dropped", int(bad.sum()), self._n_channels)
            hits = hits.take(np.flatnonzero(~bad))
        reply = v1.sim_complete(request.event_id, hits.frames())
        return Answer(reply, "photondata", "ok", request.n_photons, len(hits))

    def simulate_job(self, payload: Sequence[Frame]) -> Answer:
        """Answer a v2 JOB with its JOB_DONE (see :meth:`simulate_jobs`)."""
        return self.simulate_jobs([payload])[0]

    def simulate_jobs(self, payloads: Sequence[Sequence[Frame]]) -> list[Answer]:
        """Answer v2 JOBs with their JOB_DONEs, every event of every job in one engine call, each
        with its session's seed as its stream; a failing engine fails each event with a code, a
        malformed JOB gets an empty JOB_DONE. One answer per payload, in order."""
        answers: list[Answer | None] = [None] * len(payloads)
        jobs: list[tuple[int, v2.Job]] = []
        for k, payload in enumerate(payloads):
            try:
                jobs.append((k, v2.decode_job(payload)))
            except CharonError as exc:
                answers[k] = Answer(v2.job_done([]), "job_v2", "malformed", detail=str(exc))
        events = [Photons.from_arrays_view(e.event_id, job.photon_arrays(i), job.seed)
                  for _, job in jobs for i, e in enumerate(job.events)]
        try:
            hits = self.simulator.simulate(events) if any(len(e) for e in events) else \
                [Hits.empty() for _ in events]
            if len(hits) != len(events):
                raise RuntimeError(f"engine returned {len(hits)} hit sets for {len(events)} events")
            at = 0
            for k, job in jobs:
                outcomes = [self._outcome(e, h) for e, h in zip(job.events, hits[at : at + len(job.events)],
                                                                 strict=True)]
                at += len(job.events)
                answers[k] = Answer(v2.job_done(outcomes), "job_v2", "ok", job.n_photons,
                                    sum(o.n_hits for o in outcomes))
        except Exception as exc:  # the engine's failure must not take the service down
            log.exception("simulation of %d job(s), %d event(s) failed", len(jobs), len(events))
            detail = f"{type(exc).__name__}: {exc}"
            for k, job in jobs:
                answers[k] = Answer(v2.failed_job(job, v2.ErrorCode.SIMULATION_FAILED, detail), "job_v2",
                                    "simulation_failed", job.n_photons, detail=detail)
        return [a for a in answers if a is not None]

    def _outcome(self, event: v2.Event, hits: Hits) -> v2.Outcome:
        if len(hits) and int(hits.channel.max()) >= self._n_channels:
            bad = hits.channel >= self._n_channels
            log.error("engine returned %d hits on channels >= %d; dropped", int(bad.sum()), self._n_channels)
            hits = hits.take(np.flatnonzero(~bad))
        arrays = hits.frames()
        if hits.x is not None and hits.y is not None and hits.z is not None:
            arrays += [frame_of(hits.x), frame_of(hits.y), frame_of(hits.z)]
        frame, n_hits, flags = v2.hits_frame(arrays)
        return v2.Outcome(event, v2.ErrorCode.OK, n_hits, flags, frame)

    @staticmethod
    def _failed(request: v1.PhotonData, exc: Exception) -> Answer:
        err = SimulationFailed(f"{type(exc).__name__}: {exc}", request.event_id)
        return Answer(v1.error_reply(err), "photondata", err.outcome, request.n_photons, detail=str(err))
