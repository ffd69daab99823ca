"""The request handler shared by ``charon serve`` and workers, against engines that misbehave.

A unit test of one module: the engine is a small stand-in so that each way an engine can fail
(raising, a wrong number of hit sets, ragged hit arrays, a channel id >= P) is exercised; the
real engines are covered over sockets elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from charon.engine.base import DetectorInfo, Hits, Photons
from charon.protocol import tokens, v1
from charon.service import RequestHandler
from charon.source import isotropic_point

N_CHANNELS = 4


class StandIn:
    """A simulator whose ``simulate`` is the given function."""

    name = "stand-in"
    fingerprint = "0" * 64

    def __init__(self, simulate: Callable[[Sequence[Photons]], list[Hits]]) -> None:
        self._simulate = simulate
        self.calls = 0

    def detector_info(self) -> DetectorInfo:
        zeros = np.zeros(N_CHANNELS, np.float32)
        return DetectorInfo(zeros, zeros, zeros, np.arange(N_CHANNELS, dtype=np.int32))

    def simulate(self, batch: Sequence[Photons]) -> list[Hits]:
        self.calls += 1
        return self._simulate(batch)


def hits_on(channels: Sequence[int]) -> Hits:
    n = len(channels)
    f = np.ones(n, np.float32)
    return Hits(np.asarray(channels, np.uint32), f, f, f, f, f, f, f, f, np.full(n, 4, np.uint32))


def photondata(event_id: int, n: int) -> list[v1.Frame]:
    photons = isotropic_point(event_id, n, (0.0, 0.0, 0.0), 420.0)
    return [tokens.PHOTONDATA, photons.metadata(), *photons.frames()]


def ragged_hits() -> Hits:
    """Two hits, but one float array with a single entry."""
    two, one = np.ones(2, np.float32), np.ones(1, np.float32)
    return Hits(np.zeros(2, np.uint32), two, two, one, two, two, two, two, two, np.zeros(2, np.uint32))


def raise_error(_batch: Sequence[Photons]) -> list[Hits]:
    raise RuntimeError("device lost")


@pytest.mark.parametrize(
    ("simulate", "detail"),
    [
        (raise_error, "device lost"),
        (lambda batch: [], "engine returned 0 hit sets for 1 events"),
        (lambda batch: [hits_on([0]), hits_on([1])], "engine returned 2 hit sets for 1 events"),
        (lambda batch: [ragged_hits()], "share one length"),
    ],
    ids=["raises", "no hit sets", "too many hit sets", "ragged hits"],
)
def test_a_failing_engine_gets_sim_failed_with_the_event_id(
    simulate: Callable[[Sequence[Photons]], list[Hits]], detail: str
) -> None:
    handler = RequestHandler(StandIn(simulate))
    answer = handler.handle(photondata(0xDEADBEEF, 5))
    assert [bytes(f) for f in answer.reply] == [tokens.SIM_FAILED, b"\xef\xbe\xad\xde"]
    assert answer.outcome == "simulation_failed"
    assert detail in answer.detail


def test_channels_at_or_above_p_are_dropped_never_sent() -> None:
    handler = RequestHandler(StandIn(lambda batch: [hits_on([0, N_CHANNELS, 3, N_CHANNELS + 7, 1])]))
    answer = handler.handle(photondata(3, 5))
    done = v1.check_sim_complete(answer.reply, 3, n_channels=N_CHANNELS)
    assert Hits.from_frames(done.hit_frames).channel.tolist() == [0, 3, 1]
    assert answer.n_hits == 3


def test_zero_photons_get_ten_empty_frames_without_an_engine_call() -> None:
    engine = StandIn(raise_error)
    answer = RequestHandler(engine).handle(photondata(9, 0))
    assert [bytes(f) for f in answer.reply] == [tokens.SIM_COMPLETE, b"\x09\0\0\0", *[b""] * 10]
    assert engine.calls == 0


def test_batch_answers_each_request_in_order() -> None:
    engine = StandIn(lambda batch: [hits_on([len(ev) % N_CHANNELS] * len(ev)) for ev in batch])
    requests = [v1.decode_photondata(photondata(i, n)) for i, n in enumerate((3, 0, 2))]
    answers = RequestHandler(engine).simulate_many(requests)
    assert engine.calls == 1
    assert [a.n_hits for a in answers] == [3, 0, 2]
    for i, answer in enumerate(answers):
        assert v1.check_sim_complete(answer.reply, i, n_channels=N_CHANNELS).n_hits == answer.n_hits


@pytest.mark.parametrize(
    ("payload", "reply", "outcome"),
    [
        ([], [tokens.UNKNOWN_REQUEST], "unknown_request"),
        ([b"FOO"], [tokens.UNKNOWN_REQUEST], "unknown_request"),
        ([tokens.PHOTONDATA, b"\x07\0\0\0"], [tokens.SIM_FAILED, b"\x07\0\0\0"], "malformed"),
        ([tokens.PING, b"extra"], [tokens.ACK], "ok"),
        ([tokens.RUN_BEGIN], [tokens.ACK], "ok"),
    ],
)
def test_bad_or_odd_input_gets_its_defined_reply(payload: list[bytes], reply: list[bytes], outcome: str) -> None:
    answer = RequestHandler(StandIn(raise_error)).handle(payload)
    assert [bytes(f) for f in answer.reply] == reply
    assert answer.outcome == outcome


def test_legacy_pong_only_when_asked() -> None:
    assert bytes(RequestHandler(StandIn(raise_error), legacy_pong=True).handle([tokens.PING]).reply[0]) == b"PONG"
    assert bytes(RequestHandler(StandIn(raise_error)).handle([tokens.PING]).reply[0]) == b"ACK"
