"""The router's scheduling state machine, driven with a fake clock and plain frames (no sockets)."""

from __future__ import annotations

import struct
from collections import Counter

import pytest

from charon.protocol import tokens, v1
from charon.protocol import worker as wp
from charon.router.state import (
    DEDUP_SAMPLE_BYTES,
    EDGES,
    Action,
    Job,
    JobState,
    RouterState,
    ToClient,
    ToWorker,
    end_checksum,
)
from charon.settings import HeartbeatSettings, RouterSettings

FP_A = "a" * 64
FP_B = "b" * 64
INFO = [struct.pack("<2f", 1.5, -1000.0), struct.pack("<2f", 2.5, 0.0), struct.pack("<2f", 3.5, 12.5),
        struct.pack("<2i", 1, -1)]


class Recorder:
    def __init__(self) -> None:
        self.answers: Counter[tuple[str, str]] = Counter()
        self.requeues = 0
        self.dedups = 0
        self.refusals: list[str] = []
        self.expiries = 0
        self.photons = 0
        self.hits = 0

    def answered(self, kind: str, outcome: str, total_s: float) -> None:
        self.answers[kind, outcome] += 1

    def dispatched(self, queue_s: float) -> None:
        assert queue_s >= 0

    def completed(self, n_photons: int, n_hits: int, service_s: float) -> None:
        self.photons += n_photons
        self.hits += n_hits

    def requeued(self) -> None:
        self.requeues += 1

    def deduplicated(self) -> None:
        self.dedups += 1

    def refused(self, reason: str) -> None:
        self.refusals.append(reason)

    def expired(self) -> None:
        self.expiries += 1


class CheckedState(RouterState):
    """RouterState that recomputes its counters and indexes after every event."""

    def on_client(self, envelope: list[v1.Frame], payload: list[v1.Frame], now: float) -> list[Action]:
        return self._checked(super().on_client(envelope, payload, now))

    def on_worker(self, identity: bytes, frames: list[v1.Frame], now: float) -> list[Action]:
        return self._checked(super().on_worker(identity, frames, now))

    def on_worker_gone(self, identity: bytes, now: float) -> list[Action]:
        return self._checked(super().on_worker_gone(identity, now))

    def on_tick(self, now: float) -> list[Action]:
        return self._checked(super().on_tick(now))

    def _checked(self, actions: list[Action]) -> list[Action]:
        self.check_invariants()
        return actions


def make(**router: object) -> tuple[RouterState, Recorder]:
    """A checked router state; ChAR0N's explicit failure replies unless ``v1_failure_replies`` is given
    (tests/test_unservable.py covers the silent default)."""
    rec = Recorder()
    settings = RouterSettings(**{"queue_deadline_s": 10.0, "v1_failure_replies": "explicit", **router})  # type: ignore[arg-type]
    state = CheckedState(settings, HeartbeatSettings(interval_s=1.0, liveness=3), rec)
    return state, rec


def photondata(event_id: int, n: int = 2, fill: int = 0) -> list[v1.Frame]:
    arrays = [bytes([(fill + i) % 256]) * (4 * n) for i in range(12)]
    return [tokens.PHOTONDATA, struct.pack("<II", event_id, n), *arrays]


def env(name: str) -> list[v1.Frame]:
    return [name.encode(), b""]


def to_clients(actions: list[ToClient | ToWorker]) -> list[list[bytes]]:
    return [[bytes(f) for f in a.frames] for a in actions if isinstance(a, ToClient)]


def to_workers(actions: list[ToClient | ToWorker]) -> list[list[bytes]]:
    return [[bytes(f) for f in a.frames] for a in actions if isinstance(a, ToWorker)]


def register(state: RouterState, ident: bytes, now: float = 0.0, capacity: int = 1, fp: str = FP_A
             ) -> list[ToClient | ToWorker]:
    return state.on_worker(ident, wp.ready(fp, capacity, "echo", INFO), now)


