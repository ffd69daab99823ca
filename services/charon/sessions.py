"""v2 sessions: what ``charon serve`` and the router remember about each v2 client connection.

A session starts with HELLO (its seed, a fresh credit window) and is keyed by the connection's
ROUTER identity. :meth:`Sessions.admit` decides which events of a SIMULATE may enter (the client's
credit: events sent and not yet answered) and cuts the admitted ones into engine jobs; every
RESULT or ERROR gives one credit back (:meth:`Sessions.returned`). So however fast a client sends,
what it has queued is bounded by its window. Plain values in and out: no sockets, no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from charon.protocol import v2
from charon.protocol.v1 import Frame


@dataclass(slots=True)
class Session:
    seed: int
    in_flight: int = 0


@dataclass(frozen=True, slots=True)
class Limits:
    credit: int
    max_events_per_message: int
    max_photons_per_message: int
    job_max_photons: int


@dataclass(slots=True)
class Admission:
    """What to do with one SIMULATE: the jobs to run (each the JOB frames and its events) and the
    ERROR messages to send at once."""

    jobs: list[tuple[list[Frame], tuple[v2.Event, ...], int]] = field(default_factory=list)
    errors: list[list[Frame]] = field(default_factory=list)


class Sessions:
    """Bounded table of v2 sessions (least recently used idle ones are forgotten first)."""

    def __init__(self, limits: Limits, max_sessions: int) -> None:
        self.limits = limits
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def in_flight(self) -> int:
        """Events admitted and not yet answered, over every session."""
        return sum(s.in_flight for s in self._sessions.values())

    def get(self, identity: bytes) -> Session | None:
        return self._sessions.get(identity)

    def hello(self, identity: bytes, hello: v2.Hello) -> Session:
        """Start (or restart) the session of ``identity``; events still in flight keep counting."""
        old = self._sessions.pop(identity, None)
        session = Session(hello.seed, old.in_flight if old else 0)
        self._sessions[identity] = session
        self._trim(identity)
        return session

    def _trim(self, keep: bytes) -> None:
        """Forget sessions beyond the bound: the least recently used idle one first, else the least
        recently used one; never ``keep`` (the session just opened)."""
        while len(self._sessions) > self.max_sessions:
            others = [k for k in self._sessions if k != keep]
            idle = next((k for k in others if self._sessions[k].in_flight == 0), None)
            self._sessions.pop(idle if idle is not None else others[0])

    def admit(self, identity: bytes, message: v2.Simulate) -> Admission:
        """Admit a prefix of the message's events within the session's credit and the limits."""
        out = Admission()
        session = self._sessions.get(identity)
        lim = self.limits
        events = message.events
        if session is None:
            out.errors = _errors(events, v2.ErrorCode.NO_SESSION, "no session on this connection: send HELLO first")
            return out
        self._sessions.move_to_end(identity)
        if len(events) > lim.max_events_per_message or message.n_photons > lim.max_photons_per_message:
            out.errors = _errors(events, v2.ErrorCode.TOO_LARGE,
                                 f"SIMULATE of {len(events)} events, {message.n_photons} photons: at most "
                                 f"{lim.max_events_per_message} events and {lim.max_photons_per_message} photons")
            return out
        room = max(lim.credit - session.in_flight, 0)
        taken = min(room, len(events))
        if taken < len(events):
            out.errors = _errors(events[taken:], v2.ErrorCode.CREDIT_EXCEEDED,
                                 f"{session.in_flight} events in flight, credit {lim.credit}")
        if taken:
            session.in_flight += taken
            admitted = v2.Simulate(events[:taken], message.arrays) if taken == len(events) else \
                _prefix(message, taken)
            for part_events, arrays in v2.split(admitted, lim.job_max_photons):
                photons = sum(e.n_photons for e in part_events)
                out.jobs.append((v2.job(session.seed, part_events, arrays), part_events, photons))
        return out

    def returned(self, identity: bytes, n_events: int) -> None:
        """``n_events`` of ``identity`` were answered (RESULT or ERROR): their credit comes back."""
        session = self._sessions.get(identity)
        if session is not None:
            session.in_flight = max(session.in_flight - n_events, 0)


def _prefix(message: v2.Simulate, n: int) -> v2.Simulate:
    photons = sum(e.n_photons for e in message.events[:n])
    return v2.Simulate(message.events[:n], tuple(a[: 4 * photons] for a in message.arrays))


def _errors(events: Sequence[v2.Event], code: v2.ErrorCode, message: str) -> list[list[Frame]]:
    return [v2.error(e.tag, e.event_id, code, message) for e in events]
