"""The router's execution deadline on the fake clock: a request a worker holds too long is taken
back and given to another worker, its late reply is dropped, and a worker that keeps missing the
deadline is expelled."""

from __future__ import annotations

import struct

from charon.protocol import tokens
from charon.protocol import worker as wp
from charon.router.state import Action, RouterState
from tests.test_router_state import (
    env,
    make,
    photondata,
    register,
    reply,
    requests_to,
    sim_complete,
    to_clients,
    to_workers,
)


def advance(state: RouterState, until: float) -> list[Action]:
    """Tick at every wakeup up to ``until``; every registered worker heartbeats just before each
    tick (a hung engine does not stop a worker's heartbeats)."""
    actions: list[Action] = []
    while state.next_wakeup() <= until:
        now = state.next_wakeup()
        for ident in list(state.workers):
            actions += state.on_worker(ident, [tokens.PPP_HEARTBEAT] if state.workers[ident].legacy
                                       else wp.heartbeat(), now)
        actions += state.on_tick(now)
    return actions


def test_request_held_past_the_deadline_goes_to_another_worker_and_the_late_reply_is_dropped() -> None:
    state, rec = make(execution_deadline_s=5.0)
    register(state, b"slow")
    [(_, token, _)] = requests_to(state.on_client(env("c"), photondata(7), 1.0))
    register(state, b"fast", now=2.0)
    assert state.next_wakeup() <= 6.0
    assert requests_to(advance(state, 5.9)) == []  # not yet
    moved = requests_to(advance(state, 6.0))
    assert [(w, p[1]) for w, _, p in moved] == [(b"fast", struct.pack("<II", 7, 2))]
    assert rec.overdues == 1
    assert rec.requeues == 1
    assert state.in_flight == 1
    assert state.busy_workers == 2
    # The slow worker answers at last: dropped, and its slot is free again.
    assert reply(state, b"slow", token, sim_complete(7), 7.0) == []
    assert state.busy_workers == 1
    assert state.idle_workers == 1
    out = to_clients(reply(state, b"fast", moved[0][1], sim_complete(7), 7.5))
    assert out == [[b"c", b"", *[bytes(f) for f in sim_complete(7)]]]
    assert rec.answers["photondata", "ok"] == 1


def test_overdue_slot_takes_no_new_work_until_the_late_reply() -> None:
    state, _ = make(execution_deadline_s=1.0, deadline_expel_after=5)
    register(state, b"w")
    [(_, token, _)] = requests_to(state.on_client(env("a"), photondata(1), 0.0))
    advance(state, 1.0)
    # Requeued, but the only worker's engine is still busy with it: nothing is sent.
    assert state.queued == 1
    assert state.in_flight == 0
    assert requests_to(state.on_client(env("b"), photondata(2), 1.5)) == []
    # The late reply frees the slot: the requeued request goes out again.
    again = requests_to(reply(state, b"w", token, sim_complete(1), 2.0))
    assert [p[1][:4] for _, _, p in again] == [struct.pack("<I", 1)]


def test_deadline_off_by_default_keeps_a_request_on_its_worker() -> None:
    state, rec = make()
    register(state, b"w")
    state.on_client(env("c"), photondata(3), 0.0)
    register(state, b"x")
    advance(state, 1000.0)
    assert rec.overdues == 0


def test_repeated_misses_expel_the_worker_and_its_requests_go_elsewhere() -> None:
    state, rec = make(execution_deadline_s=2.0, deadline_expel_after=2, max_attempts=5)
    register(state, b"hung", capacity=2)
    state.on_client(env("a"), photondata(1), 0.0)
    state.on_client(env("b"), photondata(2), 0.5)
    actions = advance(state, 2.0)
    assert rec.overdues == 1
    assert rec.expulsions == 0
    actions = advance(state, 2.5)
    assert rec.overdues == 2
    assert rec.expulsions == 1
    assert [b"hung", *wp.disconnect(wp.REASON_DEADLINE)] in to_workers(actions)
    assert b"hung" not in state.workers
    assert state.queued == 2
    # A healthy worker takes both (each went back to the head of the queue).
    sent = requests_to(register(state, b"ok", now=3.0, capacity=2))
    assert sorted(p[1][:4] for _, _, p in sent) == [struct.pack("<I", 1), struct.pack("<I", 2)]


def test_a_reply_in_time_resets_the_miss_count() -> None:
    state, rec = make(execution_deadline_s=2.0, deadline_expel_after=2, max_attempts=10)
    register(state, b"w", capacity=2)
    [(_, first, _)] = requests_to(state.on_client(env("a"), photondata(1), 0.0))
    [(_, second, _)] = requests_to(advance(state, 2.0))  # miss 1: sent again, on the other slot
    assert state.workers[b"w"].misses == 1
    out = to_clients(reply(state, b"w", second, sim_complete(1), 2.5))  # in time: the count restarts
    assert len(out) == 1
    assert state.workers[b"w"].misses == 0
    assert reply(state, b"w", first, sim_complete(1), 2.6) == []  # the overdue one: dropped
    [(_, third, _)] = requests_to(state.on_client(env("b"), photondata(2), 3.0))
    advance(state, 5.0)  # miss 1 again, not 2: still registered
    assert rec.overdues == 2
    assert rec.expulsions == 0
    assert b"w" in state.workers
    del third


def test_deadline_retries_run_out_after_max_attempts() -> None:
    state, rec = make(execution_deadline_s=1.0, deadline_expel_after=100, max_attempts=2)
    for name in (b"w1", b"w2"):
        register(state, name)
    state.on_client(env("c"), photondata(4), 0.0)
    advance(state, 1.0)  # w1 misses: to w2
    actions = advance(state, 2.0)  # w2 misses: the second attempt was the last
    assert rec.overdues == 2
    assert rec.answers["photondata", "execution_deadline"] == 1
    assert to_clients(actions) == [[b"c", b"", tokens.SIM_FAILED, struct.pack("<I", 4)]]
    assert state.queued == 0
    assert state.in_flight == 0


def test_legacy_worker_overdue_is_not_sent_a_disconnect() -> None:
    state, rec = make(execution_deadline_s=1.0, deadline_expel_after=1, max_attempts=3,
                      queue_deadline_s=100.0)
    state.on_worker(b"old", [tokens.PPP_READY], 0.0)
    state.on_client(env("c"), photondata(5), 0.0)
    actions = advance(state, 1.0)
    assert rec.expulsions == 1
    assert to_workers(actions) == [] or all(len(f) < 3 for f in to_workers(actions))
    assert b"old" not in state.workers


def test_deadline_entries_of_answered_requests_do_not_pile_up() -> None:
    state, _ = make(execution_deadline_s=300.0)
    register(state, b"w")
    for event in range(200):
        [(_, token, _)] = requests_to(state.on_client(env(f"c{event}"), photondata(event), float(event)))
        reply(state, b"w", token, sim_complete(event), event + 0.5)
        state.housekeeping(event + 0.5)
    assert len(state._exec_deadlines) == 0  # not 200 entries waiting for their 300 s
