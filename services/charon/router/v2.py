"""What the router (and ``charon serve``) does with v2 beyond v1: WELCOME, and a job's replies.

A v2 SIMULATE becomes one or more JOBs (:mod:`charon.sessions`); each job has one requester whose
:class:`V2Part` knows the events it carries. When the job's JOB_DONE comes back, the part turns it
into one RESULT or ERROR message per event, passing the hit frames on untouched, and gives the
session its credit back; a job that fails (queue full, deadline, workers lost) becomes one ERROR
per event with the code of the failure. No numpy, no sockets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from charon.errors import CharonError, SimulationFailed
from charon.protocol import v2
from charon.protocol.v1 import Frame
from charon.sessions import Limits, Sessions

log = logging.getLogger("charon.router")

#: The job kind (and ``kind`` metric label) of a v2 job.
V2_KIND: Final = "simulate_v2"
#: Engines that fill hit positions (``Hits.x, y, z``).
POSITION_ENGINES: Final = frozenset({"echo", "builtin", "numpy"})


def welcome_of(limits: Limits, engine: str, fingerprint: str, detector_info: Sequence[Frame], seed: int
               ) -> v2.Welcome:
    """The WELCOME of a server simulating ``fingerprint`` with ``engine``; ``detector_info`` is the
    DETECTOR_INFO body (x, y, z, type frames)."""
    x, y, z = detector_info[0], detector_info[1], detector_info[2]
    return v2.Welcome(
        engine=engine, fingerprint=fingerprint, pmt_digest=v2.pmt_digest(x, y, z),
        n_channels=len(memoryview(x).cast("B")) // 4, credit=limits.credit,
        max_events_per_message=limits.max_events_per_message,
        max_photons_per_message=limits.max_photons_per_message,
        hit_positions=engine in POSITION_ENGINES, seed=seed,
    )


@dataclass(slots=True, eq=False)
class V2Part:
    """The events of one v2 job, for the session ``identity`` of ``sessions``."""

    identity: bytes
    events: tuple[v2.Event, ...]
    sessions: Sessions

    def replies(self, payload: Sequence[Frame]) -> list[list[Frame]]:
        """RESULT / ERROR messages for the job's JOB_DONE ``payload`` (each event answered once)."""
        try:
            done = v2.decode_job_done(payload)
        except CharonError as exc:
            log.error("invalid JOB_DONE from a worker: %s", exc)
            return self.errors(SimulationFailed(f"the worker's reply was invalid: {exc}"))
        messages = v2.client_replies(done)
        answered = {o.event.tag for o in done.outcomes}
        missing = [e for e in self.events if e.tag not in answered]
        for e in missing:
            messages.append(v2.error(e.tag, e.event_id, v2.ErrorCode.SIMULATION_FAILED,
                                     "the worker's reply did not include this event"))
        self.sessions.returned(self.identity, len(self.events))
        return messages

    def errors(self, err: CharonError) -> list[list[Frame]]:
        """One ERROR per event for a failed job."""
        code = v2.code_of(err)
        self.sessions.returned(self.identity, len(self.events))
        return [v2.error(e.tag, e.event_id, code, str(err)) for e in self.events]

    @staticmethod
    def hits_of(payload: Sequence[Frame]) -> int:
        """Hits in a JOB_DONE (0 when it cannot be read), for the hit counter."""
        return v2.job_done_hits(payload)