def requests_to(actions: list[ToClient | ToWorker]) -> list[tuple[bytes, int, list[bytes]]]:
    """(worker identity, token, payload) of every REQUEST among the actions."""
    out = []
    for frames in to_workers(actions):
        msg = wp.decode_from_router(frames[1:])
        if isinstance(msg, wp.Request):
            out.append((frames[0], msg.token, [bytes(f) for f in msg.payload]))
    return out


def sim_complete(event_id: int, n_hits: int = 1) -> list[v1.Frame]:
    return v1.sim_complete(event_id, [b"\0" * (4 * n_hits)] * 10)


def reply(state: RouterState, ident: bytes, token: int, payload: list[v1.Frame], now: float
          ) -> list[ToClient | ToWorker]:
    return state.on_worker(ident, wp.reply(token, payload), now)


def advance(state: RouterState, until: float) -> list[ToClient | ToWorker]:
    """Tick at every wakeup the state asks for, up to ``until``, as the driver does."""
    actions: list[ToClient | ToWorker] = []
    while state.next_wakeup() <= until:
        actions += state.on_tick(state.next_wakeup())
    return actions


# ---- requests the router answers itself -----------------------------------------------------------


@pytest.mark.parametrize("header", [tokens.PING, tokens.RUN_END])
def test_ping_and_run_end_answered_with_ack_without_workers(header: bytes) -> None:
    state, _ = make()
    assert to_clients(state.on_client(env("c"), [header], 0.0)) == [[b"c", b"", b"ACK"]]
    assert state.queued == 0


def test_zero_photon_event_answered_at_once_without_workers_or_queueing() -> None:
    state, rec = make()
    actions = state.on_client(env("c"), photondata(9, n=0), 0.0)
    assert to_clients(actions) == [[b"c", b"", tokens.SIM_COMPLETE, struct.pack("<I", 9), *[b""] * 10]]
    assert state.queued == 0
    assert rec.answers["photondata", "ok"] == 1


def test_run_begin_answered_with_ack() -> None:
    state, rec = make()
    assert to_clients(state.on_client(env("c"), [tokens.RUN_BEGIN, b"out.root"], 0.0)) == [[b"c", b"", b"ACK"]]
    assert rec.answers["run_begin", "ok"] == 1


@pytest.mark.parametrize(("payload", "expected", "outcome"), [
    ([b"FOO"], [b"UNKNOWN_REQUEST"], "unknown_request"),
    ([b"\x00\xff garbage"], [b"UNKNOWN_REQUEST"], "unknown_request"),
    ([], [b"UNKNOWN_REQUEST"], "unknown_request"),
    (photondata(7)[:13], [b"SIM_FAILED", struct.pack("<I", 7)], "malformed"),
    ([tokens.PHOTONDATA, b"", *photondata(7)[2:]], [b"UNKNOWN_REQUEST"], "malformed"),
    ([*photondata(9)[:2], b"\0" * 5, *photondata(9)[3:]], [b"SIM_FAILED", struct.pack("<I", 9)], "malformed"),
])
def test_malformed_requests_get_their_defined_reply_at_once(payload: list[v1.Frame], expected: list[bytes],
                                                            outcome: str) -> None:
    state, rec = make()
    register(state, b"w1")
    actions = state.on_client(env("c"), payload, 0.0)
    assert to_clients(actions) == [[b"c", b"", *expected]]
    assert requests_to(actions) == []
    assert sum(n for (_, o), n in rec.answers.items() if o == outcome) == 1


def test_detector_info_waits_for_the_first_worker_then_comes_from_ready() -> None:
    state, _ = make()
    assert state.on_client(env("c"), [tokens.DETECTOR_INFO], 0.0) == []
    assert state.queued == 1
    actions = register(state, b"w1", now=1.0)
    assert to_clients(actions) == [[b"c", b"", tokens.DETECTOR_INFO, *INFO]]
    assert requests_to(actions) == []
    assert state.queued == 0
    # Later requests are answered at once, from READY, without bothering a worker.
    assert to_clients(state.on_client(env("d"), [tokens.DETECTOR_INFO], 2.0)) == [[b"d", b"", tokens.DETECTOR_INFO, *INFO]]


