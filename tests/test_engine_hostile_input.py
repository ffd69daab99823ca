"""No input can hang an engine: extreme finite values, zeros, denormals and non-finite values.

A property-based test feeds every engine photons whose twelve columns are drawn from the values
that break naive normalisation (1e20-scale vectors whose square overflows float32, denormals, signed
zeros, the float32 extremes) and from all float32 values, and requires an answer within a bound:
hits on valid channels, equal-length hit arrays. A hung engine fails the test instead of hanging it
(the call runs in a thread that is abandoned after the bound).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charon.engine.base import Hits, Photons, Simulator
from charon.engine.detector import reference_detector
from charon.protocol.tokens import Flag

#: Longest an engine may take for a handful of photons (CPU, cold caches included).
ANSWER_BOUND_S = 60.0
EXTREMES = (0.0, -0.0, 1.0, -1.0, 0.5, 3e38, -3e38, 3.4028235e38, -3.4028235e38, 1e20, -1e20, 1e-20,
            1.4e-45, -1.4e-45, 1.1754944e-38, 6000.0, -6000.0, 420.0)
_F32 = st.one_of(st.sampled_from(EXTREMES), st.floats(width=32))
_VECTOR_SCALES = (1.0, 0.0, 1e20, 1e-40, 3e38, -1e20)


def _engines() -> Iterator[tuple[str, Callable[[], Simulator]]]:
    from charon.engine.echo import EchoSimulator
    from charon.engine.numpy_engine import NumpySimulator
    from charon.engine.warp_engine import WarpSimulator

    det = reference_detector()
    yield "echo", lambda: EchoSimulator(det)
    yield "numpy", lambda: NumpySimulator(det, seed=1, max_steps=1000)
    yield "builtin-analytic", lambda: WarpSimulator(det, seed=1, device="cpu", threads=1)
    yield "builtin-mesh", lambda: WarpSimulator(det, seed=1, device="cpu", threads=1, geometry="mesh")


ENGINES = dict(_engines())
_built: dict[str, Simulator] = {}


def _engine(name: str) -> Simulator:
    if name not in _built:
        _built[name] = ENGINES[name]()
    return _built[name]


def _answer_within(sim: Simulator, photons: Photons, bound_s: float = ANSWER_BOUND_S) -> Hits:
    result: list[Any] = []

    def call() -> None:
        try:
            result.append(sim.simulate([photons]))
        except Exception as exc:  # noqa: BLE001 - re-raised in the test thread below
            result.append(exc)

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(bound_s)
    if t.is_alive():
        pytest.fail(f"{sim.name} did not answer {len(photons)} photons within {bound_s} s: {photons}")
    out = result[0]
    if isinstance(out, BaseException):
        raise out
    assert len(out) == 1
    hits: Hits = out[0]
    return hits


def _check(sim: Simulator, hits: Hits) -> None:
    n = len(hits)
    for f in fields(Hits):
        assert getattr(hits, f.name).shape == (n,), f.name
    if n:
        assert int(hits.channel.max()) < len(sim.detector_info())


@st.composite
def hostile_photons(draw: st.DrawFn) -> Photons:
    n = draw(st.integers(1, 6))

    def column() -> np.ndarray[Any, np.dtype[np.float32]]:
        return np.array(draw(st.lists(_F32, min_size=n, max_size=n)), dtype=np.float32)

    def vector() -> list[np.ndarray[Any, np.dtype[np.float32]]]:
        if draw(st.booleans()):
            return [column(), column(), column()]
        # A valid direction at an extreme scale: the case whose square overflows.
        v = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).normal(size=(3, n))
        v /= np.linalg.norm(v, axis=0)
        with np.errstate(over="ignore", under="ignore"):
            return list((v * draw(st.sampled_from(_VECTOR_SCALES))).astype(np.float32))

    pos = [column(), column(), column()] if draw(st.booleans()) else [np.zeros(n, np.float32)] * 3
    d = vector()
    pol = vector()
    wl = column() if draw(st.booleans()) else np.full(n, 420.0, np.float32)
    t = column()
    flags = np.array(draw(st.lists(st.sampled_from([0, int(Flag.CHERENKOV), int(Flag.NO_HIT), 2**32 - 1]),
                                   min_size=n, max_size=n)), dtype=np.uint32)
    return Photons(draw(st.integers(0, 2**32 - 1)), *pos, *d, *pol, wl, t, flags)


@pytest.mark.parametrize("engine", sorted(ENGINES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(photons=hostile_photons())
def test_every_engine_answers_hostile_photons(engine: str, photons: Photons) -> None:
    sim = _engine(engine)
    _check(sim, _answer_within(sim, photons))


def _poison(n: int, scale: float) -> Photons:
    rng = np.random.default_rng(7)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    pol = np.cross(d, [0.0, 0.0, 1.0])
    pol /= np.linalg.norm(pol, axis=1, keepdims=True)
    return Photons.from_arrays(3, np.zeros((n, 3)), d, pol * scale, 420.0)


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("scale", [1e20, 0.0, 1e-40, 3e38])
def test_the_poison_request_is_answered_like_a_normal_one(engine: str, scale: float) -> None:
    """Huge, zero and denormal polarisations: answered, with the detected fraction of sane input.

    A valid polarisation at any scale is that polarisation; a zero one is drawn at random. Either
    way the detected fraction must be the reference detector's (about 0.108) within 5 sigma.
    """
    sim = _engine(engine)
    n = 20_000
    hits = _answer_within(sim, _poison(n, scale))
    _check(sim, hits)
    if engine == "echo":
        assert len(hits) == n
        return
    p = 0.1087
    assert abs(len(hits) / n - p) < 5 * np.sqrt(p * (1 - p) / n)


def test_serve_answers_the_poison_request_and_then_ping() -> None:
    """Through ``charon serve --backend builtin``: SIM_COMPLETE for the poison, ACK for PING after it."""
    from charon.client import Client
    from tests import procs

    with procs.serve("--device", "cpu", backend="builtin") as server, \
            Client(server.endpoint, timeout_s=60, retries=0) as client:
        hits = client.simulate(_poison(2000, 1e20))
        assert 0 < len(hits) < 2000
        assert client.ping() < 5.0
