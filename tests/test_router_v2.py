"""v2 in the router's state machine, with a fake clock and plain frames (no sockets): HELLO from
the pool, jobs cut by byte offsets and forwarded without a copy, one reply per event whatever
happens to the job (answered, worker lost, queue full, deadline), and no JOB for a ChAR0N worker.
"""

from __future__ import annotations

import struct

from charon.protocol import tokens, v2
from charon.protocol import worker as wp
from charon.router.state import Action, RouterState, ToClient, ToWorker
from charon.settings import HeartbeatSettings, RouterSettings, V2Settings

FP = "a" * 64
INFO = [struct.pack("<2f", 1.5, -1000.0), struct.pack("<2f", 2.5, 0.0), struct.pack("<2f", 3.5, 12.5),
        struct.pack("<2i", 1, -1)]
ENV = [b"\x00client"]


def state(**router: object) -> RouterState:
    return RouterState(RouterSettings(**router), HeartbeatSettings(interval_s=1.0, liveness=3), None,  # type: ignore[arg-type]
                       V2Settings(credit=16, job_max_photons=4))


def register(s: RouterState, identity: bytes, capacity: int = 1, now: float = 0.0) -> list[Action]:
    return s.on_worker(identity, wp.ready(FP, capacity, "echo", INFO), now)


def to_client(actions: list[Action]) -> list[v2.Welcome | v2.Result | v2.Error]:
    out = []
    for a in actions:
        if isinstance(a, ToClient):
            assert a.frames[: len(ENV)] == ENV
            out.append(v2.decode_from_server(a.frames[len(ENV) :]))
    return out


def to_workers(actions: list[Action]) -> list[tuple[bytes, wp.Request]]:
    out = []
    for a in actions:
        if isinstance(a, ToWorker):
            if bytes(a.frames[0]) == b"legacy":
                assert a.frames[1:] == wp.legacy_heartbeat(), "a ChAR0N worker was sent work"
                continue
            msg = wp.decode_from_router(a.frames[1:])
            if isinstance(msg, wp.Request):
                out.append((bytes(a.frames[0]), msg))
    return out


def simulate(sizes: list[int]) -> list[v2.Frame]:
    events = [v2.Event(i, 100 + i, n) for i, n in enumerate(sizes)]
    total = sum(sizes)
    arrays = [bytes(range(k, k + 4 * total)) if total else b"" for k in range(12)]
    return [*v2.simulate(events, arrays)]


def hello(s: RouterState, seed: int = 0) -> v2.Welcome:
    [w] = to_client(s.on_client(ENV, v2.hello(v2.Hello(seed=seed)), 1.0))
    assert isinstance(w, v2.Welcome)
    return w


def answer(s: RouterState, identity: bytes, request: wp.Request, now: float) -> list[Action]:
    job = v2.decode_job(request.payload)
    outcomes = [v2.Outcome(e, v2.ErrorCode.OK, 0, 0, b"") for e in job.events]
    return s.on_worker(identity, wp.reply(request.token, v2.job_done(outcomes)), now)


def test_hello_is_answered_from_the_pool_and_needs_a_charon_worker() -> None:
    s = state()
    [refused] = to_client(s.on_client(ENV, v2.hello(v2.Hello()), 0.5))
    assert isinstance(refused, v2.Error)
    assert refused.code is v2.ErrorCode.NO_WORKERS
    register(s, b"w1")
    w = hello(s, seed=5)
    assert (w.fingerprint, w.engine, w.n_channels, w.seed, w.credit) == (FP, "echo", 2, 5, 16)
    assert w.pmt_digest == v2.pmt_digest(*INFO[:3])
    s.check_invariants()


def test_jobs_are_slices_of_the_received_frames_and_every_event_is_answered_once() -> None:
    s = state()
    register(s, b"w1", capacity=8)
    hello(s, seed=9)
    message = simulate([2, 2, 1, 3, 0])
    actions = s.on_client(ENV, message, 2.0)
    sent = to_workers(actions)
    assert [[e.tag for e in v2.decode_job(r.payload).events] for _, r in sent] == [[0, 1], [2, 3, 4]]
    for _, request in sent:
        job = v2.decode_job(request.payload)
        assert job.seed == 9
        for array, original in zip(request.payload[3:], message[3:], strict=True):
            assert isinstance(array, memoryview)
            assert array.obj is original  # a slice of the client's frame: nothing copied or decoded
    replies = []
    for identity, request in sent:
        replies += to_client(answer(s, identity, request, 3.0))
    assert sorted(r.tag for r in replies) == [0, 1, 2, 3, 4]
    assert all(isinstance(r, v2.Result) for r in replies)
    assert s.sessions.in_flight() == 0
    s.check_invariants()