def test_detector_info_queued_with_no_worker_hits_its_deadline() -> None:
    state, _ = make(queue_deadline_s=5.0)
    state.on_client(env("c"), [tokens.DETECTOR_INFO], 0.0)
    assert to_clients(state.on_tick(5.0)) == [[b"c", b"", b"NO_WORKERS"]]


# ---- dispatch ------------------------------------------------------------------------------------


def test_request_goes_to_a_worker_and_its_reply_to_the_requester() -> None:
    state, rec = make()
    register(state, b"w1")
    actions = state.on_client(env("c"), photondata(5, n=3), 0.5)
    [(ident, token, payload)] = requests_to(actions)
    assert ident == b"w1"
    assert payload == [bytes(f) for f in photondata(5, n=3)]
    assert state.busy_workers == 1
    out = reply(state, b"w1", token, sim_complete(5, n_hits=2), 1.5)
    assert to_clients(out) == [[b"c", b"", *[bytes(f) for f in sim_complete(5, n_hits=2)]]]
    assert rec.answers["photondata", "ok"] == 1
    assert (rec.photons, rec.hits) == (3, 2)
    assert state.busy_workers == 0


def test_least_recently_ready_worker_first_and_never_beyond_capacity() -> None:
    state, _ = make()
    for i, name in enumerate([b"A", b"B", b"C"]):
        register(state, name, now=float(i))
    got = [requests_to(state.on_client(env(f"c{i}"), photondata(i), 5.0))[0] for i in range(3)]
    assert [g[0] for g in got] == [b"A", b"B", b"C"]
    # All busy: the fourth request waits, nothing is stacked on a busy worker.
    assert state.on_client(env("c3"), photondata(3), 5.0) == []
    assert state.queued == 1
    # C finishes first, then A: the queued request goes to C (first free); the next one to A.
    out = reply(state, b"C", got[2][1], sim_complete(2), 6.0)
    assert [r[0] for r in requests_to(out)] == [b"C"]
    reply(state, b"A", got[0][1], sim_complete(0), 7.0)
    reply(state, b"B", got[1][1], sim_complete(1), 8.0)
    assert [r[0] for r in requests_to(state.on_client(env("c4"), photondata(4), 9.0))] == [b"A"]
    assert [r[0] for r in requests_to(state.on_client(env("c5"), photondata(5), 9.0))] == [b"B"]


def test_capacity_above_one_takes_that_many_requests() -> None:
    state, _ = make()
    register(state, b"big", capacity=2)
    a = requests_to(state.on_client(env("a"), photondata(1), 0.0))
    b = requests_to(state.on_client(env("b"), photondata(2), 0.0))
    c = requests_to(state.on_client(env("c"), photondata(3), 0.0))
    assert [len(a), len(b), len(c)] == [1, 1, 0]
    assert state.queued == 1
    out = reply(state, b"big", a[0][1], sim_complete(1), 1.0)
    assert len(to_clients(out)) == 1
    assert requests_to(out)[0][2][1] == struct.pack("<II", 3, 2)


# ---- queue bounds and deadlines ------------------------------------------------------------------


def test_full_queue_by_count_answers_no_workers_at_once() -> None:
    state, rec = make(queue_max_requests=2)
    state.on_client(env("a"), photondata(1), 0.0)
    state.on_client(env("b"), photondata(2), 0.0)
    assert to_clients(state.on_client(env("c"), photondata(3), 0.0)) == [[b"c", b"", b"NO_WORKERS"]]
    assert rec.answers["photondata", "queue_full"] == 1
    assert state.queued == 2


