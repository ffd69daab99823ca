"""The worker's timing decisions (backoff, heartbeats, router liveness, drain) with a fake clock."""

from __future__ import annotations

from charon.settings import HeartbeatSettings, WorkerSettings
from charon.worker.lifecycle import Backoff, Drain, Link, backoff_for, link_for


def test_backoff_doubles_to_the_maximum_and_never_gives_up_by_default() -> None:
    b = backoff_for(WorkerSettings())
    delays = [b.next_delay() for _ in range(9)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 32.0, 32.0, 32.0]
    assert all(b.next_delay() == 32.0 for _ in range(1000))


def test_backoff_resets_after_a_successful_connection() -> None:
    b = Backoff(0.5, 4.0)
    assert [b.next_delay() for _ in range(4)] == [0.5, 1.0, 2.0, 4.0]
    b.reset()
    assert b.next_delay() == 0.5
    assert b.attempts == 1


def test_backoff_gives_up_after_max_attempts_when_configured() -> None:
    b = backoff_for(WorkerSettings(reconnect_max_attempts=2))
    assert b.next_delay() == 1.0
    assert b.next_delay() == 2.0
    assert b.next_delay() is None


def test_heartbeats_every_interval_and_router_dead_after_liveness_intervals() -> None:
    link = link_for(HeartbeatSettings(interval_s=1.0, liveness=3), now=100.0)
    assert not link.heartbeat_due(100.5)
    assert link.heartbeat_due(101.0)
    assert not link.heartbeat_due(101.5)
    assert link.heartbeat_due(102.0)
    assert not link.router_dead(103.0)
    assert link.router_dead(103.01)
    assert link.next_wakeup() == 103.0


def test_any_router_message_resets_liveness_and_the_first_one_registers() -> None:
    link = Link(0.2, 3, opened=0.0)
    assert link.heard(0.1) is True
    assert link.registered
    assert link.heard(0.5) is False
    assert not link.router_dead(1.1)
    assert link.router_dead(1.11)


def test_a_disconnect_keeps_the_link_alive_but_never_registers_it() -> None:
    """A refusal (DISCONNECT fingerprint) is a router message, not a registration."""
    link = Link(0.2, 3, opened=0.0)
    assert link.heard(0.1, registers=False) is False
    assert not link.registered
    assert not link.router_dead(0.7)
    assert link.heard(0.2) is True


def test_drain_waits_for_in_flight_work_then_the_router_ack() -> None:
    link = Link(1.0, 3, opened=0.0)
    link.heard(0.0)
    drain = Drain(deadline=25.0)
    assert not drain.may_exit(1.0, in_flight=2, link=link)
    assert not drain.may_exit(1.0, in_flight=0, link=link)  # a request may still be on its way
    drain.acknowledged = True
    assert drain.may_exit(1.0, in_flight=0, link=link)
    assert not drain.may_exit(1.0, in_flight=1, link=link)


def test_drain_exits_at_the_grace_deadline_even_with_work_in_hand() -> None:
    drain = Drain(deadline=5.0)
    assert not drain.may_exit(4.99, in_flight=1, link=None)
    assert drain.may_exit(5.0, in_flight=1, link=None)


def test_drain_with_a_silent_router_exits_once_idle() -> None:
    link = Link(1.0, 3, opened=0.0)
    link.heard(0.0)
    drain = Drain(deadline=25.0)
    assert not drain.may_exit(2.0, in_flight=0, link=link)
    assert drain.may_exit(3.5, in_flight=0, link=link)
