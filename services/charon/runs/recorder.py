"""The writer side of async runs: buffers a run's events, simulates them in batches, writes the file.

It lives on the simulation thread (serve's, or a worker's), which owns the engine, and is driven
by the writer actions the run ledger emits (:class:`~charon.runs.ledger.Open`, ``Record``, ``Close``),
each wrapped in a :class:`RunCommand` with the connection generation like all the thread's work. Every ``flush_events``
events (or ``flush_bytes`` photon bytes) of a run are simulated in one engine pass with the same
code that answers synchronous requests (:meth:`charon.service.RequestHandler.simulate_many`), so
the file holds exactly the hits a synchronous reply would carry; they are appended as one basket,
flushed and fsynced, and only then reported written (``report(generation, WRITTEN, run, count)``).
A run's partial batch is also written once no event of it has arrived for ``IDLE_FLUSH_S``
(a client held back by the ledger's memory bound, or a slow one, never waits on a batch that
cannot fill). On close the rest is written, the file is closed and synced, and ``CLOSED`` is reported. An event
the engine fails on still gets its entry (no hits; logged), so entry k is always the k-th event.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from prometheus_client import Counter

from charon.engine.base import Hits
from charon.protocol import tokens, v1
from charon.protocol.v1 import Frame
from charon.runs import naming
from charon.runs.ledger import Close, Open, Record
from charon.runs.writer import RunFile
from charon.service import RequestHandler

log = logging.getLogger("charon.runs")

WRITTEN: Final = b"W"
CLOSED: Final = b"C"
#: A run's partial batch is written once no event of it has come for this long.
IDLE_FLUSH_S: Final = 1.0
_REPORT = struct.Struct("<QQ")


@dataclass(frozen=True, slots=True)
class RunCommand:
    """A writer action of the run ledger, taken on connection ``generation``."""

    generation: int
    action: Open | Record | Close

Report = Callable[[int, bytes, int, int], object]


def pack_report(run_id: int, count: int) -> bytes:
    return _REPORT.pack(run_id, count)


def unpack_report(frame: Frame) -> tuple[int, int]:
    run_id, count = _REPORT.unpack(v1.as_view(frame))
    return int(run_id), int(count)


@dataclass(slots=True, eq=False)
class _Run:
    generation: int
    run_id: int
    file: RunFile | None
    flush_events: int
    flush_bytes: int
    buffer: list[tuple[int, v1.PhotonData]] = field(default_factory=list)
    buffered_bytes: int = 0
    closing: bool = False
    skipped: int = 0  # entries counted without a file (it could not be opened)
    last_event: float = 0.0

    @property
    def written(self) -> int:
        """Entries on disk (or counted through, when the file could not be opened)."""
        return self.file.entries if self.file is not None else self.skipped

    @property
    def next_seq(self) -> int:
        return self.written + len(self.buffer)

    def due(self, now: float) -> bool:
        return (self.closing or len(self.buffer) >= self.flush_events or self.buffered_bytes >= self.flush_bytes
                or (bool(self.buffer) and now - self.last_event >= IDLE_FLUSH_S))


def _no_report(generation: int, kind: bytes, run_id: int, count: int) -> None:
    """Until the simulation thread connects its reply socket."""


class Recorder:
    """The runs this simulation thread writes."""

    def __init__(self, handler: RequestHandler, outdir: Path | None, *, events_written: Counter | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.handler = handler
        self.clock = clock
        self.outdir = outdir
        self.report: Report = _no_report
        self._runs: dict[tuple[int, int], _Run] = {}
        self._events_written = events_written

    def accept(self, command: RunCommand) -> None:
        action = command.action
        if isinstance(action, Open):
            self._open(command.generation, action)
            return
        run = self._runs.get((command.generation, action.run_id))
        if run is None:
            log.warning("%s for run %d, which is not open here: ignored", type(action).__name__, action.run_id)
            return
        if isinstance(action, Close):
            run.closing = True
            return
        if action.seq < run.next_seq:
            return  # already buffered or written (a resume resends from the last acknowledged entry)
        if action.seq > run.next_seq:
            log.error("run %d: entry %d arrived, %d expected; the gap stays empty", run.run_id, action.seq,
                      run.next_seq)
        request = v1.decode_photondata(action.payload)
        run.buffer.append((action.seq, request))
        run.buffered_bytes += request.nbytes
        run.last_event = self.clock()

    def _open(self, generation: int, action: Open) -> None:
        key = (generation, action.run_id)
        if key in self._runs:
            return
        file: RunFile | None = None
        try:
            if self.outdir is None:
                raise naming.RunNameRefused("no output directory (--outdir) on this writer")
            path = naming.resolve(action.name, self.outdir)
            info = self.handler.simulator.detector_info()
            file = (RunFile.resume(path, info, action.resume_from) if action.resume_from
                    else RunFile(path, info))
        except Exception:
            log.exception("run %d: cannot open %s; its events are not written", action.run_id, action.name)
        run = _Run(generation, action.run_id, file, action.flush_events, action.flush_bytes)
        if file is None:
            run.skipped = action.resume_from
        else:
            log.info("run %d: %s %s", action.run_id, "resumed" if action.resume_from else "writing", file.path)
        self._runs[key] = run

    def new_generation(self, generation: int) -> None:
        """A new connection: runs of older ones are closed as they are (the router resumes them)."""
        for key, run in list(self._runs.items()):
            if run.generation != generation:
                del self._runs[key]
                if run.file is not None:
                    run.file.close()
                log.info("run %d: connection replaced, file closed at %d entries", run.run_id, run.written)

    def due(self) -> bool:
        now = self.clock()
        return any(run.due(now) for run in self._runs.values())

    def wait_s(self) -> float | None:
        """Seconds until a partial batch becomes due by itself (None: none is waiting)."""
        waits = [r.last_event + IDLE_FLUSH_S - self.clock() for r in self._runs.values() if r.buffer]
        return max(0.0, min(waits)) if waits else None

    def step(self) -> None:
        """Write one due batch (and close the run if it is closing)."""
        now = self.clock()
        run = next((r for r in self._runs.values() if r.due(now)), None)
        if run is None:
            return
        batch, run.buffer = run.buffer[: max(run.flush_events, 1)], run.buffer[max(run.flush_events, 1):]
        run.buffered_bytes = sum(r.nbytes for _, r in run.buffer)
        if batch:
            self._write(run, batch)
        if run.closing and not run.buffer:
            del self._runs[run.generation, run.run_id]
            if run.file is not None:
                run.file.close()
            self.report(run.generation, CLOSED, run.run_id, run.written)
            return
        if batch:  # only what is on disk: events still buffered would be lost with this process
            self.report(run.generation, WRITTEN, run.run_id, run.written)

    def _write(self, run: _Run, batch: list[tuple[int, v1.PhotonData]]) -> None:
        answers = self.handler.simulate_many([r for _, r in batch])
        hits: list[Hits] = []
        for (seq, request), answer in zip(batch, answers, strict=True):
            if answer.outcome == "ok" and v1.header_of(answer.reply) == tokens.SIM_COMPLETE:
                hits.append(Hits.from_frames(answer.reply[2:12]))
            else:
                log.error("run %d entry %d (event %d): %s; written without hits", run.run_id, seq,
                          request.event_id, answer.detail)
                hits.append(Hits.empty())
        if run.file is None:
            run.skipped += len(batch)
        else:
            run.file.append([r.event_id for _, r in batch], hits)
            run.file.flush()
            if self._events_written is not None:
                self._events_written.inc(len(batch))

    def finish(self) -> None:
        """Stopping: every run's buffered events are written and its file closed."""
        for run in list(self._runs.values()):
            run.closing = True
        while self.due():
            self.step()

    def close_all(self) -> None:
        """At exit: files are closed with what was written (a resumed run continues them)."""
        for run in self._runs.values():
            if run.file is not None:
                run.file.close()
        self._runs.clear()