def test_full_queue_by_bytes_answers_no_workers_at_once() -> None:
    one = sum(len(f) for f in photondata(1, n=100))
    state, _ = make(queue_max_bytes=max(1024, 2 * one + 10))
    assert state.on_client(env("a"), photondata(1, n=100), 0.0) == []
    assert state.on_client(env("b"), photondata(2, n=100), 0.0) == []
    assert to_clients(state.on_client(env("c"), photondata(3, n=100), 0.0)) == [[b"c", b"", b"NO_WORKERS"]]
    assert state.queued_bytes == 2 * one


def test_deadline_fires_on_the_timer_while_waiting_not_when_a_worker_frees() -> None:
    state, rec = make(queue_deadline_s=10.0)
    state.on_client(env("a"), photondata(1), 0.0)
    state.on_client(env("b"), photondata(2), 4.0)
    assert state.next_wakeup() <= 1.0  # heartbeat timer first
    state.on_tick(1.0)
    assert to_clients(state.on_tick(9.999)) == []
    assert state.next_wakeup() == pytest.approx(10.0)
    assert to_clients(state.on_tick(10.0)) == [[b"a", b"", b"NO_WORKERS"]]
    assert state.queued == 1
    assert to_clients(state.on_tick(14.0)) == [[b"b", b"", b"NO_WORKERS"]]
    assert state.queued == 0
    assert state.queued_bytes == 0
    assert rec.answers["photondata", "deadline"] == 2
    # A worker arriving later finds nothing to do.
    assert requests_to(register(state, b"w", now=15.0)) == []


def test_dispatched_requests_are_not_subject_to_the_queue_deadline() -> None:
    state, _ = make(queue_deadline_s=2.0)
    register(state, b"w")
    [(_, token, _)] = requests_to(state.on_client(env("a"), photondata(1), 0.0))
    for t in range(1, 30):
        state.on_worker(b"w", wp.heartbeat(), float(t))
        assert to_clients(state.on_tick(float(t))) == []
    assert len(to_clients(reply(state, b"w", token, sim_complete(1), 30.0))) == 1


# ---- lost workers --------------------------------------------------------------------------------


def test_expired_worker_requests_go_to_the_head_of_the_queue_and_late_replies_are_dropped() -> None:
    state, rec = make(queue_deadline_s=100.0)
    register(state, b"dies")
    [(_, token, _)] = requests_to(state.on_client(env("first"), photondata(1), 0.0))
    state.on_client(env("second"), photondata(2), 0.5)
    assert state.queued == 1
    # No heartbeat from "dies": expired after liveness x interval = 3 s (checked every interval).
    advance(state, 2.99)
    assert rec.expiries == 0
    advance(state, 4.0)
    assert rec.expiries == 1
    assert state.queued == 2
    assert rec.requeues == 1
    # The next worker gets the lost request first.
    out = register(state, b"fresh", now=4.0)
    [(ident, token2, payload)] = requests_to(out)
    assert (ident, payload[1]) == (b"fresh", struct.pack("<II", 1, 2))
    # The dead worker's late reply is not forwarded; the worker is told to re-register.
    late = reply(state, b"dies", token, sim_complete(1), 4.5)
    assert to_clients(late) == []
    assert to_workers(late) == [[b"dies", *wp.disconnect(wp.REASON_UNKNOWN)]]
    done = reply(state, b"fresh", token2, sim_complete(1), 5.0)
    assert [c[0] for c in to_clients(done)] == [b"first"]
    assert rec.answers["photondata", "ok"] == 1


def test_late_reply_with_unknown_token_from_a_live_worker_is_dropped() -> None:
    state, _ = make()
    register(state, b"w")
    assert reply(state, b"w", 999, sim_complete(1), 1.0) == []


