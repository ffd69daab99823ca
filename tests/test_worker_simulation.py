"""The worker's simulation thread: batching, stale work, engine failures (real echo engine, real outbox)."""

from __future__ import annotations

import select
import struct
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from charon.engine.base import DetectorInfo, Hits, Photons, Simulator
from charon.engine.registry import make_simulator
from charon.protocol import tokens, v1
from charon.service import RequestHandler
from charon.settings import EngineSettings
from charon.worker.outbox import Outbox
from charon.worker.simulation import SimulationThread, Work
from tests.router_support import photondata


class Counting:
    """Wraps a real simulator, recording the batch sizes it is called with (and failing on demand)."""

    def __init__(self, inner: Simulator, fail: bool = False) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: list[int] = []
        self.fail = fail

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    def detector_info(self) -> DetectorInfo:
        return self.inner.detector_info()

    def simulate(self, batch: Sequence[Photons]) -> list[Hits]:
        self.calls.append(len(batch))
        if self.fail:
            raise RuntimeError("engine fault")
        return self.inner.simulate(batch)


@pytest.fixture
def results() -> Iterator[Outbox]:
    outbox = Outbox()
    try:
        yield outbox
    finally:
        outbox.close()


def _thread(outbox: Outbox, sim: Counting, **kw: Any) -> SimulationThread:
    kw.setdefault("batch_max_photons", 1_000_000)
    kw.setdefault("batch_max_delay_s", 0.0)
    return SimulationThread(RequestHandler(sim), outbox, **kw)


def _woken(outbox: Outbox, timeout_s: float) -> bool:
    return bool(select.select([outbox.fd], [], [], timeout_s)[0])


def _collect(outbox: Outbox, n: int) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    while len(out) < n:
        assert _woken(outbox, 10.0)
        for reply in outbox.take():
            out[reply.token] = [bytes(v1.as_view(f)) for f in reply.frames]
    assert len(out) == n
    return out


def test_queued_requests_share_one_engine_call_and_come_back_per_request(results: Outbox) -> None:
    outbox = results
    sim = Counting(make_simulator(EngineSettings(backend="echo")))
    thread = _thread(outbox, sim)
    for i in range(4):  # queued before the thread starts: one batch
        thread.inbox.put(Work(0, i, photondata(i, 10 + i)))
    thread.start()
    try:
        replies = _collect(outbox, 4)
    finally:
        assert thread.stop(10)
    assert sim.calls == [4]
    for i in range(4):
        assert v1.check_sim_complete(replies[i], i).n_hits == 10 + i


def test_batches_respect_the_photon_budget(results: Outbox) -> None:
    outbox = results
    sim = Counting(make_simulator(EngineSettings(backend="echo")))
    thread = _thread(outbox, sim, batch_max_photons=25)
    for i in range(4):
        thread.inbox.put(Work(0, i, photondata(i, 10)))
    thread.start()
    try:
        _collect(outbox, 4)
    finally:
        assert thread.stop(10)
    assert sim.calls == [2, 2]  # 10 + 10 fits the budget of 25; a third request would exceed it


def test_work_from_a_replaced_connection_is_skipped(results: Outbox) -> None:
    outbox = results
    sim = Counting(make_simulator(EngineSettings(backend="echo")))
    thread = _thread(outbox, sim)
    thread.new_generation(2)
    thread.inbox.put(Work(1, 7, photondata(7, 5)))
    thread.inbox.put(Work(2, 8, photondata(8, 5)))
    thread.start()
    try:
        replies = _collect(outbox, 1)
        assert not _woken(outbox, 0.3)
    finally:
        assert thread.stop(10)
    assert list(replies) == [8]


def test_a_new_connection_reaches_the_thread_in_order_with_the_work(results: Outbox) -> None:
    """The generation travels through the inbox: the thread shares no attribute with the socket
    thread, and work queued before the new connection is skipped, work after it is served."""
    outbox = results
    sim = Counting(make_simulator(EngineSettings(backend="echo")))
    thread = _thread(outbox, sim)
    assert not hasattr(thread, "generation")
    thread.new_generation(1)
    thread.inbox.put(Work(1, 1, photondata(1, 5)))
    thread.new_generation(2)
    thread.inbox.put(Work(1, 2, photondata(2, 5)))  # taken on connection 1, arrived late
    thread.inbox.put(Work(2, 3, photondata(3, 5)))
    thread.start()
    try:
        replies = _collect(outbox, 1)
        assert not _woken(outbox, 0.3)
    finally:
        assert thread.stop(10)
    assert list(replies) == [3]


def test_engine_failure_answers_sim_failed_and_the_thread_carries_on(results: Outbox) -> None:
    outbox = results
    sim = Counting(make_simulator(EngineSettings(backend="echo")), fail=True)
    thread = _thread(outbox, sim)
    thread.start()
    try:
        thread.inbox.put(Work(0, 1, photondata(41, 5)))
        assert _collect(outbox, 1)[1] == [tokens.SIM_FAILED, struct.pack("<I", 41)]
        sim.fail = False
        thread.inbox.put(Work(0, 2, [tokens.PING]))
        thread.inbox.put(Work(0, 3, photondata(42, 5)))
        replies = _collect(outbox, 2)
    finally:
        assert thread.stop(10)
    assert replies[2] == [tokens.ACK]
    assert v1.check_sim_complete(replies[3], 42).n_hits == 5


def test_a_handler_bug_still_answers_every_request(results: Outbox) -> None:
    outbox = results
    sim = Counting(make_simulator(EngineSettings(backend="echo")))
    thread = _thread(outbox, sim)

    def broken(payload: Sequence[v1.Frame]) -> Any:
        raise KeyError("bug")

    thread.handler.handle = broken  # type: ignore[method-assign]
    thread.start()
    try:
        thread.inbox.put(Work(0, 1, [tokens.DETECTOR_INFO]))
        assert _collect(outbox, 1)[1] == [tokens.UNKNOWN_REQUEST]
    finally:
        assert thread.stop(10)
