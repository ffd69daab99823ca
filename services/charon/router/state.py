"""The router's scheduling core: a sans-IO state machine with no sockets and no clock of its own.

Events go in (a client request, a worker message, a timer tick), each with ``now`` in seconds from
any monotonic clock; out come :class:`ToClient` / :class:`ToWorker` actions for the driver to
send. Everything the router decides lives here, so it is tested exhaustively with a fake clock:

* requests wait in one FIFO bounded by count and bytes; each waiting requester has a deadline
  enforced by :meth:`RouterState.on_tick`, not only when a worker frees up;
* workers are served least-recently-ready first and only while they have free capacity;
* every dispatched request is tracked per worker under a router-assigned token; a lost worker's
  requests go back to the head of the queue, up to ``max_attempts`` workers;
* with ``execution_deadline_s`` set, a request held by a worker longer than that is taken back the
  same way (its late reply is dropped; the slot stays taken until it comes, since the worker's
  engine is still busy with it); a worker that misses ``deadline_expel_after`` deadlines in a row
  is expelled (DISCONNECT ``deadline``);
* a well-formed request that cannot be served (queue full, deadline, workers lost, engine failure)
  is dropped or answered as :func:`charon.protocol.unservable.decide` says
  (``router.v1_failure_replies``);
* a resent PHOTONDATA (same header, metadata, frame lengths and end-of-frame checksums, confirmed
  by comparing bytes) joins its queued, in-flight or recently completed twin, so one simulation
  answers every requester exactly once;
* PING, RUN_BEGIN and RUN_END are answered here; DETECTOR_INFO from the workers' READY;
* a worker reply is forwarded only when it is a valid answer to its request
  (:func:`charon.router.replies.reply_problem`); a worker that sends another is treated as lost;
* a v2 HELLO is answered here too; a v2 SIMULATE is admitted within its session's credit and cut
  into JOBs by byte offsets (:mod:`charon.sessions`); a JOB_DONE fans out into one RESULT or ERROR
  per event (:mod:`charon.router.v2`).

Photon frames are never read beyond a few KiB at each end (the de-duplication checksum).

Every job is in one :class:`JobState` and moves only along :data:`EDGES`, through
:meth:`RouterState._move`, which also keeps the queue, in-flight and cache counters; a worker's
:class:`WorkerStatus` and the free list change only through :meth:`RouterState._restate`.
:meth:`RouterState.check_invariants` recomputes all of them from the jobs and workers themselves
(the tests call it after every step). A new job state is one enum member, its edges, and its
counter in :meth:`RouterState._tally`.
"""

from __future__ import annotations

import enum
import hmac
import logging
import zlib
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from charon.errors import (
    CharonError,
    DeadlineExceeded,
    ExecutionDeadlineExceeded,
    NoWorkers,
    QueueFull,
    RetriesExhausted,
    SimulationFailed,
    WorkerProtocolError,
)
from charon.metrics import kind_label
from charon.protocol import tokens, unservable, v1, v2
from charon.protocol import worker as wp
from charon.protocol.v1 import Frame, as_view
from charon.router.replies import reply_problem
from charon.router.v2 import V2_KIND, V2Part, welcome_of
from charon.runs import ledger as runs_ledger
from charon.runs.ledger import RunLedger
from charon.sessions import Limits, Sessions
from charon.settings import HeartbeatSettings, LimitsSettings, RouterSettings, RunSettings, V2Settings

log = logging.getLogger("charon.router")

#: Bytes checksummed at each end of every photon frame for the de-duplication key.
DEDUP_SAMPLE_BYTES: Final = 512
#: Frames shorter than this are copied out of their zmq message when a job enters the reply cache:
#: libzmq receives small messages into shared 8 KiB buffers, so a 100-byte frame kept as a
#: ``zmq.Frame`` can pin a whole buffer (and costs a Python object of its own). Larger frames have
#: a buffer of their own and are kept as they are (never copied).
COMPACT_BELOW: Final = 8192
#: What the reply cache counts per frame beyond its bytes: a frame kept as a zmq message (the
#: ``zmq.Frame`` object and libzmq's message header), and a frame copied into ``bytes``.
FRAME_OVERHEAD: Final = 320
BYTES_OVERHEAD: Final = 64
#: What the reply cache counts per job beyond its frames (the job, its lists, its index entries).
JOB_OVERHEAD: Final = 1024



class JobState(enum.Enum):
    """Where a job is; see :data:`EDGES` for how it moves."""

    NEW = "new"  # built from a request, not admitted yet
    QUEUED = "queued"  # waiting in the FIFO for a worker with a free slot
    IN_FLIGHT = "in_flight"  # held by one worker under one token
    DONE = "done"  # answered; the reply is kept for identical resends (de-duplication window)
    DROPPED = "dropped"  # finished: frames released, nothing refers to it any more


_J = JobState
#: Every move a job may make; :meth:`RouterState._move` refuses any other.
EDGES: Final = frozenset({
    (_J.NEW, _J.QUEUED),  # admitted to the queue
    (_J.QUEUED, _J.IN_FLIGHT),  # given to a worker
    (_J.IN_FLIGHT, _J.QUEUED),  # its worker was lost: back to the head of the queue
    (_J.IN_FLIGHT, _J.DONE),  # answered; the reply is cached for resends
    (_J.IN_FLIGHT, _J.DROPPED),  # answered and not cacheable, or given up after max_attempts
    (_J.QUEUED, _J.DROPPED),  # every requester's deadline passed, or answered without a worker
    (_J.DONE, _J.DROPPED),  # evicted from the reply cache
})


class WorkerStatus(enum.Enum):
    """What a registered worker can do now (the ``state`` label of ``charon_workers``)."""

    IDLE = "idle"  # holds no request; takes work
    BUSY = "busy"  # holds at least one request (or a slot an overdue request still occupies)
    DRAINED = "drained"  # draining and holds nothing: takes no work, waits to leave

_OUTCOMES: Final = {
    tokens.SIM_COMPLETE: "ok",
    tokens.SIM_COMPLETE_ASYNC: "ok",
    tokens.DETECTOR_INFO: "ok",
    tokens.ACK: "ok",
    tokens.SIM_FAILED: "simulation_failed",
    v2.MAGIC: "ok",  # a v2 JOB_DONE; its events' own outcomes travel in their RESULT / ERROR
}


@dataclass(slots=True)
class ToClient:
    """Send ``frames`` (envelope + v1 reply) on the client-facing socket."""

    frames: list[Frame]


