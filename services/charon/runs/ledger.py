"""The open runs of v1 async mode: a sans-IO ledger kept by ``charon serve`` and by the router.

A run is what one client sends between RUN_BEGIN and RUN_END. The ratpac-two client opens a new
REQ socket for every request, so its ZeroMQ identity changes every time; a run is therefore keyed
by the client's network address (ZeroMQ's ``Peer-Address``): one open run per client address, as
ChAR0N has one per server. For each run the ledger

* names its file (:mod:`charon.runs.naming`; two open runs never share a file: the later one gets
  a numbered name);
* accepts each event id once, in arrival order (the client's event order, since it sends one event
  at a time): entry ``seq`` of the file is the ``seq``-th distinct event. A resent event (the client
  timed out) is answered again and recorded nothing: at most one entry per event id;
* answers PHOTONDATA at once with SIM_COMPLETE_ASYNC, unless more than ``2 x flush_events`` events
  (or ``2 x flush_bytes`` bytes) are accepted and not yet written, or all runs together hold
  ``max_total_bytes``: then the reply waits for the writer (back-pressure, so memory stays
  bounded however fast and however many clients send);
* keeps every accepted event's frames until the writer reports it written (flushed and fsynced),
  so a writer that is lost can be replaced and given exactly the events after the last flush;
* answers RUN_END once the writer has closed the file; closes a run idle for
  ``runs.idle_timeout_s``; closes the previous run of a client that begins a new one.

It emits :class:`Reply` (to a client) and writer commands (:class:`Open`, :class:`Record`,
:class:`Close`), and learns of progress through :meth:`RunLedger.written` and
:meth:`RunLedger.closed`. Who the writer is (serve's own engine thread, or the worker that owns
the run behind the router) is the caller's business. No numpy, no sockets, time is an argument.
"""

from __future__ import annotations

import enum
import itertools
import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from charon.protocol import v1
from charon.protocol.v1 import Frame
from charon.runs import naming

log = logging.getLogger("charon.runs")


@dataclass(frozen=True, slots=True)
class Reply:
    """Send ``frames`` to the client behind ``envelope``."""

    envelope: list[Frame]
    frames: list[Frame]


@dataclass(frozen=True, slots=True)
class Open:
    """Writer: open (``resume_from`` = 0) or continue (entries ``[0, resume_from)`` are on disk)."""

    run_id: int
    name: PurePosixPath
    resume_from: int
    flush_events: int
    flush_bytes: int


@dataclass(frozen=True, slots=True)
class Record:
    """Writer: simulate this PHOTONDATA payload and write it as entry ``seq``."""

    run_id: int
    seq: int
    payload: list[Frame]


@dataclass(frozen=True, slots=True)
class Close:
    """Writer: write what is left, close and sync the file, report :meth:`RunLedger.closed`."""

    run_id: int


Action = Reply | Open | Record | Close


class RunState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"  # Close sent; RUN_END requesters wait for the writer


@dataclass(slots=True, eq=False)
class _Event:
    seq: int
    payload: list[Frame]
    nbytes: int


@dataclass(slots=True, eq=False)
class Run:
    run_id: int
    client: str
    name: PurePosixPath
    last_seen: float
    state: RunState = RunState.OPEN
    seqs: dict[int, int] = field(default_factory=dict)  # event id -> entry
    retained: deque[_Event] = field(default_factory=deque)  # accepted, not yet written
    accepted: int = 0
    written: int = 0
    unwritten_bytes: int = 0
    held: deque[tuple[int, list[Frame], int]] = field(default_factory=deque)  # (seq, envelope, event id)
    enders: list[list[Frame]] = field(default_factory=list)
    requested: PurePosixPath | None = None  # the name RUN_BEGIN asked for (``name`` may be numbered)


