"""Random sequences of everything that can happen to a router, checked after every step.

Hypothesis drives :class:`RouterState` (fake clock, plain frames) with requests (some identical,
so they are de-duplicated), workers registering (CHARONW1 with either of two detectors, or
ChAR0N's bare READY), heartbeats, replies, late replies, drains, departures, closed connections
and time passing; a worker that never replies is taken back at the execution deadline and
expelled after two misses in a row; v2 clients say HELLO and send SIMULATEs of several events,
which the router cuts into jobs. After every step the state's own counters must match what it holds
(:meth:`RouterState.check_invariants`), no requester may have more than one reply, and every
requester (every v2 event) is either answered or still waiting on a queued or in-flight job. At
the end every worker goes and time runs out: then every requester and every v2 event has exactly
one reply, and every session's credit has come back.
"""

from __future__ import annotations

import itertools
import struct
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from charon.protocol import tokens, v1, v2
from charon.protocol import worker as wp
from charon.router.state import Action, RouterState, ToClient
from charon.settings import HeartbeatSettings, RouterSettings, V2Settings

FP_A, FP_B = "a" * 64, "b" * 64
INFO = [struct.pack("<f", 1.0), struct.pack("<f", 2.0), struct.pack("<f", 3.0), struct.pack("<i", 1)]
ROUTER = RouterSettings(queue_max_requests=5, queue_deadline_s=3.0, max_attempts=2, dedup_window_s=2.0,
                        dedup_max_bytes=4096, execution_deadline_s=2.0, deadline_expel_after=2,
                        v1_failure_replies="explicit")
HEARTBEAT = HeartbeatSettings(interval_s=1.0, liveness=3)
V2 = V2Settings(credit=4, max_events_per_message=3, job_max_photons=2)


def photondata(event_id: int, n: int) -> list[bytes]:
    arrays = [bytes([event_id + i]) * (4 * n) for i in range(12)]
    return [tokens.PHOTONDATA, struct.pack("<II", event_id, n), *arrays]


@dataclass
class FakeWorker:
    legacy: bool
    #: token -> (header, event id) of each request it holds
    held: dict[int, tuple[bytes, int | None]] = field(default_factory=dict)


class RouterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.state = RouterState(ROUTER, HEARTBEAT, None, V2)
        self.requesters: set[bytes] = set()
        self.answers: Counter[bytes] = Counter()
        #: v2 clients (identity -> whether it has a session) and each sent event's replies by (identity, tag)
        self.v2_clients: dict[bytes, bool] = {}
        self.v2_events: Counter[tuple[bytes, int]] = Counter()
        self.v2_answers: Counter[tuple[bytes, int]] = Counter()
        self.tags = itertools.count()
        self.workers: dict[bytes, FakeWorker] = {}
        self.ids = itertools.count()
        self.jobs: dict[int, list[bytes]] = {}  # the v2 JOB payloads workers hold

    # ---- what the state sends ------------------------------------------------------------------

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            frames = [bytes(v1.as_view(f)) for f in action.frames]
            if isinstance(action, ToClient):
                if frames[0] in self.v2_clients:
                    reply = v2.decode_from_server(frames[1:])
                    if isinstance(reply, v2.Welcome):
                        self.v2_clients[frames[0]] = True
                    elif reply.tag == v2.NO_TAG:  # HELLO refused: no charon worker yet
                        assert isinstance(reply, v2.Error)
                        assert reply.code is v2.ErrorCode.NO_WORKERS
                    else:
                        assert (frames[0], reply.tag) in self.v2_events, reply
                        self.v2_answers[frames[0], reply.tag] += 1
                    continue
                assert frames[0] in self.requesters, frames[:2]
                self.answers[frames[0]] += 1
                continue
            worker = self.workers.get(frames[0])
            if worker is None:
                continue  # a worker the test already let go
            if worker.legacy:
                if len(frames) > 2 and frames[2] == b"":
                    assert frames[3] != v2.MAGIC, "a v2 job was given to a ChAR0N worker"
                    worker.held[struct.unpack("<Q", frames[1])[0]] = self._what(frames[3:])
                continue
            msg = wp.decode_from_router(frames[1:])
            if isinstance(msg, wp.Request):
                worker.held[msg.token] = self._what([bytes(v1.as_view(f)) for f in msg.payload])
            elif isinstance(msg, wp.Disconnect) and msg.reason != wp.REASON_ACK:
                del self.workers[frames[0]]  # refused or told to reconnect: it comes back as a new identity

    def _what(self, payload: list[bytes]) -> tuple[bytes, int | None]:
        if payload[0] == v2.MAGIC:
            self.jobs[id(payload)] = payload
            return v2.MAGIC, id(payload)
        return payload[0], v1.read_event_id(payload[1]) if len(payload) > 1 else None

    def _new(self, prefix: str) -> bytes:
        return f"{prefix}{next(self.ids)}".encode()

    # ---- clients ----------------------------------------------------------------------------------

    @rule(event=st.integers(0, 2), n=st.sampled_from([0, 1, 2]))
    def request_photons(self, event: int, n: int) -> None:
        """Few distinct events: identical requests are common, as ratpac-two's resends are."""
        ident = self._new("c")
        self.requesters.add(ident)
        self.apply(self.state.on_client([ident, b""], photondata(event, n), self.now))

    @rule(payload=st.sampled_from([[tokens.DETECTOR_INFO], [tokens.PING], [tokens.RUN_END], [b"NONSENSE"],
                                   photondata(1, 2)[:5]]))
    def other_request(self, payload: list[bytes]) -> None:
        ident = self._new("c")
        self.requesters.add(ident)
        self.apply(self.state.on_client([ident, b""], payload, self.now))

    @rule(hello_first=st.booleans(), sizes=st.lists(st.sampled_from([0, 1, 2, 3]), min_size=1, max_size=4))
    def v2_simulate(self, hello_first: bool, sizes: list[int]) -> None:
        """A v2 client (new, or one that already said HELLO) sends one SIMULATE."""
        known = [c for c, has in self.v2_clients.items() if has]
        if hello_first or not known:
            ident = self._new("v")
            self.v2_clients[ident] = False
            self.apply(self.state.on_client([ident], v2.hello(v2.Hello(seed=7)), self.now))
        else:
            ident = known[0]
        events = [v2.Event(next(self.tags), 40 + i, n) for i, n in enumerate(sizes)]
        for e in events:
            self.v2_events[ident, e.tag] += 1
        arrays = [bytes([k]) * (4 * sum(sizes)) for k in range(12)]
        self.apply(self.state.on_client([ident], v2.simulate(events, arrays), self.now))

    # ---- workers ----------------------------------------------------------------------------------

    @rule(legacy=st.booleans(), capacity=st.integers(1, 3), other_detector=st.booleans())
    def worker_ready(self, legacy: bool, capacity: int, other_detector: bool) -> None:
        ident = self._new("w")
        self.workers[ident] = FakeWorker(legacy)
        frames = [tokens.PPP_READY] if legacy else wp.ready(FP_B if other_detector else FP_A, capacity, "fake", INFO)
        self.apply(self.state.on_worker(ident, frames, self.now))

    @precondition(lambda self: self.workers)
    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        ident = data.draw(st.sampled_from(sorted(self.workers)))
        frames = wp.legacy_heartbeat() if self.workers[ident].legacy else wp.heartbeat()
        self.apply(self.state.on_worker(ident, frames, self.now))

    @precondition(lambda self: any(w.held for w in self.workers.values()))
    @rule(data=st.data(), ok=st.booleans())
    def reply(self, data: st.DataObject, ok: bool) -> None:
        ident = data.draw(st.sampled_from(sorted(i for i, w in self.workers.items() if w.held)))
        worker = self.workers[ident]
        token = data.draw(st.sampled_from(sorted(worker.held)))
        header, event_id = worker.held.pop(token)
        if header == v2.MAGIC:
            assert event_id is not None
            job = v2.decode_job(self.jobs.pop(event_id))
            code = v2.ErrorCode.OK if ok else v2.ErrorCode.SIMULATION_FAILED
            payload = v2.job_done([v2.Outcome(e, code, message="" if ok else "failed") for e in job.events])
        elif header == tokens.DETECTOR_INFO:
            payload = [tokens.DETECTOR_INFO, *INFO]
        else:
            assert event_id is not None
            payload = v1.empty_sim_complete(event_id) if ok else v1.sim_failed(event_id)
        self._send_reply(ident, worker, token, payload)

    @precondition(lambda self: self.workers)
    @rule(data=st.data())
    def late_reply(self, data: st.DataObject) -> None:
        """A reply under a token the worker does not hold (its request was given to another)."""
        ident = data.draw(st.sampled_from(sorted(self.workers)))
        self._send_reply(ident, self.workers[ident], 10**9, v1.empty_sim_complete(1))

    def _send_reply(self, ident: bytes, worker: FakeWorker, token: int, payload: list[v1.Frame]) -> None:
        frames = [wp.token_frame(token), b"", *payload] if worker.legacy else wp.reply(token, payload)
        self.apply(self.state.on_worker(ident, frames, self.now))

    @precondition(lambda self: any(not w.legacy for w in self.workers.values()))
    @rule(data=st.data(), reason=st.sampled_from([wp.REASON_DRAIN, wp.REASON_EXIT]))
    def disconnect(self, data: st.DataObject, reason: bytes) -> None:
        ident = data.draw(st.sampled_from(sorted(i for i, w in self.workers.items() if not w.legacy)))
        if reason == wp.REASON_EXIT:
            del self.workers[ident]
        self.apply(self.state.on_worker(ident, wp.disconnect(reason), self.now))

    @precondition(lambda self: self.workers)
    @rule(data=st.data())
    def connection_closed(self, data: st.DataObject) -> None:
        """The worker died: the router learns it from a failed send (EHOSTUNREACH)."""
        ident = data.draw(st.sampled_from(sorted(self.workers)))
        del self.workers[ident]
        self.apply(self.state.on_worker_gone(ident, self.now))

    @precondition(lambda self: self.workers)
    @rule(data=st.data())
    def second_ready(self, data: st.DataObject) -> None:
        """READY twice on one identity: a protocol error, the worker is dropped."""
        ident = data.draw(st.sampled_from(sorted(self.workers)))
        frames = [tokens.PPP_READY] if self.workers[ident].legacy else wp.ready(FP_A, 1, "fake", INFO)
        self.workers[ident].held.clear()
        self.apply(self.state.on_worker(ident, frames, self.now))
        self.workers.pop(ident, None)

    # ---- time -------------------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 2.5, 4.0]))
    def time_passes(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        """Tick at every wakeup up to now + seconds, as the driver does; silent workers expire."""
        end = self.now + seconds
        while self.state.next_wakeup() <= end:
            self.now = max(self.now, self.state.next_wakeup())
            self.apply(self.state.on_tick(self.now))
            self.state.housekeeping(self.now)
        self.now = end
        for ident in [i for i in self.workers if i not in self.state.workers]:
            del self.workers[ident]  # expired: the router forgot it

    # ---- what must always hold --------------------------------------------------------------------

    @invariant()
    def counters_and_indexes_match_what_the_state_holds(self) -> None:
        self.state.check_invariants()

    @invariant()
    def no_request_is_held_past_the_execution_deadline(self) -> None:
        for worker in self.state.workers.values():
            for job in worker.in_flight.values():
                assert self.now < job.dispatched + ROUTER.execution_deadline_s, (job.event_id, job.dispatched)
            assert len(worker.in_flight) + len(worker.overdue) <= worker.capacity
            assert worker.misses < ROUTER.deadline_expel_after

    @invariant()
    def every_request_is_answered_once_or_still_waiting(self) -> None:
        waiting = Counter(bytes(v1.as_view(w.envelope[0])) for w in self.state.waiting() if w.part is None)
        assert all(n == 1 for n in waiting.values()), waiting
        for ident in self.requesters:
            assert self.answers[ident] + waiting[ident] == 1, (ident, self.answers[ident], waiting[ident])
        events_waiting = Counter((w.part.identity, e.tag) for w in self.state.waiting() if w.part is not None
                                 for e in w.part.events)
        for key in self.v2_events:
            assert self.v2_answers[key] + events_waiting[key] == 1, (key, self.v2_answers[key], events_waiting[key])

    def teardown(self) -> None:
        for ident in list(self.workers):
            self.apply(self.state.on_worker_gone(ident, self.now))
        self.workers.clear()
        self.advance(ROUTER.queue_deadline_s + 2 * HEARTBEAT.interval_s)
        self.state.check_invariants()
        assert not list(self.state.waiting())
        assert {i: self.answers[i] for i in self.requesters} == dict.fromkeys(self.requesters, 1)
        assert {k: self.v2_answers[k] for k in self.v2_events} == dict.fromkeys(self.v2_events, 1)
        assert self.state.sessions.in_flight() == 0


RouterMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                           suppress_health_check=[HealthCheck.too_slow])
test_router_state_machine = RouterMachine.TestCase