@dataclass(slots=True)
class ToWorker:
    """Send ``frames`` (worker identity + message) on the worker-facing socket."""

    frames: list[Frame]


Action = ToClient | ToWorker


class Observer(Protocol):
    """Where the state machine reports what metrics count; the driver maps it to Prometheus."""

    def answered(self, kind: str, outcome: str, total_s: float) -> None: ...
    def dispatched(self, queue_s: float) -> None: ...
    def completed(self, n_photons: int, n_hits: int, service_s: float) -> None: ...
    def requeued(self) -> None: ...
    def deduplicated(self) -> None: ...
    def refused(self, reason: str) -> None: ...
    def expired(self) -> None: ...
    def overdue(self) -> None: ...
    def expelled(self) -> None: ...


class NullObserver:
    def answered(self, kind: str, outcome: str, total_s: float) -> None: ...
    def dispatched(self, queue_s: float) -> None: ...
    def completed(self, n_photons: int, n_hits: int, service_s: float) -> None: ...
    def requeued(self) -> None: ...
    def deduplicated(self) -> None: ...
    def refused(self, reason: str) -> None: ...
    def expired(self) -> None: ...
    def overdue(self) -> None: ...
    def expelled(self) -> None: ...


#: Metadata bytes and frame count: with the lengths PHOTONDATA validation implies, the cheap part of
#: the de-duplication key. Different events almost never share it, so the checksum part is
#: computed only when they do.
DedupKey = tuple[bytes, int]


def dedup_key(metadata: Frame, n_frames: int) -> DedupKey:
    """Header (implied), metadata and frame lengths (implied by the photon count and frame count)."""
    return bytes(as_view(metadata)), n_frames


def end_checksum(arrays: Sequence[memoryview]) -> int:
    """CRC-32 of each photon frame's first and last DEDUP_SAMPLE_BYTES: cost independent of size."""
    samples: list[memoryview] = []
    for view in arrays:
        n = len(view)
        if n <= 2 * DEDUP_SAMPLE_BYTES:
            samples.append(view)
        else:
            samples.append(view[:DEDUP_SAMPLE_BYTES])
            samples.append(view[n - DEDUP_SAMPLE_BYTES :])
    return zlib.crc32(b"".join(samples))


