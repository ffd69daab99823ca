"""The v2 codec, sessions and client pipeline as plain values: round trips (hypothesis), splitting
by byte offsets, credit, and the client's resend rules. No sockets.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charon.engine.base import Hits, Photons
from charon.errors import RequestFailed
from charon.pipeline import BACKOFF_S, Pipeline
from charon.protocol import v2
from charon.sessions import Limits, Sessions

sizes_st = st.lists(st.integers(0, 40), min_size=1, max_size=12)


def photon_bytes(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    cols = [rng.normal(size=n).astype("<f4").tobytes() for _ in range(11)]
    return [*cols, rng.integers(0, 2**32, n, dtype=np.uint32).astype("<u4").tobytes()]


def message(sizes: list[int], seed: int = 0) -> tuple[list[v2.Event], list[list[bytes]], list[v2.Frame]]:
    events = [v2.Event(tag=100 + i, event_id=(7 * i) & 0xFFFFFFFF, n_photons=n) for i, n in enumerate(sizes)]
    per_event = [photon_bytes(n, seed + i) for i, n in enumerate(sizes)]
    arrays = [b"".join(ev[k] for ev in per_event) for k in range(v2.N_PHOTON_FRAMES)]
    return events, per_event, v2.simulate(events, arrays)


@settings(max_examples=60, deadline=None)
@given(sizes=sizes_st, budget=st.integers(1, 100), seed=st.integers(0, 2**64 - 1))
def test_simulate_splits_into_jobs_whose_slices_are_each_events_photons(sizes: list[int], budget: int,
                                                                        seed: int) -> None:
    events, per_event, frames = message(sizes)
    decoded = v2.decode_from_client([bytes(v2.as_view(f)) for f in frames])
    assert isinstance(decoded, v2.Simulate)
    assert list(decoded.events) == events
    sessions = Sessions(Limits(credit=1000, max_events_per_message=1000, max_photons_per_message=10_000,
                               job_max_photons=budget), max_sessions=4)
    sessions.hello(b"c", v2.Hello(seed=seed))
    admission = sessions.admit(b"c", decoded)
    assert admission.errors == []
    seen: list[v2.Event] = []
    for job_frames, job_events, photons in admission.jobs:
        job = v2.decode_job([bytes(v2.as_view(f)) for f in job_frames])
        assert job.seed == seed
        assert job.events == job_events
        assert photons == job.n_photons == v2.job_photons(job_frames)
        assert photons <= budget or len(job.events) == 1  # only a lone event may exceed the budget
        for i, event in enumerate(job.events):
            index = events.index(event)
            assert [bytes(a) for a in job.photon_arrays(i)] == per_event[index]
        seen.extend(job.events)
    assert seen == events
    assert sessions.get(b"c") is not None
    assert sessions.get(b"c").in_flight == len(events)  # type: ignore[union-attr]


@settings(max_examples=60, deadline=None)
@given(n_hits=st.integers(0, 30), positions=st.booleans(), tag=st.integers(0, 2**64 - 2),
       event_id=st.integers(0, 2**32 - 1), code=st.sampled_from([c for c in v2.ErrorCode if c]))
def test_result_error_and_job_done_round_trip(n_hits: int, positions: bool, tag: int, event_id: int,
                                              code: v2.ErrorCode) -> None:
    rng = np.random.default_rng(n_hits)
    arrays = [rng.integers(0, 2**32, n_hits, dtype=np.uint32).astype("<u4").tobytes()
              for _ in range(13 if positions else 10)]
    msg = v2.result(tag, event_id, arrays)
    got = v2.decode_from_server([bytes(v2.as_view(f)) for f in msg])
    assert isinstance(got, v2.Result)
    assert (got.tag, got.event_id, got.n_hits, got.has_positions) == (tag, event_id, n_hits, positions)
    assert [bytes(got.array(i)) for i in range(len(arrays))] == arrays
    err = v2.decode_from_server(v2.error(tag, event_id, code, "why: ünïcode"))
    assert err == v2.Error(tag, event_id, code, "why: ünïcode")
    frame, h, flags = v2.hits_frame(arrays)
    done = v2.job_done([v2.Outcome(v2.Event(tag, event_id, 5), v2.ErrorCode.OK, h, flags, frame),
                        v2.Outcome(v2.Event(tag ^ 1, event_id, 5), code, message="failed")])
    replies = v2.client_replies(v2.decode_job_done(done))
    assert [bytes(v2.as_view(f)) for f in replies[0]] == [bytes(v2.as_view(f)) for f in msg]
    assert v2.decode_from_server(replies[1]) == v2.Error(tag ^ 1, event_id, code, "failed")
    assert v2.job_done_hits(done) == n_hits


@settings(max_examples=40, deadline=None)
@given(body=st.binary(max_size=64), command=st.binary(min_size=0, max_size=3))
def test_any_client_bytes_are_rejected_with_a_code_or_decoded(body: bytes, command: bytes) -> None:
    try:
        v2.decode_from_client([v2.MAGIC, command, body])
    except v2.Rejected as exc:
        replies = v2.rejection(exc)
        assert replies
        for r in replies:
            assert isinstance(v2.decode_from_server(r), v2.Error)


def test_hello_fields_are_checked_with_readable_messages() -> None:
    with pytest.raises(v2.Rejected, match=r"HELLO.seed = -1: must be an integer 0..18446744073709551615"):
        v2.decode_hello([v2.MAGIC, v2.HELLO, b'{"version":2,"seed":-1}'])
    with pytest.raises(v2.Rejected, match=r"HELLO\.version is missing") as info:
        v2.decode_hello([v2.MAGIC, v2.HELLO, b'{"seed":1}'])
    assert info.value.code is v2.ErrorCode.MALFORMED
    with pytest.raises(v2.Rejected, match="speaks version 2") as info:
        v2.decode_hello([v2.MAGIC, v2.HELLO, b'{"version":3}'])
    assert info.value.code is v2.ErrorCode.VERSION
    with pytest.raises(v2.Rejected, match=r"HELLO\.client"):
        v2.decode_hello([v2.MAGIC, v2.HELLO, b'{"version":2,"client":7}'])
    with pytest.raises(v2.Rejected, match="at most 4096"):
        v2.decode_hello([v2.MAGIC, v2.HELLO, b" " * 5000])
    assert v2.decode_hello([v2.MAGIC, v2.HELLO, b'{"version":2,"future":{"x":1}}']) == v2.Hello()


def test_credit_admits_a_prefix_and_returns_with_replies() -> None:
    sessions = Sessions(Limits(credit=3, max_events_per_message=10, max_photons_per_message=100,
                               job_max_photons=100), max_sessions=2)
    _, _, frames = message([1, 1, 1, 1, 1])
    sim = v2.decode_simulate(frames)
    assert [v2.decode_from_server(e).code for e in sessions.admit(b"a", sim).errors] == \
        [v2.ErrorCode.NO_SESSION] * 5  # type: ignore[union-attr]
    sessions.hello(b"a", v2.Hello(seed=3))
    first = sessions.admit(b"a", sim)
    assert [e.tag for _, evs, _ in first.jobs for e in evs] == [100, 101, 102]
    refused = [v2.decode_from_server(e) for e in first.errors]
    assert [(r.tag, r.code) for r in refused] == [(103, v2.ErrorCode.CREDIT_EXCEEDED),  # type: ignore[union-attr]
                                                  (104, v2.ErrorCode.CREDIT_EXCEEDED)]
    assert sessions.admit(b"a", sim).jobs == []  # the window is full
    sessions.returned(b"a", 2)
    assert len([e for _, evs, _ in sessions.admit(b"a", sim).jobs for e in evs]) == 2
    # Sessions are bounded: the least recently used idle one goes first.
    sessions.returned(b"a", 3)
    sessions.hello(b"b", v2.Hello())
    sessions.hello(b"c", v2.Hello())
    assert sessions.get(b"a") is None
    assert len(sessions) == 2


def welcome(credit: int = 4, max_events: int = 3, max_photons: int = 10) -> v2.Welcome:
    return v2.Welcome("echo", "0" * 64, "1" * 64, 2, credit, max_events, max_photons, True, 0)


def test_pipeline_keeps_the_window_full_and_resends_retryable_errors_after_a_backoff() -> None:
    pipe = Pipeline([2, 2, 2, 2, 2, 20], list(range(6)), welcome(), retries=1)
    assert pipe.next_batch(0.0) == [0, 1, 2]  # max_events_per_message
    assert pipe.next_batch(0.0) == [3]  # credit 4
    assert pipe.next_batch(0.0) == []
    assert pipe.on_reply(v2.Error(1, 1, v2.ErrorCode.QUEUE_FULL, "full"), now=1.0) is None  # resent later
    assert pipe.next_wakeup() == pytest.approx(1.0 + BACKOFF_S)
    got = pipe.on_reply(v2.Result(0, 0, 0, 0, memoryview(b"")), Hits.empty(), 1.0)
    assert got is not None
    assert got.ok
    assert got.index == 0
    assert pipe.next_batch(1.0) == [4]  # not the resend yet; event 5 (20 photons) can never be sent
    [too_large] = pipe.local_results()
    assert too_large.index == 5
    assert too_large.error is not None
    assert too_large.error.code is v2.ErrorCode.TOO_LARGE
    assert pipe.next_batch(1.0 + BACKOFF_S) == [1]  # its backoff has passed
    assert pipe.next_wakeup() is None
    assert pipe.on_reply(v2.Error(1, 1, v2.ErrorCode.QUEUE_FULL, "full"), now=2.0) is not None  # retries used up
    failed = pipe.on_reply(v2.Error(2, 2, v2.ErrorCode.SIMULATION_FAILED, "engine"))
    assert failed is not None
    assert not failed.ok
    assert pipe.on_reply(v2.Error(2, 2, v2.ErrorCode.SIMULATION_FAILED, "again")) is None  # not in flight
    assert pipe.on_reply(v2.Error(3, 3, v2.ErrorCode.CREDIT_EXCEEDED, "window")) is None
    assert pipe.next_batch(0.0) == [3]  # a credit refusal is resent at once
    for tag in (3, 4):
        assert pipe.on_reply(v2.Result(tag, tag, 0, 0, memoryview(b"")), Hits.empty()) is not None
    assert pipe.complete()
    with pytest.raises(RequestFailed, match="UNKNOWN_COMMAND"):
        pipe.on_reply(v2.Error(v2.NO_TAG, v2.NO_EVENT, v2.ErrorCode.UNKNOWN_COMMAND, "x"))


def test_pipeline_pauses_for_a_new_hello_after_no_session() -> None:
    pipe = Pipeline([1, 1], [5, 6], welcome(), retries=2)
    assert pipe.next_batch() == [0, 1]
    assert pipe.on_reply(v2.Error(0, 5, v2.ErrorCode.NO_SESSION, "hello first")) is None
    assert pipe.needs_hello
    assert pipe.next_batch() == []
    pipe.hello_again(welcome())
    assert pipe.next_batch() == [0]


def test_photons_of_a_job_become_views_with_the_session_seed_as_stream() -> None:
    events, per_event, frames = message([3, 2])
    job = v2.decode_job([v2.MAGIC, v2.JOB, struct.pack("<Q", 99) + v2.event_table(events), *frames[3:]])
    p = Photons.from_arrays_view(job.events[1].event_id, job.photon_arrays(1), job.seed)
    assert p.stream == 99
    assert len(p) == 2
    assert p.x.tobytes() == per_event[1][0]
    assert p.flags.dtype == np.dtype("<u4")


class Recorder:
    """The echo engine, recording each engine call's events' (event id, stream)."""

    def __init__(self) -> None:
        from tests import inproc

        self.inner = inproc.echo()
        self.name = "echo"
        self.fingerprint = self.inner.fingerprint
        self.calls: list[list[tuple[int, int]]] = []

    def detector_info(self) -> object:
        return self.inner.detector_info()

    def simulate(self, batch: list[Photons]) -> list[Hits]:
        self.calls.append([(p.event_id, p.stream) for p in batch])
        return self.inner.simulate(batch)

    def close(self) -> None:
        self.inner.close()


def test_jobs_of_one_batch_share_one_engine_pass_each_with_its_seed() -> None:
    from charon.service import RequestHandler

    engine = Recorder()
    handler = RequestHandler(engine)  # type: ignore[arg-type]
    events_a, _, frames_a = message([2, 1])
    _, _, frames_b = message([3], seed=5)
    job_a = v2.job(11, events_a, frames_a[3:])
    job_b = v2.job(22, [v2.Event(7, 70, 3)], frames_b[3:])
    answers = handler.simulate_jobs([job_a, [v2.MAGIC, v2.JOB, b"short"], job_b])
    assert [a.outcome for a in answers] == ["ok", "malformed", "ok"]
    assert engine.calls == [[(0, 11), (7, 11), (70, 22)]]  # one pass, each event with its job's seed
    done_a = v2.decode_job_done(answers[0].reply)
    assert [(o.event.tag, o.n_hits) for o in done_a.outcomes] == [(100, 2), (101, 1)]
    assert v2.decode_job_done(answers[1].reply).outcomes == ()
    assert [(o.event.tag, o.n_hits) for o in v2.decode_job_done(answers[2].reply).outcomes] == [(7, 3)]