def test_worker_lost_max_attempts_times_gives_sim_failed() -> None:
    state, rec = make(max_attempts=2, queue_deadline_s=1000.0)
    register(state, b"w1")
    state.on_client(env("c"), photondata(42), 0.0)
    advance(state, 4.0)  # w1 expires; request requeued
    assert state.queued == 1
    register(state, b"w2", now=4.0)
    out = state.on_worker(b"w2", wp.disconnect(wp.REASON_EXIT), 5.0)
    assert to_clients(out) == [[b"c", b"", b"SIM_FAILED", struct.pack("<I", 42)]]
    assert rec.answers["photondata", "retries_exhausted"] == 1
    assert state.queued == 0
    assert state.in_flight == 0


def test_heartbeats_keep_a_busy_worker_alive_and_go_to_every_worker() -> None:
    state, rec = make()
    register(state, b"idle")
    register(state, b"busy")
    requests_to(state.on_client(env("c"), photondata(1), 0.0))
    beats = Counter[bytes]()
    for step in range(1, 21):
        now = step * 0.5
        for ident in (b"idle", b"busy"):
            state.on_worker(ident, wp.heartbeat(), now)
        for frames in to_workers(state.on_tick(now)):
            if frames[1:] == wp.heartbeat():
                beats[frames[0]] += 1
    assert rec.expiries == 0
    assert beats[b"idle"] >= 9
    assert beats[b"busy"] >= 9


def test_worker_drain_finishes_in_flight_work_and_gets_nothing_new() -> None:
    state, rec = make()
    register(state, b"w", capacity=2)
    [(_, token, _)] = requests_to(state.on_client(env("a"), photondata(1), 0.0))
    out = state.on_worker(b"w", wp.disconnect(wp.REASON_DRAIN), 0.1)
    assert to_workers(out) == [[b"w", *wp.disconnect(wp.REASON_ACK)]]
    assert requests_to(state.on_client(env("b"), photondata(2), 0.2)) == []
    assert state.queued == 1
    assert [c[0] for c in to_clients(reply(state, b"w", token, sim_complete(1), 0.5))] == [b"a"]
    assert state.queued == 1
    assert (state.idle_workers, state.busy_workers) == (0, 0)  # drained: neither busy nor available
    state.on_worker(b"w", wp.disconnect(wp.REASON_EXIT), 0.6)
    assert b"w" not in state.workers
    assert (state.idle_workers, state.busy_workers) == (0, 0)
    assert rec.requeues == 0


def test_idle_worker_that_drains_is_no_longer_counted_idle() -> None:
    state, _ = make()
    register(state, b"w")
    register(state, b"v")
    assert state.idle_workers == 2
    state.on_worker(b"w", wp.disconnect(wp.REASON_DRAIN), 0.1)
    state.on_worker(b"w", wp.disconnect(wp.REASON_DRAIN), 0.2)  # a repeated DRAIN counts once
    assert state.idle_workers == 1
    state.on_worker(b"w", wp.disconnect(wp.REASON_EXIT), 0.3)
    assert state.idle_workers == 1


def test_unreachable_worker_is_dropped_at_once_and_its_work_goes_elsewhere() -> None:
    state, rec = make()
    register(state, b"w")
    [(_, token, _)] = requests_to(state.on_client(env("a"), photondata(1), 0.0))
    register(state, b"v", now=0.1)
    [(ident, _, _)] = requests_to(state.on_worker_gone(b"w", 0.2))
    assert ident == b"v"
    assert b"w" not in state.workers
    assert (rec.requeues, rec.expiries) == (1, 1)
    assert state.on_worker_gone(b"w", 0.3) == []  # already forgotten
    assert reply(state, b"w", token, sim_complete(1), 0.4) == [ToWorker([b"w", *wp.disconnect(wp.REASON_UNKNOWN)])]


def test_worker_exit_with_work_in_hand_requeues_it() -> None:
    state, rec = make()
    register(state, b"w")
    requests_to(state.on_client(env("a"), photondata(1), 0.0))
    state.on_worker(b"w", wp.disconnect(wp.REASON_EXIT), 1.0)
    assert state.queued == 1
    assert rec.requeues == 1
    [(ident, _, _)] = requests_to(register(state, b"v", now=2.0))
    assert ident == b"v"