def same_frames(a: Sequence[Frame], b: Sequence[Frame]) -> bool:
    """Byte-for-byte equality of two frame lists (memcmp speed, no copies)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        vx, vy = as_view(x), as_view(y)
        if len(vx) != len(vy) or not hmac.compare_digest(vx, vy):
            return False
    return True


@dataclass(slots=True, eq=False)
class Waiter:
    """One requester waiting for a reply (several may share a job)."""

    envelope: list[Frame]
    arrived: float
    job: Job
    deadline: float = 0.0
    answered: bool = False
    #: The v2 events this requester waits for (None for a v1 request).
    part: V2Part | None = None


@dataclass(slots=True, eq=False)
class Job:
    """One unit of work: what a worker simulates once, however many requesters wait for it."""

    kind: str
    payload: list[Frame]
    nbytes: int
    n_photons: int
    event_id: int | None
    key: DedupKey | None
    waiters: list[Waiter] = field(default_factory=list)
    checksum: int | None = None
    state: JobState = JobState.NEW
    attempts: int = 0
    enqueued: float = 0.0
    dispatched: float = 0.0
    token: int = 0
    reply: list[Frame] | None = None
    #: What the job costs while cached (frames, their objects, the job itself): see :func:`cost`.
    cost: int = 0
    done_at: float = 0.0


@dataclass(slots=True, eq=False)
class WorkerEntry:
    identity: bytes
    capacity: int
    fingerprint: str | None
    engine: str
    legacy: bool
    expiry: float
    in_flight: dict[int, Job] = field(default_factory=dict)
    #: Tokens taken back at the execution deadline: each keeps its slot until its late reply.
    overdue: set[int] = field(default_factory=set)
    #: Execution deadlines missed since the last reply in time.
    misses: int = 0
    busy_since: float = 0.0
    draining: bool = False
    runs: bool = False  # writes async-mode run files

    @property
    def status(self) -> WorkerStatus:
        if self.in_flight or self.overdue:
            return WorkerStatus.BUSY
        return WorkerStatus.DRAINED if self.draining else WorkerStatus.IDLE

    @property
    def takes_work(self) -> bool:
        return not self.draining and len(self.in_flight) + len(self.overdue) < self.capacity


class RouterState:
    """The router's queue, worker pool, in-flight table and de-duplication cache."""

    def __init__(self, router: RouterSettings, heartbeat: HeartbeatSettings,
                 observer: Observer | None = None, v2_settings: V2Settings | None = None,
                 limits: LimitsSettings | None = None, *, runs: RunSettings | None = None) -> None:
        self.settings = router
        self.limits = limits or LimitsSettings()
        v2s = v2_settings or V2Settings()
        self.sessions = Sessions(Limits(v2s.credit, v2s.max_events_per_message, v2s.max_photons_per_message,
                                        v2s.job_max_photons), v2s.max_sessions)
        #: v1 async mode (``runs.async_mode``): the open runs, each written by one worker.
        self.runs: RunLedger | None = None
        self._run_owner: dict[int, bytes] = {}
        if runs is not None and runs.async_mode:
            # The events of all runs kept for their writers share the queue's byte bound.
            self.runs = RunLedger(flush_events=runs.flush_events, flush_bytes=runs.flush_bytes,
                                  idle_timeout_s=runs.idle_timeout_s, allow_absolute=runs.allow_absolute,
                                  max_total_bytes=router.queue_max_bytes)
        self.interval = heartbeat.interval_s
        self.expiry_s = heartbeat.interval_s * heartbeat.liveness
        self.observer: Observer = observer or NullObserver()
        self.workers: dict[bytes, WorkerEntry] = {}
        self._free: OrderedDict[bytes, WorkerEntry] = OrderedDict()
        self._queue: deque[Job] = deque()
        self._deadlines: deque[tuple[float, Waiter]] = deque()
        #: (execution deadline, worker, token) in dispatch order, hence in deadline order.
        self._exec_deadlines: deque[tuple[float, bytes, int]] = deque()
        self._live: dict[DedupKey, list[Job]] = {}
        self._completed: deque[Job] = deque()
        # Counters, kept by _tally (jobs) and _restate / _register / _unregister (workers) only.
        self.queued = 0
        self.queued_bytes = 0
        self.in_flight = 0
        self._completed_bytes = 0
        self._by_status: Counter[WorkerStatus] = Counter()
        self._charon_workers = 0
        self._next_token = 1
        self._next_heartbeat = 0.0
        self._pool_fingerprint: str | None = router.fingerprint
        self._pool_info: list[Frame] | None = None

    # ---- observable state ------------------------------------------------------------------------

    @property
    def idle_workers(self) -> int:
        """Workers holding no request and able to take one (a draining worker takes none)."""
        return self._by_status[WorkerStatus.IDLE]

    @property
    def busy_workers(self) -> int:
        """Workers holding at least one request."""
        return self._by_status[WorkerStatus.BUSY]

    @property
    def pool_fingerprint(self) -> str | None:
        return self._pool_fingerprint

    def next_wakeup(self) -> float:
        """When :meth:`on_tick` next has work to do (heartbeats, expiries, deadlines)."""
        when = self._next_heartbeat
        if self._deadlines and self._deadlines[0][0] < when:
            when = self._deadlines[0][0]
        if self._exec_deadlines and self._exec_deadlines[0][0] < when:
            when = self._exec_deadlines[0][0]
        idle = self.runs.next_wakeup() if self.runs is not None else None
        if idle is not None and idle < when:
            when = idle
        return when

    def waiting(self) -> Iterator[Waiter]:
        """Every requester still waiting for its reply (its job queued or in flight)."""
        for job in self._jobs():
            if job.state in (JobState.QUEUED, JobState.IN_FLIGHT):
                yield from job.waiters

    # ---- transitions -----------------------------------------------------------------------------

    def _move(self, job: Job, to: JobState) -> None:
        """The one place a job changes state: checks the edge and keeps every job counter."""
        if (job.state, to) not in EDGES:
            raise AssertionError(f"{job.kind} job (event {job.event_id}): no edge {job.state.name} -> {to.name}")
        self._tally(job, -1)
        job.state = to
        self._tally(job, +1)
        if to is JobState.DROPPED:
            job.payload = []
            job.reply = None
            self._forget(job)

    def _tally(self, job: Job, sign: int) -> None:
        if job.state is JobState.QUEUED:
            self.queued += sign
            self.queued_bytes += sign * job.nbytes
        elif job.state is JobState.IN_FLIGHT:
            self.in_flight += sign
        elif job.state is JobState.DONE:
            self._completed_bytes += sign * job.cost

    def _restate(self, worker: WorkerEntry, before: WorkerStatus | None) -> None:
        """After ``worker`` changed (``before`` = its status then, None = just registered): keep
        the status counts and the free list (least recently given work or freed first)."""
        after = worker.status
        if before is not after:
            if before is not None:
                self._by_status[before] -= 1
            self._by_status[after] += 1
        if worker.takes_work:
            self._free[worker.identity] = worker
            self._free.move_to_end(worker.identity)
        else:
            self._free.pop(worker.identity, None)

    def _register(self, worker: WorkerEntry) -> None:
        self.workers[worker.identity] = worker
        if not worker.legacy:
            self._charon_workers += 1
        self._restate(worker, None)

    def _unregister(self, worker: WorkerEntry) -> None:
        del self.workers[worker.identity]
        self._free.pop(worker.identity, None)
        self._by_status[worker.status] -= 1
        if not worker.legacy:
            self._charon_workers -= 1
            if self._charon_workers == 0:
                self._pool_fingerprint = self.settings.fingerprint
                self._pool_info = None

    def _assign(self, job: Job, worker: WorkerEntry, now: float) -> int:
        """Give a queued job to a worker with a free slot; returns its token."""
        before = worker.status
        token = self._next_token
        self._next_token += 1
        self._move(job, JobState.IN_FLIGHT)
        job.token = token
        job.attempts += 1
        job.dispatched = now
        if not worker.in_flight:
            worker.busy_since = now
        worker.in_flight[token] = job
        if self.settings.execution_deadline_s > 0:
            self._exec_deadlines.append((now + self.settings.execution_deadline_s, worker.identity, token))
        self._restate(worker, before)
        return token

    def _release(self, worker: WorkerEntry, token: int) -> Job | None:
        """The worker no longer holds ``token``: its job, or None for a token it did not hold."""
        before = worker.status
        job = worker.in_flight.pop(token, None)
        if job is not None:
            self._restate(worker, before)
        return job

    # ---- invariants ------------------------------------------------------------------------------

    def _jobs(self) -> Iterator[Job]:
        """Every job still referenced (queued, in flight or cached), each once."""
        seen: set[int] = set()
        for job in (*self._queue, *(j for w in self.workers.values() for j in w.in_flight.values()),
                    *self._completed):
            if id(job) not in seen:
                seen.add(id(job))
                yield job

    def check_invariants(self) -> None:
        """Recompute every counter and index from the jobs and workers; AssertionError if one is off.

        O(jobs + workers): for tests, not for the request path.
        """
        problems: list[str] = []

        def expect(what: str, kept: object, actual: object) -> None:
            if kept != actual:
                problems.append(f"{what}: kept {kept!r}, actual {actual!r}")

        queued = [j for j in {id(j): j for j in self._queue}.values() if j.state is JobState.QUEUED]
        expect("queued", self.queued, len(queued))
        expect("queued_bytes", self.queued_bytes, sum(j.nbytes for j in queued))
        held = [(w, t, j) for w in self.workers.values() for t, j in w.in_flight.items()]
        expect("in_flight", self.in_flight, len(held))
        for w, t, j in held:
            expect(f"state of token {t} on {w.identity.hex()}", j.state, JobState.IN_FLIGHT)
            expect(f"token of a job on {w.identity.hex()}", j.token, t)
        self._check_execution(expect, {(w.identity, t) for w, t, _ in held})
        done = list(self._completed)
        expect("cached job states", {j.state for j in done} - {JobState.DONE}, set())
        expect("completed_bytes", self._completed_bytes, sum(j.cost for j in done))
        expect("costs of cached jobs", [j.cost for j in done],
               [JOB_OVERHEAD + cost(j.payload) + cost(j.reply or []) for j in done])
        expect("worker status counts", +self._by_status, Counter(w.status for w in self.workers.values()))
        expect("free list", set(self._free), {i for i, w in self.workers.items() if w.takes_work})
        expect("CHARONW1 workers", self._charon_workers, sum(not w.legacy for w in self.workers.values()))
        if self._charon_workers == 0:
            expect("pool fingerprint without workers", self._pool_fingerprint, self.settings.fingerprint)
        live = {id(j) for twins in self._live.values() for j in twins}
        for job in self._jobs():
            if job.key is not None and job.state is not JobState.DROPPED:
                expect(f"{job.kind} job {job.event_id} in the de-duplication index", id(job) in live, True)
            if job.state in (JobState.QUEUED, JobState.IN_FLIGHT):
                expect(f"{job.state.name} job {job.event_id} has requesters", bool(job.waiters), True)
                expect(f"{job.state.name} job {job.event_id}: answered requesters still attached",
                       [w for w in job.waiters if w.answered], [])
            elif job.state is JobState.DONE:
                expect(f"cached job {job.event_id} requesters", job.waiters, [])
        if problems:
            raise AssertionError("router state invariants broken: " + "; ".join(problems))

    def _check_execution(self, expect: Callable[[str, object, object], None], held: set[tuple[bytes, int]]) -> None:
        """The execution-deadline part of :meth:`check_invariants` (``held``: (worker, token) in flight)."""
        if self.settings.execution_deadline_s > 0:
            timed = {(i, t) for _, i, t in self._exec_deadlines}
            expect("in-flight tokens without an execution deadline", held - timed, set())
        for w in self.workers.values():
            expect(f"tokens both in flight and overdue on {w.identity.hex()}", set(w.in_flight) & w.overdue, set())
            expect(f"slots used on {w.identity.hex()} within capacity",
                   len(w.in_flight) + len(w.overdue) <= w.capacity, True)
            expect(f"deadline misses of registered worker {w.identity.hex()} below the expulsion bound",
                   w.misses < self.settings.deadline_expel_after, True)

    # ---- client side -----------------------------------------------------------------------------

    def on_client(self, envelope: list[Frame], payload: list[Frame], now: float, peer: str = "") -> list[Action]:
        """A request from the client-facing socket; ``envelope`` is echoed in front of the reply;
        ``peer`` is the client's network address (it keys async-mode runs).

        ``payload`` frames are stored and forwarded as they are (zmq frames: never copied).
        """
        if v2.is_v2(payload):
            return self._v2(envelope, payload, now)
        try:
            v1.check_size(payload, self.limits.max_request_bytes, self.limits.max_request_photons)
            request = v1.decode_request(payload)
        except CharonError as exc:
            kind = kind_label(v1.header_of(payload))
            if exc.drop_reason is not None:  # over-size: well formed, but not served
                return self._unservable(kind, exc, envelope, 0.0)
            log.info("%s rejected (%s): %s", kind, exc.outcome, exc)
            self.observer.answered(kind, exc.outcome, 0.0)
            return [ToClient([*envelope, *v1.error_reply(exc)])]
        if self.runs is not None and isinstance(request, (v1.RunBegin, v1.RunEnd, v1.PhotonData)):
            actions = self._run_request(envelope, payload, request, peer, now)
            if actions is not None:
                return actions
        if isinstance(request, v1.PhotonData):
            if request.n_photons == 0:  # nothing to simulate: never queue it behind real work
                self.observer.answered("photondata", "ok", 0.0)
                return [ToClient([*envelope, *v1.empty_sim_complete(request.event_id)])]
            return self._photondata(envelope, payload, request, now)
        if isinstance(request, v1.DetectorInfoRequest):
            if self._pool_info is not None:
                self.observer.answered("detector_info", "ok", 0.0)
                return [ToClient([*envelope, *self._pool_info])]
            job = Job("detector_info", payload, _size(payload), 0, None, None)
            return self._enqueue(job, envelope, now)
        kind = "ping" if isinstance(request, v1.Ping) else "run_begin" if isinstance(request, v1.RunBegin) else "run_end"
        self.observer.answered(kind, "ok", 0.0)
        return [ToClient([*envelope, tokens.ACK])]

    def _v2(self, envelope: list[Frame], payload: list[Frame], now: float) -> list[Action]:
        """A v2 message: HELLO answered here, SIMULATE admitted and cut into jobs, errors at once."""
        identity = bytes(as_view(envelope[0])) if envelope else b""
        try:
            message = v2.decode_from_client(payload)
        except CharonError as exc:
            log.info("v2 message rejected (%s): %s", exc.outcome, exc)
            self.observer.answered(V2_KIND, exc.outcome, 0.0)
            return [ToClient([*envelope, *m]) for m in v2.rejection(exc)]
        if isinstance(message, v2.Hello):
            engine = next((w.engine for w in self.workers.values() if not w.legacy), None)
            if self._pool_info is None or self._pool_fingerprint is None or engine is None:
                self.observer.answered("hello_v2", "no_workers", 0.0)
                return [ToClient([*envelope, *v2.error(v2.NO_TAG, v2.NO_EVENT, v2.ErrorCode.NO_WORKERS,
                                                       "no charon worker registered yet: HELLO again later")])]
            self.sessions.hello(identity, message)
            self.observer.answered("hello_v2", "ok", 0.0)
            welcome = welcome_of(self.sessions.limits, engine, self._pool_fingerprint, self._pool_info[1:4],
                                 message.seed)
            return [ToClient([*envelope, *v2.welcome(welcome)])]
        admission = self.sessions.admit(identity, message)
        actions: list[Action] = [ToClient([*envelope, *m]) for m in admission.errors]
        if admission.errors:
            self.observer.answered(V2_KIND, "refused", 0.0)
        overhead = _size(payload[:2])
        for frames, events, photons in admission.jobs:
            nbytes = 4 * v2.N_PHOTON_FRAMES * photons + overhead + len(as_view(frames[2]))
            job = Job(V2_KIND, frames, nbytes, photons, None, None)
            actions.extend(self._enqueue(job, envelope, now, V2Part(identity, events, self.sessions)))
        return actions

    def _deliver(self, waiter: Waiter, payload: Sequence[Frame]) -> list[Action]:
        """The reply messages a requester gets for its job's reply ``payload``."""
        if waiter.part is None:
            return [ToClient([*waiter.envelope, *payload])]
        return [ToClient([*waiter.envelope, *m]) for m in waiter.part.replies(payload)]

    def _deliver_error(self, waiter: Waiter, err: CharonError, now: float) -> list[Action]:
        """What a requester gets when its job fails with ``err``: for v1 as the failure-reply policy
        says (a reply, or none); for v2 always one ERROR per event, with the failure's code."""
        if waiter.part is None:
            return self._unservable(waiter.job.kind, err, waiter.envelope, now - waiter.arrived)
        self.observer.answered(waiter.job.kind, err.outcome, now - waiter.arrived)
        log.warning("%s job of %d event(s) failed (%s): %s", waiter.job.kind, len(waiter.part.events), err.outcome, err)
        return [ToClient([*waiter.envelope, *m]) for m in waiter.part.errors(err)]

    # ---- async runs -------------------------------------------------------------------------------

    def _run_request(self, envelope: list[Frame], payload: list[Frame], request: v1.Request, peer: str,
                     now: float) -> list[Action] | None:
        """RUN_BEGIN, RUN_END and a run's PHOTONDATA in async mode (None: not a run's request)."""
        assert self.runs is not None
        refused = self.runs.refused_names
        if isinstance(request, v1.RunBegin):
            kind, ledger_actions = "run_begin", self.runs.run_begin(peer, envelope, request.filename, now)
        elif isinstance(request, v1.RunEnd):
            kind, ledger_actions = "run_end", self.runs.run_end(peer, envelope, now)
        else:
            assert isinstance(request, v1.PhotonData)
            taken = self.runs.photondata(peer, envelope, request, payload, now)
            if taken is None:
                return None
            kind, ledger_actions = "photondata", taken
        self.observer.answered(kind, "bad_filename" if self.runs.refused_names > refused else "ok", 0.0)
        return self._run_actions(ledger_actions)

    def _run_actions(self, ledger_actions: Sequence[runs_ledger.Action]) -> list[Action]:
        """Ledger decisions as messages: replies to clients, writer commands to each run's owner.
        A run without an owner (no worker takes runs yet) is given one as soon as one registers."""
        actions: list[Action] = []
        for action in ledger_actions:
            if isinstance(action, runs_ledger.Reply):
                actions.append(ToClient([*action.envelope, *action.frames]))
                continue
            owner = self._run_owner.get(action.run_id)
            if owner is None:
                if isinstance(action, runs_ledger.Open):
                    actions.extend(self._give_run(action.run_id))
                continue  # the ledger keeps the events; the new owner gets them on resume
            if isinstance(action, runs_ledger.Record):
                actions.append(ToWorker([owner, *wp.run_event(action.run_id, action.seq, action.payload)]))
            elif isinstance(action, runs_ledger.Open):
                actions.append(ToWorker([owner, *wp.run_open(action.run_id, str(action.name), action.resume_from,
                                                             action.flush_events, action.flush_bytes)]))
            else:
                actions.append(ToWorker([owner, *wp.run_close(action.run_id)]))
        return actions

    def _give_run(self, run_id: int) -> list[Action]:
        """Choose the run's owner (the writer with the fewest runs) and send it the run so far."""
        assert self.runs is not None
        writers = [w for w in self.workers.values() if w.runs and not w.draining]
        if not writers:
            log.warning("run %d: no worker takes runs (started with --outdir); its events wait", run_id)
            return []
        load = Counter(self._run_owner.values())
        owner = min(writers, key=lambda w: load[w.identity])
        self._run_owner[run_id] = owner.identity
        log.info("run %d written by worker %s", run_id, owner.identity.hex())
        return self._run_actions(self.runs.resume(run_id))

    def _run_progress(self, worker: WorkerEntry, msg: wp.RunProgress) -> list[Action]:
        assert self.runs is not None
        if self._run_owner.get(msg.run_id) != worker.identity:
            return []  # from a former owner: the run has moved on
        if msg.closed:
            del self._run_owner[msg.run_id]
            return self._run_actions(self.runs.closed(msg.run_id, msg.count))
        return self._run_actions(self.runs.written(msg.run_id, msg.count))

    def _runs_lost(self, worker: WorkerEntry) -> list[Action]:
        """``worker`` is gone: its runs go to other writers, from their last flushed entry."""
        lost = [run_id for run_id, owner in self._run_owner.items() if owner == worker.identity]
        actions: list[Action] = []
        for run_id in lost:
            del self._run_owner[run_id]
            log.warning("run %d lost its writer %s: resuming elsewhere", run_id, worker.identity.hex())
            actions.extend(self._give_run(run_id))
        return actions

    def _unowned_runs(self) -> list[Action]:
        if self.runs is None:
            return []
        actions: list[Action] = []
        for run in list(self.runs.runs()):
            if run.run_id not in self._run_owner:
                actions.extend(self._give_run(run.run_id))
        return actions

    def _photondata(self, envelope: list[Frame], payload: list[Frame], request: v1.PhotonData,
                    now: float) -> list[Action]:
        key: DedupKey | None = None
        if self.settings.dedup_window_s > 0:
            key = dedup_key(payload[1], len(payload))
            if key in self._live:
                self._evict(now)
                checksum = end_checksum(request.arrays)
                for twin in self._live.get(key, ()):
                    if twin.checksum is None:
                        twin.checksum = end_checksum(v1.decode_photondata(twin.payload).arrays)
                    if twin.checksum == checksum and same_frames(twin.payload, payload):
                        return self._join(twin, envelope, now)
        # Validation fixed the twelve array lengths: only header, metadata and extra frames vary.
        extra = payload[tokens.PHOTONDATA_FRAMES :]
        nbytes = request.nbytes + _size(payload[:2]) + (_size(extra) if extra else 0)
        job = Job("photondata", payload, nbytes, request.n_photons, request.event_id, key)
        return self._enqueue(job, envelope, now)

    def _join(self, twin: Job, envelope: list[Frame], now: float) -> list[Action]:
        self.observer.deduplicated()
        if twin.state is JobState.DONE:
            assert twin.reply is not None
            self.observer.answered(twin.kind, "ok", 0.0)
            return [ToClient([*envelope, *twin.reply])]
        waiter = Waiter(envelope, now, twin)
        twin.waiters.append(waiter)
        if twin.state is JobState.QUEUED:
            waiter.deadline = now + self.settings.queue_deadline_s
            self._deadlines.append((waiter.deadline, waiter))
        log.debug("event %s resent: joined its %s twin", twin.event_id, twin.state.value)
        return []

    def _enqueue(self, job: Job, envelope: list[Frame], now: float, part: V2Part | None = None) -> list[Action]:
        s = self.settings
        waiter = Waiter(envelope, now, job, now + s.queue_deadline_s, part=part)
        if self.queued >= s.queue_max_requests or self.queued_bytes + job.nbytes > s.queue_max_bytes:
            err = QueueFull(f"queue holds {self.queued} requests, {self.queued_bytes} bytes", job.event_id)
            return self._deliver_error(waiter, err, now)
        job.waiters.append(waiter)
        job.enqueued = now
        self._move(job, JobState.QUEUED)
        self._queue.append(job)
        self._deadlines.append((waiter.deadline, waiter))
        if job.key is not None:
            self._live.setdefault(job.key, []).append(job)
        actions = self._dispatch(now)
        self._trim_deadlines()
        return actions

    def _unservable(self, kind: str, err: CharonError, envelope: list[Frame], waited_s: float) -> list[Action]:
        """One requester of a request that cannot be served: answered or dropped, as the policy says."""
        verdict = unservable.decide(err, self.settings.v1_failure_replies)
        self.observer.answered(kind, verdict.outcome, waited_s)
        if verdict.reply is None:
            log.warning("%s event %s dropped without a reply (%s): %s", kind, err.event_id, verdict.outcome, err)
            return []
        log.warning("%s rejected (%s): %s", kind, verdict.outcome, err)
        return [ToClient([*envelope, *verdict.reply])]

    def _fail(self, job: Job, err: CharonError, now: float) -> list[Action]:
        """Every requester of ``job`` meets ``err``."""
        actions: list[Action] = []
        for waiter in job.waiters:
            if not waiter.answered:
                waiter.answered = True
                actions.extend(self._deliver_error(waiter, err, now))
        job.waiters.clear()
        return actions

    def _trim_deadlines(self) -> None:
        """Drop deadline entries of requesters no longer waiting in the queue (most are dispatched at once)."""
        deadlines = self._deadlines
        while deadlines:
            deadline, waiter = deadlines[0]
            if not waiter.answered and waiter.job.state is JobState.QUEUED and waiter.deadline == deadline:
                return
            deadlines.popleft()

    # ---- worker side -----------------------------------------------------------------------------

    def on_worker(self, identity: bytes, frames: list[Frame], now: float) -> list[Action]:
        """A message from the worker-facing socket (routing identity removed)."""
        try:
            msg = wp.decode_from_worker(frames)
        except WorkerProtocolError as exc:
            log.warning("invalid message from worker %s dropped: %s", identity.hex(), exc)
            return []
        worker = self.workers.get(identity)
        if isinstance(msg, wp.Ready):
            return self._ready(identity, worker, msg, now)
        if worker is None:
            if isinstance(msg, (wp.Disconnect, wp.RunProgress)) or msg.legacy:
                return []
            # Unknown (the router restarted, or declared it dead): make it register again.
            log.info("message from unregistered worker %s: asking it to reconnect", identity.hex())
            return [ToWorker([identity, *wp.disconnect(wp.REASON_UNKNOWN)])]
        worker.expiry = now + self.expiry_s
        if isinstance(msg, wp.Reply):
            return self._reply(worker, msg.token, msg.payload, now)
        if isinstance(msg, wp.RunProgress):
            return self._run_progress(worker, msg) if self.runs is not None else []
        if isinstance(msg, wp.Disconnect):
            if msg.reason == wp.REASON_DRAIN:
                log.info("worker %s draining (%d in flight)", identity.hex(), len(worker.in_flight))
                before = worker.status
                worker.draining = True
                self._restate(worker, before)
                return [ToWorker([identity, *wp.disconnect(wp.REASON_ACK)])]
            log.info("worker %s left (%s)", identity.hex(), msg.reason.decode("ascii", "replace"))
            actions = self._remove(worker, now)
            return actions + self._dispatch(now)
        return []

    def on_worker_gone(self, identity: bytes, now: float) -> list[Action]:
        """The worker-facing socket can no longer reach ``identity``: its connection closed.

        A reconnecting worker comes back under a new identity, so this one is dead for good: its
        requests are requeued now rather than when its heartbeats would have run out.
        """
        worker = self.workers.get(identity)
        if worker is None:
            return []
        log.warning("worker %s disconnected", identity.hex())
        self.observer.expired()
        return self._remove(worker, now) + self._dispatch(now)

    def _ready(self, identity: bytes, worker: WorkerEntry | None, msg: wp.Ready, now: float) -> list[Action]:
        if worker is not None:
            log.warning("worker %s sent READY twice: dropped", identity.hex())
            dropped = self._remove(worker, now)
            if not worker.legacy:
                dropped.append(ToWorker([identity, *wp.disconnect(wp.REASON_PROTOCOL)]))
            return dropped + self._dispatch(now)
        if msg.legacy:
            if not self.settings.accept_legacy_workers:
                log.warning("ChAR0N worker %s refused: router.accept_legacy_workers is off", identity.hex())
                self.observer.refused("legacy")
                return []
        elif self._pool_fingerprint is not None and msg.fingerprint != self._pool_fingerprint:
            log.error(
                "worker %s refused: detector fingerprint %s differs from the pool's %s%s",
                identity.hex(), msg.fingerprint[:16], self._pool_fingerprint[:16],
                " (pinned by router.fingerprint)" if self.settings.fingerprint else "",
            )
            self.observer.refused("fingerprint")
            return [ToWorker([identity, *wp.disconnect(wp.REASON_FINGERPRINT)])]
        worker = WorkerEntry(identity, msg.capacity, None if msg.legacy else msg.fingerprint, msg.engine,
                             msg.legacy, now + self.expiry_s, runs=msg.runs)
        self._register(worker)
        actions: list[Action] = []
        if not msg.legacy:
            if self._pool_fingerprint is None:
                self._pool_fingerprint = msg.fingerprint
            if self._pool_info is None and msg.detector_info is not None:
                self._pool_info = [tokens.DETECTOR_INFO, *msg.detector_info]
            actions.append(ToWorker([identity, *wp.heartbeat()]))
        log.info("worker %s registered: %s, capacity %d", identity.hex(),
                 "ChAR0N (legacy)" if msg.legacy else f"engine {msg.engine}, detector {msg.fingerprint[:16]}",
                 msg.capacity)
        if worker.runs:
            actions.extend(self._unowned_runs())
        return actions + self._dispatch(now)

    def _reply(self, worker: WorkerEntry, token: int, payload: list[Frame], now: float) -> list[Action]:
        held = worker.in_flight.get(token)
        if held is None:
            if token in worker.overdue:  # taken back at its deadline: the slot is free again
                before = worker.status
                worker.overdue.discard(token)
                self._restate(worker, before)
                log.info("reply after the execution deadline (token %d) from worker %s dropped",
                         token, worker.identity.hex())
                return self._dispatch(now)
            log.info("late reply (token %d) from worker %s dropped", token, worker.identity.hex())
            return []
        part = held.waiters[0].part if held.waiters else None
        problem = reply_problem(held.kind, held.event_id, payload, self._pool_channels(),
                                part.events if part is not None else ())
        if problem is not None:
            return self._expel(worker, f"invalid reply to {held.kind} event {held.event_id}: {problem}", now)
        job = self._release(worker, token)
        assert job is held
        worker.misses = 0
        actions = self._complete(job, payload, now)
        # The freed slot's next request goes out before the replies: the worker starts on it while
        # the router sends them (a v2 job's replies are one message per event).
        return self._dispatch(now) + actions

    def _pool_channels(self) -> int | None:
        """P, the PMT count of the pool's detector (None while no CHARONW1 worker has told it)."""
        if self._pool_info is None:
            return None
        return len(as_view(self._pool_info[1])) // 4

    def _expel(self, worker: WorkerEntry, why: str, now: float) -> list[Action]:
        """A worker that sent what no working worker sends is treated as failed: removed (counted
        as expired), its requests requeued under the max_attempts rule, told to reconnect."""
        log.error("worker %s expelled: %s; its %d request(s) go back to the queue", worker.identity.hex(), why,
                  len(worker.in_flight))
        self.observer.expired()
        actions = self._remove(worker, now)
        if not worker.legacy:
            actions.append(ToWorker([worker.identity, *wp.disconnect(wp.REASON_PROTOCOL)]))
        return actions + self._dispatch(now)

    def _complete(self, job: Job, payload: list[Frame], now: float) -> list[Action]:
        header = v1.header_of(payload)
        outcome = _OUTCOMES.get(header, "error")
        failed = outcome != "ok" and unservable.decide(
            SimulationFailed("", job.event_id), self.settings.v1_failure_replies).dropped
        if job.kind == "photondata":
            if header == tokens.SIM_COMPLETE and len(payload) >= tokens.SIM_COMPLETE_FRAMES:
                self.observer.completed(job.n_photons, len(as_view(payload[2])) // 4, now - job.dispatched)
            else:
                self.observer.completed(0, 0, now - job.dispatched)
        elif job.kind == V2_KIND:
            self.observer.completed(job.n_photons, V2Part.hits_of(payload), now - job.dispatched)
        if failed:  # the worker answered SIM_FAILED (or another reply the client rejects)
            err = SimulationFailed(f"the worker answered {header[:32]!r}", job.event_id)
            actions = self._fail(job, err, now)
        else:
            actions = self._answer(job, payload, outcome, now)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s event %s: %s after %.3f s on a worker, %d requester(s)", job.kind, job.event_id,
                      outcome, now - job.dispatched, len(actions))
        if outcome == "ok" and job.key is not None:
            job.payload = compact(job.payload)
            job.reply = compact(payload)
            job.cost = JOB_OVERHEAD + cost(job.payload) + cost(job.reply)
            job.done_at = now
            self._move(job, JobState.DONE)
            self._completed.append(job)
        else:
            self._move(job, JobState.DROPPED)
        return actions

    def _answer(self, job: Job, payload: Sequence[Frame], outcome: str, now: float) -> list[Action]:
        actions: list[Action] = []
        for waiter in job.waiters:
            if not waiter.answered:
                waiter.answered = True
                self.observer.answered(job.kind, outcome, now - waiter.arrived)
                actions.extend(self._deliver(waiter, payload))
        job.waiters.clear()
        return actions

    # ---- scheduling ------------------------------------------------------------------------------

    def _dispatch(self, now: float) -> list[Action]:
        actions: list[Action] = []
        queue = self._queue
        while queue:
            job = queue[0]
            if job.state is not JobState.QUEUED:
                queue.popleft()
                continue
            if job.kind == "detector_info" and self._pool_info is not None:
                queue.popleft()
                actions.extend(self._answer(job, self._pool_info, "ok", now))
                self._move(job, JobState.DROPPED)
                continue
            if not self._free:
                break
            worker = next(iter(self._free.values()))
            if worker.legacy and job.kind == V2_KIND:  # a ChAR0N worker cannot take a v2 JOB
                charon = next((w for w in self._free.values() if not w.legacy), None)
                if charon is None:
                    if not self._v1_behind_v2(worker, now, actions):
                        break
                    continue
                worker = charon
            queue.popleft()
            actions.append(self._give(job, worker, now))
        return actions

    def _give(self, job: Job, worker: WorkerEntry, now: float) -> ToWorker:
        token = self._assign(job, worker, now)
        self.observer.dispatched(now - job.enqueued)
        msg = wp.legacy_request(token, job.payload) if worker.legacy else wp.request(token, job.payload)
        return ToWorker([worker.identity, *msg])

    def _v1_behind_v2(self, legacy: WorkerEntry, now: float, actions: list[Action]) -> bool:
        """Only ChAR0N workers are free and v2 jobs head the queue: give ``legacy`` the first v1 job
        queued behind them (False when there is none), so v2 work never holds v1 work back."""
        job = next((j for j in self._queue if j.state is JobState.QUEUED and j.kind != V2_KIND), None)
        if job is None:
            return False
        self._queue.remove(job)
        actions.append(self._give(job, legacy, now))
        return True

    def _remove(self, worker: WorkerEntry, now: float) -> list[Action]:
        """Forget a worker; its in-flight requests go back to the head of the queue (or fail), its
        async runs to other writers."""
        self._unregister(worker)
        held, worker.in_flight = worker.in_flight, {}
        worker.overdue.clear()
        actions: list[Action] = self._runs_lost(worker) if self._run_owner else []
        for job in reversed(list(held.values())):
            actions.extend(self._retry(job, RetriesExhausted(
                f"{job.kind} event {job.event_id}: {job.attempts} workers lost while simulating it",
                job.event_id), now))
        if held:
            log.warning("worker %s lost with %d request(s) in flight: requeued", worker.identity.hex(), len(held))
        return actions

    def _retry(self, job: Job, exhausted: RetriesExhausted, now: float) -> list[Action]:
        """An in-flight job taken from its worker: back to the head of the queue, or, after
        ``max_attempts`` workers, failed with ``exhausted``."""
        if job.attempts >= self.settings.max_attempts:
            log.error("%s", exhausted)
            actions = self._fail(job, exhausted, now)
            self._move(job, JobState.DROPPED)
            return actions
        self._move(job, JobState.QUEUED)
        job.enqueued = now
        self._queue.appendleft(job)
        for waiter in job.waiters:
            waiter.deadline = now + self.settings.queue_deadline_s
            self._deadlines.append((waiter.deadline, waiter))
        self.observer.requeued()
        return []

    def _forget(self, job: Job) -> None:
        """Remove a finished job from the de-duplication index."""
        if job.key is None:
            return
        twins = self._live.get(job.key)
        if twins is not None:
            if job in twins:
                twins.remove(job)
            if not twins:
                del self._live[job.key]

    def housekeeping(self, now: float) -> None:
        """Bookkeeping that need not delay a reply: trims the reply cache to its bounds.

        The driver calls it after sending each batch of actions.
        """
        self._evict(now)
        self._trim_executions()

    def _trim_executions(self) -> None:
        """Drop execution-deadline entries of requests already answered from the head (most are
        answered long before their deadline; the rest wait behind the oldest one still held)."""
        pending = self._exec_deadlines
        while pending:
            _, identity, token = pending[0]
            worker = self.workers.get(identity)
            if worker is not None and token in worker.in_flight:
                return
            pending.popleft()

    def _evict(self, now: float) -> None:
        window = self.settings.dedup_window_s
        limit = self.settings.dedup_max_bytes
        done = self._completed
        while done and (done[0].done_at + window <= now or self._completed_bytes > limit):
            self._move(done.popleft(), JobState.DROPPED)

    # ---- timers ----------------------------------------------------------------------------------

    def on_tick(self, now: float) -> list[Action]:
        """Heartbeats, worker expiry, queue deadlines, cache eviction; call at :meth:`next_wakeup`."""
        actions: list[Action] = []
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.interval
            actions.extend(self._heartbeats(now))
            self._evict(now)
        self._trim_deadlines()
        actions.extend(self._expire_deadlines(now))
        actions.extend(self._expire_executions(now))
        if self.runs is not None:
            actions.extend(self._run_actions(self.runs.tick(now)))
        if actions:
            log.debug("tick: %d actions", len(actions))
        return actions + self._dispatch(now)

    def _heartbeats(self, now: float) -> list[Action]:
        """A heartbeat to every live worker; workers silent past their expiry are removed."""
        actions: list[Action] = []
        for worker in list(self.workers.values()):
            limit = worker.expiry
            if worker.legacy and (worker.in_flight or worker.overdue):
                # A ChAR0N worker cannot heartbeat while it simulates.
                limit = max(limit, worker.busy_since + self.settings.queue_deadline_s)
            if limit <= now:
                log.warning("worker %s expired (no message for %.1f s)", worker.identity.hex(),
                            now - worker.expiry + self.expiry_s)
                self.observer.expired()
                actions.extend(self._remove(worker, now))
            else:
                hb = wp.legacy_heartbeat() if worker.legacy else wp.heartbeat()
                actions.append(ToWorker([worker.identity, *hb]))
        return actions

    def _expire_deadlines(self, now: float) -> list[Action]:
        """Every queued requester whose deadline passed is refused (NO_WORKERS) or dropped, as the
        policy says; a job nobody waits for any more is dropped."""
        actions: list[Action] = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            deadline, waiter = deadlines.popleft()
            job = waiter.job
            if waiter.answered or job.state is not JobState.QUEUED or waiter.deadline != deadline:
                continue
            waited = f"{self.settings.queue_deadline_s:g} s"
            err: DeadlineExceeded = (DeadlineExceeded(f"no worker free within {waited}", job.event_id)
                                     if self.workers else NoWorkers(f"no worker registered within {waited}",
                                                                    job.event_id))
            waiter.answered = True
            job.waiters.remove(waiter)
            actions.extend(self._deliver_error(waiter, err, now))
            if not job.waiters:
                self._move(job, JobState.DROPPED)
        return actions

    def _expire_executions(self, now: float) -> list[Action]:
        """Take back every request held past the execution deadline; expel repeat offenders."""
        actions: list[Action] = []
        pending = self._exec_deadlines
        limit = self.settings.execution_deadline_s
        while pending and pending[0][0] <= now:
            _, identity, token = pending.popleft()
            worker = self.workers.get(identity)
            if worker is None or token not in worker.in_flight:
                continue  # answered, or its worker already gone
            before = worker.status
            job = worker.in_flight.pop(token)
            worker.overdue.add(token)
            worker.misses += 1
            self._restate(worker, before)
            self.observer.overdue()
            log.warning("worker %s held %s event %s past the execution deadline (%g s): taken back "
                        "(%d missed in a row)", identity.hex(), job.kind, job.event_id, limit, worker.misses)
            actions.extend(self._retry(job, ExecutionDeadlineExceeded(
                f"{job.kind} event {job.event_id}: not answered within {limit:g} s by {job.attempts} "
                "worker(s)", job.event_id), now))
            if worker.misses >= self.settings.deadline_expel_after:
                log.error("worker %s expelled: %d execution deadlines missed in a row", identity.hex(),
                          worker.misses)
                self.observer.expelled()
                actions.extend(self._remove(worker, now))
                if not worker.legacy:
                    actions.append(ToWorker([identity, *wp.disconnect(wp.REASON_DEADLINE)]))
        return actions

    def shutdown(self) -> list[Action]:
        """Tell every worker to reconnect (to the next router). Requests in hand are not answered:
        they are dropped with the process, and counted in the log line."""
        waiting = sum(1 for _ in self.waiting())
        if waiting:
            log.warning("stopping with %d request(s) queued or in flight: not answered (clients resend)", waiting)
        return [ToWorker([w.identity, *wp.disconnect(wp.REASON_SHUTDOWN)])
                for w in self.workers.values() if not w.legacy]


def _size(frames: Sequence[Frame]) -> int:
    return sum(f.nbytes if isinstance(f, memoryview) else len(f) for f in frames)


def compact(frames: Sequence[Frame]) -> list[Frame]:
    """``frames`` with those shorter than :data:`COMPACT_BELOW` copied into ``bytes`` (see there)."""
    return [bytes(as_view(f)) if len(as_view(f)) < COMPACT_BELOW and not isinstance(f, bytes) else f
            for f in frames]


def cost(frames: Sequence[Frame]) -> int:
    """Memory ``frames`` hold: their bytes and, per frame, the object that holds them."""
    return sum(len(f) + BYTES_OVERHEAD if isinstance(f, bytes) else len(as_view(f)) + FRAME_OVERHEAD
               for f in frames)
