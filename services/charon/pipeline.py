"""The sans-IO core of a v2 client: what to send next within the credit window, what a reply means.

:class:`Pipeline` holds one run's events by index (the index is the event's v2 tag). It hands out
the next SIMULATE's events (:meth:`Pipeline.next_batch`: as many as the server's credit, its
per-message limits and ``max_events`` allow), and turns each RESULT or ERROR into a finished
:class:`EventResult` or a resend (a retryable code, within ``retries`` resends per event). A resend
after the server ran out of room (queue full, deadline, no worker, workers lost) waits a backoff
that doubles per attempt; one after a credit or session refusal goes at once. The sync and asyncio
clients in :mod:`charon.client` are thin loops around it; no sockets, and time is an argument.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from charon.errors import RequestFailed
from charon.protocol import v2

if TYPE_CHECKING:
    from charon.engine.base import Hits


#: First pause before resending an event the server had no room for; doubles per attempt.
BACKOFF_S = 0.05
MAX_BACKOFF_S = 2.0
#: Refusals a resend answers at once (the credit came back, or a new HELLO was sent).
_AT_ONCE = frozenset({v2.ErrorCode.CREDIT_EXCEEDED, v2.ErrorCode.NO_SESSION})


@dataclass(frozen=True, slots=True)
class EventResult:
    """One event's outcome: ``hits`` (with positions when the engine gave them) or an ``error``."""

    index: int
    event_id: int
    hits: Hits | None
    error: v2.Error | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Pipeline:
    """One run of events through a v2 server."""

    def __init__(self, sizes: Sequence[int], event_ids: Sequence[int], welcome: v2.Welcome, *,
                 retries: int = 3, max_events: int | None = None) -> None:
        if len(sizes) != len(event_ids):
            raise ValueError("sizes and event_ids differ in length")
        self.sizes = list(sizes)
        self.event_ids = [e & 0xFFFFFFFF for e in event_ids]
        self.welcome = welcome
        self.retries = retries
        self.max_events = min(welcome.max_events_per_message, max_events or welcome.max_events_per_message)
        self._todo: deque[int] = deque(range(len(sizes)))
        self._attempts = [0] * len(sizes)
        self._in_flight: set[int] = set()
        self._local: deque[EventResult] = deque()
        self._delayed: list[tuple[float, int]] = []  # (not before, index): resends after a backoff
        self.finished = 0
        #: Set when the server lost the session (NO_SESSION): HELLO again before sending more.
        self.needs_hello = False

    def complete(self) -> bool:
        """Every event has its result."""
        return self.finished == len(self.sizes)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def events(self, batch: Sequence[int]) -> list[v2.Event]:
        return [v2.Event(i, self.event_ids[i], self.sizes[i]) for i in batch]

    def next_wakeup(self) -> float | None:
        """When the first resend waiting for its backoff may go (None: none waits)."""
        return self._delayed[0][0] if self._delayed else None

    def next_batch(self, now: float = 0.0) -> list[int]:
        """The indices of the next SIMULATE's events, in order; [] when the window is full or
        nothing is left to send (resends whose backoff has passed by ``now`` go first)."""
        while self._delayed and self._delayed[0][0] <= now:
            self._todo.appendleft(heapq.heappop(self._delayed)[1])
        if self.needs_hello:
            return []
        room = min(self.welcome.credit - len(self._in_flight), self.max_events)
        budget = self.welcome.max_photons_per_message
        batch: list[int] = []
        photons = 0
        while self._todo and len(batch) < room:
            i = self._todo[0]
            n = self.sizes[i]
            if n > budget:  # can never be sent: fail it here, as the server would
                self._todo.popleft()
                self.finished += 1
                self._local.append(EventResult(i, self.event_ids[i], None, v2.Error(
                    i, self.event_ids[i], v2.ErrorCode.TOO_LARGE,
                    f"{n} photons, the server takes at most {budget} per message")))
                continue
            if photons + n > budget:
                break
            self._todo.popleft()
            batch.append(i)
            photons += n
        self._in_flight.update(batch)
        for i in batch:
            self._attempts[i] += 1
        return batch

    def local_results(self) -> list[EventResult]:
        """Events finished without a reply (too large to send): hand them to the caller."""
        out = list(self._local)
        self._local.clear()
        return out

    def on_reply(self, reply: v2.Result | v2.Error, hits: Hits | None = None, now: float = 0.0
                 ) -> EventResult | None:
        """A RESULT (``hits`` already decoded from it) or ERROR: the finished event, or None when
        the event goes back to be resent (or the reply was for no event in flight)."""
        if reply.tag == v2.NO_TAG:
            assert isinstance(reply, v2.Error)
            raise RequestFailed(f"the server rejected a message: {reply.code.name}: {reply.message}", v2.MAGIC)
        i = reply.tag
        if i not in self._in_flight:
            return None
        self._in_flight.discard(i)
        if isinstance(reply, v2.Error) and reply.code.retryable and self._attempts[i] <= self.retries:
            if reply.code in _AT_ONCE:
                self._todo.appendleft(i)
            else:
                backoff = min(BACKOFF_S * 2 ** (self._attempts[i] - 1), MAX_BACKOFF_S)
                heapq.heappush(self._delayed, (now + backoff, i))
            if reply.code is v2.ErrorCode.NO_SESSION:
                self.needs_hello = True
            return None
        self.finished += 1
        if isinstance(reply, v2.Error):
            return EventResult(i, self.event_ids[i], None, reply)
        return EventResult(i, self.event_ids[i], hits)

    def hello_again(self, welcome: v2.Welcome) -> None:
        self.welcome = welcome
        self.needs_hello = False