# ---- registration --------------------------------------------------------------------------------


def test_worker_with_another_detector_is_refused_with_a_metric() -> None:
    state, rec = make()
    register(state, b"w1", fp=FP_A)
    out = register(state, b"w2", fp=FP_B)
    assert to_workers(out) == [[b"w2", *wp.disconnect(wp.REASON_FINGERPRINT)]]
    assert rec.refusals == ["fingerprint"]
    assert b"w2" not in state.workers
    # Once the pool is empty, the next worker defines it.
    state.on_worker(b"w1", wp.disconnect(wp.REASON_EXIT), 1.0)
    register(state, b"w3", fp=FP_B, now=2.0)
    assert state.pool_fingerprint == FP_B


def test_pinned_fingerprint_refuses_even_the_first_worker() -> None:
    state, rec = make(fingerprint=FP_B)
    out = register(state, b"w1", fp=FP_A)
    assert to_workers(out) == [[b"w1", *wp.disconnect(wp.REASON_FINGERPRINT)]]
    assert rec.refusals == ["fingerprint"]
    register(state, b"w2", fp=FP_B)
    assert set(state.workers) == {b"w2"}


def test_registration_is_acknowledged_with_a_heartbeat() -> None:
    state, _ = make()
    assert to_workers(register(state, b"w")) == [[b"w", *wp.heartbeat()]]


def test_unknown_worker_is_asked_to_reconnect() -> None:
    state, _ = make()
    assert to_workers(state.on_worker(b"ghost", wp.heartbeat(), 0.0)) == [
        [b"ghost", *wp.disconnect(wp.REASON_UNKNOWN)]]


@pytest.mark.parametrize("frames", [
    [], [b""], [b"garbage"], [b"CHARONW1"], [b"CHARONW1", b"\x09"], [b"CHARONW1", b"\x04", b"short"],
    [b"CHARONW1", b"\x01", b"notahexfingerprint", b"\1\0\0\0", b"echo", b"", b"", b"", b""],
    [b"CHARONW2", b"\x01"], [b"\x07"],
])
def test_malformed_backend_traffic_is_dropped_and_changes_nothing(frames: list[v1.Frame]) -> None:
    state, _ = make()
    register(state, b"w")
    before = (dict(state.workers), state.queued, state.in_flight)
    assert state.on_worker(b"w", frames, 1.0) == []
    assert (dict(state.workers), state.queued, state.in_flight) == before


def test_legacy_char0n_worker_is_served_with_its_envelope_convention() -> None:
    state, _ = make()
    out = state.on_worker(b"old", [tokens.PPP_READY], 0.0)
    assert to_workers(out) == []
    assert state.workers[b"old"].capacity == 1
    out = state.on_client(env("c"), photondata(3), 0.1)
    [frames] = to_workers(out)
    assert frames[0] == b"old"
    assert frames[2] == b""
    assert frames[3:] == [bytes(f) for f in photondata(3)]
    token_frame = frames[1]
    # ChAR0N's handler echoes [identity, b""] in front of its reply.
    back = state.on_worker(b"old", [token_frame, b"", *sim_complete(3)], 1.0)
    assert to_clients(back) == [[b"c", b"", *[bytes(f) for f in sim_complete(3)]]]
    hb = to_workers(state.on_tick(1.0))
    assert [b"old", tokens.PPP_HEARTBEAT] in hb


def test_legacy_workers_can_be_switched_off() -> None:
    state, rec = make(accept_legacy_workers=False)
    assert state.on_worker(b"old", [tokens.PPP_READY], 0.0) == []
    assert rec.refusals == ["legacy"]
    assert not state.workers


def test_shutdown_tells_workers_to_reconnect() -> None:
    state, _ = make()
    register(state, b"a")
    register(state, b"b")
    assert sorted(to_workers(state.shutdown())) == [
        [b"a", *wp.disconnect(wp.REASON_SHUTDOWN)], [b"b", *wp.disconnect(wp.REASON_SHUTDOWN)]]


