"""The worker's connection lifecycle, sans-IO: heartbeat schedule, router liveness, reconnect backoff, drain.

The driver owns the sockets and threads; every decision about *when* (send a heartbeat, declare
the router dead, reconnect, give up, exit after SIGTERM) is made here from times passed in, so it
is tested with a fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from charon.settings import HeartbeatSettings, WorkerSettings


@dataclass(slots=True)
class Backoff:
    """Reconnect delays: ``initial`` doubling to ``maximum``; reset after a successful connection."""

    initial: float
    maximum: float
    max_attempts: int = 0  # 0 = never give up
    attempts: int = 0
    _next: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._next = self.initial

    def next_delay(self) -> float | None:
        """The wait before the next attempt, or None once ``max_attempts`` are used up."""
        if self.max_attempts and self.attempts >= self.max_attempts:
            return None
        self.attempts += 1
        delay = self._next
        self._next = min(self._next * 2.0, self.maximum)
        return delay

    def reset(self) -> None:
        self.attempts = 0
        self._next = self.initial


@dataclass(slots=True)
class Link:
    """One connection to the router: when to heartbeat, whether the router is still there.

    ``registered`` becomes true at the router's first HEARTBEAT or REQUEST after READY (the router
    answers READY with a heartbeat), which is what counts as a successful connection. A
    DISCONNECT (the router refused the worker, or asks it to reconnect) never does.
    """

    interval: float
    liveness: int
    opened: float
    last_heard: float = 0.0
    next_heartbeat: float = 0.0
    registered: bool = False

    def __post_init__(self) -> None:
        self.last_heard = self.opened
        self.next_heartbeat = self.opened + self.interval

    def heard(self, now: float, *, registers: bool = True) -> bool:
        """Any router message (``registers``: one that acknowledges READY, not a DISCONNECT);
        returns True when it completes the registration."""
        self.last_heard = now
        if registers and not self.registered:
            self.registered = True
            return True
        return False

    def heartbeat_due(self, now: float) -> bool:
        if now < self.next_heartbeat:
            return False
        self.next_heartbeat = now + self.interval
        return True

    def router_dead(self, now: float) -> bool:
        return now - self.last_heard > self.interval * self.liveness

    def next_wakeup(self) -> float:
        return min(self.next_heartbeat, self.last_heard + self.interval * self.liveness)


@dataclass(slots=True)
class Drain:
    """After SIGTERM: stop taking work, finish what is held, exit by ``deadline``."""

    deadline: float
    acknowledged: bool = False

    def may_exit(self, now: float, in_flight: int, link: Link | None) -> bool:
        if now >= self.deadline:
            return True
        if in_flight:
            return False
        # Nothing held: leave once the router confirmed it sends nothing more, or is gone.
        return self.acknowledged or link is None or not link.registered or link.router_dead(now)


def backoff_for(worker: WorkerSettings) -> Backoff:
    return Backoff(worker.reconnect_initial_s, worker.reconnect_max_s, worker.reconnect_max_attempts)


def link_for(heartbeat: HeartbeatSettings, now: float) -> Link:
    return Link(heartbeat.interval_s, heartbeat.liveness, now)