def test_a_lost_workers_job_is_requeued_and_finally_fails_per_event() -> None:
    s = state(max_attempts=2)
    register(s, b"w1")
    hello(s)
    [(_, first)] = to_workers(s.on_client(ENV, simulate([1, 1]), 1.0))
    register(s, b"w2")
    retry = to_workers(s.on_worker_gone(b"w1", 2.0))
    assert [identity for identity, _ in retry] == [b"w2"]
    assert retry[0][1].payload[2] == first.payload[2]  # the same job
    errors = to_client(s.on_worker_gone(b"w2", 3.0))
    assert sorted((e.tag, e.code) for e in errors) == [  # type: ignore[union-attr]
        (0, v2.ErrorCode.RETRIES_EXHAUSTED), (1, v2.ErrorCode.RETRIES_EXHAUSTED)]
    assert s.sessions.in_flight() == 0
    s.check_invariants()


def test_queue_full_and_deadline_answer_each_event() -> None:
    s = state(queue_max_requests=1, queue_deadline_s=5.0)
    register(s, b"w1")
    hello(s)
    assert len(to_workers(s.on_client(ENV, simulate([4]), 1.0))) == 1  # the worker's one slot
    assert to_client(s.on_client(ENV, simulate([4]), 1.0)) == []  # queued
    full = to_client(s.on_client(ENV, [*simulate([4])[:2], v2.event_table([v2.Event(7, 1, 4)]),
                                       *simulate([4])[3:]], 1.5))
    assert [(e.tag, e.code) for e in full] == [(7, v2.ErrorCode.QUEUE_FULL)]  # type: ignore[union-attr]
    late = to_client(s.on_tick(6.5))
    assert [(e.tag, e.code) for e in late] == [(0, v2.ErrorCode.DEADLINE)]  # type: ignore[union-attr]
    s.check_invariants()


def test_a_char0n_worker_is_never_given_a_job() -> None:
    s = state()
    s.on_worker(b"legacy", [tokens.PPP_READY], 0.0)
    register(s, b"w1")
    hello(s)
    s.on_worker(b"w1", wp.disconnect(wp.REASON_DRAIN), 0.5)  # the charon worker takes nothing new
    assert to_workers(s.on_client(ENV, simulate([1]), 1.0)) == []  # the job waits; the legacy worker is free
    assert to_workers(s.on_tick(1.5)) == []
    assert [identity for identity, _ in to_workers(register(s, b"w2", now=2.0))] == [b"w2"]
    s.check_invariants()


def test_a_worker_whose_job_done_is_wrong_is_expelled_and_its_job_goes_to_another() -> None:
    """A JOB_DONE for other events, or with a channel beyond the detector, never reaches the client."""
    for bad in ("tags", "channel"):
        s = state()
        register(s, b"w1")
        hello(s)
        [(_, request)] = to_workers(s.on_client(ENV, simulate([1, 1]), 1.0))
        job = v2.decode_job(request.payload)
        if bad == "tags":
            outcomes = [v2.Outcome(v2.Event(e.tag + 100, e.event_id, 1), v2.ErrorCode.OK) for e in job.events]
        else:
            frame, n, flags = v2.hits_frame([struct.pack("<I", 2)] + [b"\0" * 4] * 9)  # channel 2 of P = 2
            outcomes = [v2.Outcome(e, v2.ErrorCode.OK, n, flags, frame) for e in job.events]
        actions = s.on_worker(b"w1", wp.reply(request.token, v2.job_done(outcomes)), 2.0)
        assert to_client(actions) == [], bad
        assert b"w1" not in s.workers, bad
        assert [i for i, _ in to_workers(register(s, b"w2", now=3.0))] == [b"w2"], bad  # requeued whole
        s.check_invariants()


def test_v1_work_behind_a_waiting_v2_job_goes_to_a_free_char0n_worker() -> None:
    s = state()
    register(s, b"w1")
    hello(s)
    [(_, first)] = to_workers(s.on_client(ENV, simulate([1]), 1.0))  # w1 busy
    assert to_workers(s.on_client(ENV, simulate([1]), 1.0)) == []  # a v2 job waits for w1
    s.on_worker(b"legacy", [tokens.PPP_READY], 1.5)
    photons = [tokens.PHOTONDATA, struct.pack("<II", 9, 1), *[b"\0" * 4] * 12]
    actions = s.on_client([b"\x00v1", b""], photons, 2.0)
    given = [a for a in actions if isinstance(a, ToWorker) and bytes(a.frames[0]) == b"legacy"]
    assert len(given) == 1  # the v1 request did not wait behind the v2 job
    assert bytes(given[0].frames[3]) == tokens.PHOTONDATA
    assert s.queued == 1  # the v2 job still waits for a charon worker
    s.check_invariants()
    assert [i for i, _ in to_workers(answer(s, b"w1", first, 3.0))] == [b"w1"]
    s.check_invariants()