# ---- resend de-duplication -----------------------------------------------------------------------


def test_resends_while_in_flight_are_simulated_once_and_all_answered() -> None:
    state, rec = make()
    register(state, b"w")
    first = requests_to(state.on_client(env("r1"), photondata(8), 0.0))
    assert len(first) == 1
    assert state.on_client(env("r2"), photondata(8), 2.5) == []
    assert state.on_client(env("r3"), photondata(8), 5.0) == []
    out = reply(state, b"w", first[0][1], sim_complete(8), 6.0)
    assert sorted(c[0] for c in to_clients(out)) == [b"r1", b"r2", b"r3"]
    assert rec.dedups == 2
    assert rec.answers["photondata", "ok"] == 3
    assert rec.photons == 2  # one simulation of the 2-photon event
    # Within the window a further resend is answered from the cache at once.
    again = state.on_client(env("r4"), photondata(8), 30.0)
    assert to_clients(again) == [[b"r4", b"", *[bytes(f) for f in sim_complete(8)]]]
    assert requests_to(again) == []
    # After the window it is simulated afresh.
    state.on_worker(b"w", wp.heartbeat(), 66.0)
    assert len(requests_to(state.on_client(env("r5"), photondata(8), 66.1))) == 1


def test_resend_joins_its_queued_twin_and_takes_no_slot() -> None:
    state, _ = make(queue_max_requests=1)
    state.on_client(env("r1"), photondata(8), 0.0)
    assert state.on_client(env("r2"), photondata(8), 1.0) == []
    assert state.queued == 1
    [(_, token, _)] = requests_to(register(state, b"w", now=2.0))
    assert sorted(c[0] for c in to_clients(reply(state, b"w", token, sim_complete(8), 3.0))) == [b"r1", b"r2"]


def test_each_requester_keeps_its_own_queue_deadline() -> None:
    state, _ = make(queue_deadline_s=10.0)
    state.on_client(env("r1"), photondata(8), 0.0)
    state.on_client(env("r2"), photondata(8), 4.0)
    assert to_clients(state.on_tick(10.0)) == [[b"r1", b"", b"NO_WORKERS"]]
    assert state.queued == 1
    [(_, token, _)] = requests_to(register(state, b"w", now=11.0))
    assert to_clients(reply(state, b"w", token, sim_complete(8), 12.0))[0][0] == b"r2"