class RunLedger:
    """Every open run, keyed by client address."""

    def __init__(self, *, flush_events: int, flush_bytes: int, idle_timeout_s: float,
                 allow_absolute: bool = False, max_total_bytes: int | None = None) -> None:
        self.flush_events = flush_events
        self.max_total_bytes = max_total_bytes
        #: Photon bytes accepted and not yet written, all runs together.
        self.unwritten_bytes = 0
        self.flush_bytes = flush_bytes
        self.idle_timeout_s = idle_timeout_s
        self.allow_absolute = allow_absolute
        self._by_client: dict[str, Run] = {}  # the client's current run (open or closing)
        self._runs: dict[int, Run] = {}
        self._ids = itertools.count(1)
        #: Events written (reported by writers) and runs closed, by reason: for metrics.
        self.events_written = 0
        self.closed_runs: dict[str, int] = {}
        self.refused_names = 0

    # ---- observable ------------------------------------------------------------------------------

    @property
    def open_runs(self) -> int:
        return len(self._runs)

    def runs(self) -> Iterator[Run]:
        yield from self._runs.values()

    def run(self, run_id: int) -> Run | None:
        return self._runs.get(run_id)

    def has_open_run(self, client: str) -> bool:
        run = self._by_client.get(client)
        return run is not None and run.state is RunState.OPEN

    # ---- client requests -------------------------------------------------------------------------

    def run_begin(self, client: str, envelope: list[Frame], filename: str | None, now: float) -> list[Action]:
        """RUN_BEGIN: ACK; a new run (the client's previous one is closed first) unless the name is
        refused, in which case the client's events are answered synchronously."""
        actions: list[Action] = []
        previous = self._by_client.get(client)
        if previous is not None and previous.state is RunState.OPEN:
            if previous.accepted == 0 and previous.requested == self._name_or_none(filename):
                previous.last_seen = now  # a resent RUN_BEGIN: the same, still empty run
                return [Reply(envelope, v1.ack())]
            actions.extend(self._close(previous, "replaced"))
        try:
            requested = naming.relative_name(filename, allow_absolute=self.allow_absolute)
            name = self._unique(requested)
        except naming.RunNameRefused as exc:
            log.error("RUN_BEGIN from %s: %s; its events are answered synchronously", client or "?", exc)
            self.refused_names += 1
            return [*actions, Reply(envelope, v1.ack())]
        run = Run(next(self._ids), client, name, now, requested=requested)
        self._runs[run.run_id] = run
        self._by_client[client] = run
        log.info("run %d from %s: writing %s", run.run_id, client or "?", name)
        actions.append(Open(run.run_id, name, 0, self.flush_events, self.flush_bytes))
        actions.append(Reply(envelope, v1.ack()))
        return actions

    def photondata(self, client: str, envelope: list[Frame], request: v1.PhotonData, payload: list[Frame],
                   now: float) -> list[Action] | None:
        """A well-formed PHOTONDATA: None when the client has no open run (answer it synchronously)."""
        run = self._by_client.get(client)
        if run is None or run.state is not RunState.OPEN:
            return None
        run.last_seen = now
        seq = run.seqs.get(request.event_id)
        if seq is not None:  # a resend: recorded once, answered again
            if any(s == seq for s, _, _ in run.held):
                run.held.append((seq, envelope, request.event_id))
                return []
            return [Reply(envelope, v1.sim_complete_async(request.event_id))]
        seq = run.accepted
        run.accepted += 1
        run.seqs[request.event_id] = seq
        nbytes = request.nbytes
        run.retained.append(_Event(seq, payload, nbytes))
        run.unwritten_bytes += nbytes
        self.unwritten_bytes += nbytes
        actions: list[Action] = [Record(run.run_id, seq, payload)]
        if run.held or self._over(run):
            run.held.append((seq, envelope, request.event_id))
        else:
            actions.append(Reply(envelope, v1.sim_complete_async(request.event_id)))
        return actions

    def run_end(self, client: str, envelope: list[Frame], now: float) -> list[Action]:
        """RUN_END: ACK once the client's run is closed (at once when it has none)."""
        run = self._by_client.get(client)
        if run is None:
            return [Reply(envelope, v1.ack())]
        run.last_seen = now
        run.enders.append(envelope)
        if run.state is RunState.CLOSING:
            return []
        return self._close(run, "run_end")

    # ---- writer reports --------------------------------------------------------------------------

    def written(self, run_id: int, count: int) -> list[Action]:
        """The writer has entries ``[0, count)`` on disk: their frames are released, and replies
        held back by the back-pressure bound go out."""
        run = self._runs.get(run_id)
        if run is None or count <= run.written:
            return []
        self.events_written += min(count, run.accepted) - run.written
        run.written = min(count, run.accepted)
        while run.retained and run.retained[0].seq < run.written:
            nbytes = run.retained.popleft().nbytes
            run.unwritten_bytes -= nbytes
            self.unwritten_bytes -= nbytes
        return self._release_all()

    def closed(self, run_id: int, count: int) -> list[Action]:
        """The writer closed the run's file with ``count`` entries."""
        run = self._runs.pop(run_id, None)
        if run is None:
            return []
        actions: list[Action] = []
        self.events_written += max(0, min(count, run.accepted) - run.written)
        run.written = min(count, run.accepted)
        if count < run.accepted:
            log.error("run %d closed with %d of its %d events", run_id, count, run.accepted)
        self.unwritten_bytes -= run.unwritten_bytes
        actions.extend(self._release(run))
        actions.extend(Reply(env, v1.ack()) for env in run.enders)
        if self._by_client.get(run.client) is run:
            del self._by_client[run.client]
        actions.extend(self._release_all())  # the bytes it held are free for the other runs
        log.info("run %d closed: %s, %d events", run_id, run.name, count)
        return actions

    def resume(self, run_id: int) -> list[Action]:
        """The run's writer was lost: what a new writer needs to continue the same file."""
        run = self._runs.get(run_id)
        if run is None:
            return []
        actions: list[Action] = [Open(run_id, run.name, run.written, self.flush_events, self.flush_bytes)]
        actions.extend(Record(run_id, e.seq, e.payload) for e in run.retained)
        if run.state is RunState.CLOSING:
            actions.append(Close(run_id))
        return actions

    # ---- time ------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        """Close runs idle for ``idle_timeout_s`` (a client that died mid-run)."""
        actions: list[Action] = []
        for run in list(self._runs.values()):
            if run.state is RunState.OPEN and now - run.last_seen >= self.idle_timeout_s:
                log.warning("run %d from %s idle for %.0f s: closing %s with %d events", run.run_id,
                            run.client or "?", now - run.last_seen, run.name, run.accepted)
                actions.extend(self._close(run, "idle"))
        return actions

    def next_wakeup(self) -> float | None:
        times = [r.last_seen + self.idle_timeout_s for r in self._runs.values() if r.state is RunState.OPEN]
        return min(times) if times else None

    # ---- internals -------------------------------------------------------------------------------

    def _over(self, run: Run) -> bool:
        return (run.accepted - run.written >= 2 * self.flush_events
                or run.unwritten_bytes >= 2 * self.flush_bytes
                or (self.max_total_bytes is not None and self.unwritten_bytes >= self.max_total_bytes))

    def _release_all(self) -> list[Action]:
        """Held replies of every run that is under its bounds again (the total bound is shared)."""
        actions: list[Action] = []
        for run in self._runs.values():
            if run.held and not self._over(run):
                actions.extend(self._release(run))
        return actions

    def _release(self, run: Run) -> list[Action]:
        released: list[Action] = [Reply(env, v1.sim_complete_async(event_id)) for _, env, event_id in run.held]
        run.held.clear()
        return released

    def _close(self, run: Run, reason: str) -> list[Action]:
        run.state = RunState.CLOSING
        self.closed_runs[reason] = self.closed_runs.get(reason, 0) + 1
        return [Close(run.run_id)]

    def _name_or_none(self, filename: str | None) -> PurePosixPath | None:
        try:
            return naming.relative_name(filename, allow_absolute=self.allow_absolute)
        except naming.RunNameRefused:
            return None

    def _unique(self, name: PurePosixPath) -> PurePosixPath:
        taken = {r.name for r in self._runs.values()}
        if name not in taken:
            return name
        for n in itertools.count(2):
            candidate = naming.numbered(name, n)
            if candidate not in taken:
                log.warning("run file %s is being written by another open run: using %s", name, candidate)
                return candidate
        raise AssertionError("unreachable")