@pytest.mark.parametrize("where", ["middle", "end"])
def test_equal_key_but_different_bytes_is_not_deduplicated(where: str) -> None:
    state, rec = make()
    register(state, b"w1")
    register(state, b"w2")
    register(state, b"w3")
    n = 4 * DEDUP_SAMPLE_BYTES  # frames longer than the two checksummed ends
    a = photondata(1, n=n)
    b = list(a)
    changed = bytearray(a[2])
    changed[len(changed) // 2 if where == "middle" else -1] ^= 0xFF
    b[2] = bytes(changed)
    assert len(requests_to(state.on_client(env("a"), a, 0.0))) == 1
    assert len(requests_to(state.on_client(env("b"), b, 0.0))) == 1
    assert rec.dedups == 0
    # The true resend still finds its twin among the two.
    assert requests_to(state.on_client(env("c"), b, 0.0)) == []
    assert rec.dedups == 1


def test_end_checksum_reads_only_the_frame_ends() -> None:
    n = 10 * DEDUP_SAMPLE_BYTES
    a = v1.decode_photondata(photondata(1, n=n))
    middle = bytearray(photondata(1, n=n)[5])
    middle[n] ^= 1
    b = v1.decode_photondata([*photondata(1, n=n)[:5], bytes(middle), *photondata(1, n=n)[6:]])
    assert end_checksum(a.arrays) == end_checksum(b.arrays)
    end = bytearray(middle)
    end[-1] ^= 1
    c = v1.decode_photondata([*photondata(1, n=n)[:5], bytes(end), *photondata(1, n=n)[6:]])
    assert end_checksum(a.arrays) != end_checksum(c.arrays)


def test_a_failed_simulation_is_not_cached_for_resends() -> None:
    state, _ = make()
    register(state, b"w")
    [(_, token, _)] = requests_to(state.on_client(env("a"), photondata(4), 0.0))
    out = reply(state, b"w", token, v1.sim_failed(4), 1.0)
    assert to_clients(out) == [[b"a", b"", b"SIM_FAILED", struct.pack("<I", 4)]]
    assert len(requests_to(state.on_client(env("b"), photondata(4), 2.0))) == 1


def test_reply_cache_is_bounded_in_bytes() -> None:
    one = sum(len(f) for f in photondata(1, n=64)) + sum(len(f) for f in sim_complete(1))
    state, _ = make(dedup_max_bytes=one)
    register(state, b"w")
    for ev in (1, 2):
        [(_, token, _)] = requests_to(state.on_client(env("a"), photondata(ev, n=64), float(ev)))
        reply(state, b"w", token, sim_complete(ev), float(ev))
        state.housekeeping(float(ev))
    # Event 2 is cached, event 1 was evicted to stay within the bound.
    assert requests_to(state.on_client(env("b"), photondata(2, n=64), 3.0)) == []
    assert len(requests_to(state.on_client(env("c"), photondata(1, n=64), 3.0))) == 1


def test_dedup_window_zero_switches_it_off() -> None:
    state, rec = make(dedup_window_s=0.0)
    register(state, b"w1")
    register(state, b"w2")
    assert len(requests_to(state.on_client(env("a"), photondata(1), 0.0))) == 1
    assert len(requests_to(state.on_client(env("b"), photondata(1), 0.0))) == 1
    assert rec.dedups == 0


def test_requeued_job_keeps_all_its_requesters() -> None:
    state, rec = make()
    register(state, b"w1")
    state.on_client(env("r1"), photondata(5), 0.0)
    state.on_client(env("r2"), photondata(5), 0.5)
    state.on_worker(b"w1", wp.disconnect(wp.REASON_EXIT), 1.0)
    [(_, token, _)] = requests_to(register(state, b"w2", now=2.0))
    out = reply(state, b"w2", token, sim_complete(5), 3.0)
    assert sorted(c[0] for c in to_clients(out)) == [b"r1", b"r2"]
    assert rec.answers["photondata", "ok"] == 2



# ---- explicit states and their invariants --------------------------------------------------------


def test_a_job_moves_only_along_the_declared_edges() -> None:
    state, _ = make()
    job = Job("photondata", photondata(1), 100, 2, 1, None)
    for to in (JobState.IN_FLIGHT, JobState.DONE, JobState.DROPPED):
        with pytest.raises(AssertionError, match=f"no edge NEW -> {to.name}"):
            state._move(job, to)
    assert job.state is JobState.NEW
    state._move(job, JobState.QUEUED)
    assert (state.queued, state.queued_bytes) == (1, 100)
    with pytest.raises(AssertionError, match="no edge QUEUED -> DONE"):
        state._move(job, JobState.DONE)
    assert all(a is not b for a, b in EDGES)
    assert {b for _, b in EDGES} | {a for a, _ in EDGES} == set(JobState)


def test_check_invariants_finds_a_counter_kept_wrong() -> None:
    state, _ = make()
    register(state, b"w1")
    state.on_client(env("c"), photondata(1), 0.0)
    state.check_invariants()
    state.in_flight += 1
    with pytest.raises(AssertionError, match=r"in_flight: kept 2, actual 1"):
        state.check_invariants()
    state.in_flight -= 1
    state.queued_bytes = 7
    with pytest.raises(AssertionError, match=r"queued_bytes: kept 7, actual 0"):
        state.check_invariants()
