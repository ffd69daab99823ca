"""The Chroma backend's conversions and batching logic, with stand-ins shaped like Chroma's objects.

These run anywhere: the stand-ins have the attribute names and numpy semantics of
``chroma.event.Photons``/``Event`` and of ``Simulation.simulate`` (one event per input ``Photons``,
its batch position stamped into ``evidx``, hits in arbitrary order). The real thing is exercised by
tests/test_chroma_gpu.py on a CUDA host.
"""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from charon.engine.base import DetectorInfo, Hits, Photons, Simulator
from charon.engine.batching import pack
from charon.engine.chroma import INSTALL_HINT, ChromaSimulator, DetectorSource, fold_seed
from charon.engine.chroma_convert import (
    detector_info,
    hits_from_flat,
    looks_truncated,
    mark_non_finite,
    photons_kwargs,
)
from charon.errors import ConfigError, DetectorError
from charon.protocol import tokens
from charon.settings import EngineSettings

SURFACE_DETECT = 0x4


class FakeChromaPhotons:
    """Same constructor semantics as chroma.event.Photons (np.asarray of every field)."""

    def __init__(self, pos: Any = None, dir: Any = None, pol: Any = None, wavelengths: Any = None,
                 t: Any = None, last_hit_triangles: Any = None, flags: Any = None, weights: Any = None,
                 evidx: Any = None, channel: Any = None) -> None:
        self.pos = np.asarray(pos, dtype=np.float32)
        self.dir = np.asarray(dir, dtype=np.float32)
        self.pol = np.asarray(pol, dtype=np.float32)
        self.wavelengths = np.asarray(wavelengths, dtype=np.float32)
        n = len(self.pos)
        self.t = np.zeros(n, np.float32) if t is None else np.asarray(t, dtype=np.float32)
        self.flags = np.zeros(n, np.uint32) if flags is None else np.asarray(flags, dtype=np.uint32)
        self.evidx = np.zeros(n, np.uint32) if evidx is None else np.asarray(evidx, dtype=np.uint32)
        self.channel = np.zeros(n, np.uint32) if channel is None else np.asarray(channel, dtype=np.uint32)

    def __len__(self) -> int:
        return len(self.pos)


class FakeEvent:
    def __init__(self, flat_hits: FakeChromaPhotons) -> None:
        self.flat_hits = flat_hits


class FakeSimulation:
    """Chroma's simulate() contract: batches by photons_per_batch, evidx = position in the batch."""

    def __init__(self, n_channels: int, rng: np.random.Generator, bad_channel_every: int = 0) -> None:
        self.n_channels = n_channels
        self.rng = rng
        self.bad_channel_every = bad_channel_every
        self.calls: list[dict[str, Any]] = []
        self.passes: list[int] = []

    def simulate(self, iterable: Sequence[FakeChromaPhotons], **kwargs: Any) -> Iterator[FakeEvent]:
        self.calls.append({"n_inputs": len(iterable), **kwargs})
        batch: list[FakeChromaPhotons] = []
        total = 0
        for photons in iterable:
            photons.evidx[:] = len(batch)
            batch.append(photons)
            total += len(photons)
            if total >= kwargs["photons_per_batch"]:
                yield from self._pass(batch)
                batch, total = [], 0
        if batch:
            yield from self._pass(batch)

    def _pass(self, batch: list[FakeChromaPhotons]) -> Iterator[FakeEvent]:
        self.passes.append(sum(len(p) for p in batch))
        pos = np.concatenate([p.pos for p in batch])
        dirs = np.concatenate([p.dir for p in batch])
        pol = np.concatenate([p.pol for p in batch])
        wl = np.concatenate([p.wavelengths for p in batch])
        t = np.concatenate([p.t for p in batch])
        flags = np.concatenate([p.flags for p in batch])
        evidx = np.concatenate([p.evidx for p in batch])
        # "Detected": every photon with an even time bin, in a scrambled order; channel from x.
        hit = np.flatnonzero((np.floor(t) % 2 == 0) & ((flags & 0x8000000F) == 0))
        hit = self.rng.permutation(hit)
        channel = (np.abs(pos[hit, 0]).astype(np.int64) % self.n_channels).astype(np.int32)
        if self.bad_channel_every:
            channel[:: self.bad_channel_every] = self.n_channels + 3
        flat = FakeChromaPhotons(pos[hit], dirs[hit], pol[hit], wl[hit], t[hit] + 10.0,
                                 flags=flags[hit] | SURFACE_DETECT, evidx=evidx[hit], channel=channel)
        for i in range(len(batch)):
            mine = flat.evidx == i
            yield FakeEvent(FakeChromaPhotons(flat.pos[mine], flat.dir[mine], flat.pol[mine],
                                              flat.wavelengths[mine], flat.t[mine], flags=flat.flags[mine],
                                              evidx=flat.evidx[mine], channel=flat.channel[mine]))


def make_photons(event_id: int, n: int, rng: np.random.Generator) -> Photons:
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return Photons.from_arrays(event_id, rng.uniform(-500, 500, (n, 3)), d, np.cross(d, [0.0, 0.0, 1.0]),
                               rng.uniform(300, 600, n), rng.uniform(0, 50, n), rng.choice([0, 0x400, 0x800], n))


def make_info(p: int) -> DetectorInfo:
    x = np.arange(p, dtype=np.float32) + 0.25
    return DetectorInfo(x, -x, x * 2, np.zeros(p, np.int32))


def simulator(sim: FakeSimulation, p: int, budget: int) -> ChromaSimulator:
    return ChromaSimulator(sim, FakeChromaPhotons, make_info(p), "0" * 64, max_steps=77, batch_max_photons=budget)


# ------------------------------------------------------------------------------- photons to Chroma


def test_photons_kwargs_are_views_that_chroma_keeps() -> None:
    rng = np.random.default_rng(1)
    batch = [make_photons(1, 6, rng), make_photons(2, 4, rng)]
    packed = pack(batch)
    kw = photons_kwargs(packed, 1)
    cp = FakeChromaPhotons(**kw)
    for name, packed_array in (("pos", packed.pos), ("dir", packed.dir), ("pol", packed.pol),
                               ("wavelengths", packed.wavelengths), ("t", packed.t), ("flags", packed.flags),
                               ("evidx", packed.evidx)):
        assert np.shares_memory(getattr(cp, name), packed_array), name
    np.testing.assert_array_equal(cp.pos, np.stack([batch[1].x, batch[1].y, batch[1].z], axis=1))
    np.testing.assert_array_equal(cp.wavelengths, batch[1].wavelength)
    np.testing.assert_array_equal(cp.evidx, 1)
    assert cp.pos.shape == (4, 3)
    assert cp.pos.flags.c_contiguous
    cp.evidx[:] = 0  # what Chroma's simulate() does: the view must be writable
    assert packed.evidx[6:].tolist() == [0] * 4


def test_mark_non_finite_flags_nan_abort_and_keeps_origin_bits() -> None:
    rng = np.random.default_rng(2)
    p = make_photons(3, 5, rng)
    packed = pack([p])
    packed.pos[1, 2] = np.nan
    packed.t[3] = np.inf
    before = packed.flags.copy()
    assert mark_non_finite(packed) == 2
    assert packed.flags[1] == before[1] | np.uint32(tokens.Flag.NAN_ABORT)
    assert packed.flags[3] == before[3] | np.uint32(tokens.Flag.NAN_ABORT)
    np.testing.assert_array_equal(packed.flags[[0, 2, 4]], before[[0, 2, 4]])
    assert mark_non_finite(pack([])) == 0


# ---------------------------------------------------------------------------------- hits from Chroma


def fake_flat(n: int, n_channels: int, rng: np.random.Generator, n_events: int = 1) -> FakeChromaPhotons:
    d = rng.normal(size=(n, 3)).astype(np.float32)
    q = rng.normal(size=(n, 3)).astype(np.float32)
    return FakeChromaPhotons(rng.normal(size=(n, 3)), d, q, rng.uniform(300, 600, n), rng.uniform(0, 100, n),
                             flags=rng.choice([0x404, 0x804, 0x4], n),
                             evidx=rng.integers(0, n_events, n), channel=rng.integers(0, n_channels, n))


def test_hits_from_flat_columns_match_and_are_contiguous() -> None:
    rng = np.random.default_rng(3)
    flat = fake_flat(50, 20, rng)
    hits = hits_from_flat(flat, 20)
    assert len(hits) == 50
    np.testing.assert_array_equal(hits.channel, flat.channel)
    np.testing.assert_array_equal(np.stack([hits.dx, hits.dy, hits.dz], axis=1), flat.dir)
    np.testing.assert_array_equal(np.stack([hits.polx, hits.poly, hits.polz], axis=1), flat.pol)
    np.testing.assert_array_equal(hits.wavelength, flat.wavelengths)
    np.testing.assert_array_equal(hits.time, flat.t)
    np.testing.assert_array_equal(hits.flags, flat.flags)
    for name in tokens.HIT_FIELDS:
        a = getattr(hits, name)
        assert a.flags.c_contiguous, name
        assert a.dtype == (np.uint32 if name in ("channel", "flags") else np.float32)
    # Through the wire frames and back.
    again = Hits.from_frames([bytes(f) for f in hits.frames()])
    for name in tokens.HIT_FIELDS:
        np.testing.assert_array_equal(getattr(again, name), getattr(hits, name))


def test_hits_from_flat_drops_channels_outside_the_detector(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(4)
    flat = fake_flat(10, 5, rng)
    channel = flat.channel.astype(np.int64)
    channel[[2, 7]] = [5, 1000]
    flat.channel = channel.astype(np.uint32)
    with caplog.at_level(logging.WARNING, logger="charon.engine.chroma_convert"):
        hits = hits_from_flat(flat, 5)
    assert len(hits) == 8
    assert np.all(hits.channel < 5)
    np.testing.assert_array_equal(hits.time, np.delete(flat.t, [2, 7]))
    assert "dropped 2 of 10 Chroma hits on channels outside 0..4" in caplog.text


def test_hits_from_flat_accepts_signed_gpu_channels_and_empty_input() -> None:
    rng = np.random.default_rng(5)
    flat = fake_flat(4, 3, rng)
    flat.channel = np.array([0, -1, 2, 1], dtype=np.int32)
    hits = hits_from_flat(flat, 3)
    assert hits.channel.tolist() == [0, 2, 1]
    assert hits.channel.dtype == np.uint32
    empty = hits_from_flat(fake_flat(0, 3, rng), 3)
    assert len(empty) == 0
    assert [bytes(f) for f in empty.frames()] == [b""] * 10


def test_hits_from_flat_rejects_ragged_columns() -> None:
    rng = np.random.default_rng(6)
    flat = fake_flat(4, 3, rng)
    flat.t = flat.t[:3]
    with pytest.raises(ValueError, match="ragged"):
        hits_from_flat(flat, 3)


# ----------------------------------------------------------------------------------- DETECTOR_INFO


class FakeDetector:
    def __init__(self, positions: Any, types: Any) -> None:
        self.channel_index_to_position = positions
        self.channel_index_to_channel_type = types


def test_detector_info_matches_the_v1_test_vector() -> None:
    """charon-v1-wire.md §7 vector 3: positions (1.5, 2.5, 3.5), (-1000, 0, 12.5); types 1, -1."""
    det = FakeDetector(np.array([[1.5, 2.5, 3.5], [-1000.0, 0.0, 12.5]], np.float32), np.array([1, -1], np.int32))
    frames = [bytes(f) for f in detector_info(det).frames()]
    assert [f.hex() for f in frames] == ["0000c03f00007ac4", "0000204000000000", "0000604000004841",
                                         "01000000ffffffff"]


def test_detector_info_from_unflattened_lists(caplog: pytest.LogCaptureFixture) -> None:
    det = FakeDetector([np.array([10.25, 0.0, 1.0]), np.array([0.0, -3.5, 2.0])], [7, 8])
    with caplog.at_level(logging.WARNING):
        info = detector_info(det)
    assert info.x.tolist() == [10.25, 0.0]
    assert info.y.tolist() == [0.0, -3.5]
    assert info.channel_type.tolist() == [7, 8]
    assert info.x.dtype == np.float32
    assert info.channel_type.dtype == np.int32
    assert "truncated" not in caplog.text


def test_detector_info_warns_on_int32_positions(caplog: pytest.LogCaptureFixture) -> None:
    det = FakeDetector(np.array([[1000, 2, -3], [4, 5, 6]], np.int32), np.array([0, 0], np.int32))
    with caplog.at_level(logging.WARNING, logger="charon.engine.chroma_convert"):
        info = detector_info(det)
    assert info.x.dtype == np.float32
    assert info.x.tolist() == [1000.0, 4.0]
    assert "stored as integers" in caplog.text
    assert "truncated" in caplog.text


def test_detector_info_warns_on_whole_millimetre_floats(caplog: pytest.LogCaptureFixture) -> None:
    det = FakeDetector(np.array([[1000.0, 2.0, -3.0], [4.0, 5.0, 6.0]], np.float32), np.array([0, 0]))
    with caplog.at_level(logging.WARNING, logger="charon.engine.chroma_convert"):
        detector_info(det)
    assert "all whole millimetres" in caplog.text


def test_looks_truncated() -> None:
    assert looks_truncated(np.array([[1, 2, 3]], np.int32))
    assert looks_truncated(np.array([[1.0, 2.0, 3.0]]))
    assert not looks_truncated(np.array([[1.0, 2.0, 3.01]]))
    assert not looks_truncated(np.zeros((0, 3)))


def test_detector_info_rejects_bad_detectors() -> None:
    with pytest.raises(DetectorError, match="positions of shape"):
        detector_info(FakeDetector(np.zeros((3, 3)), np.zeros(2, np.int32)))
    with pytest.raises(DetectorError, match="32-bit"):
        detector_info(FakeDetector(np.zeros((1, 3)), np.array([2**40])))
    with pytest.raises(DetectorError, match="not a Chroma detector"):
        detector_info(object())
    empty = detector_info(FakeDetector([], []))
    assert len(empty) == 0


# ------------------------------------------------------------------------- simulate() and batching


def test_simulate_runs_groups_in_single_passes_and_answers_in_order() -> None:
    rng = np.random.default_rng(8)
    sizes = [300, 0, 250, 400, 100, 1200, 50]
    batch = [make_photons(100 + i, n, rng) for i, n in enumerate(sizes)]
    sim = FakeSimulation(n_channels=40, rng=rng)
    engine = simulator(sim, 40, budget=1000)
    assert isinstance(engine, Simulator)
    assert engine.name == "chroma"
    assert len(engine.detector_info()) == 40
    out = engine.simulate(batch)
    assert len(out) == len(batch)
    # Non-empty requests grouped under the budget (the 1200-photon one alone), one pass per group.
    assert sim.passes == [950, 100, 1200, 50]
    assert [c["n_inputs"] for c in sim.calls] == [3, 1, 1, 1]
    for call in sim.calls:
        assert call["keep_photons_beg"] is False
        assert call["keep_photons_end"] is False
        assert call["keep_hits"] is False
        assert call["keep_flat_hits"] is True
        assert call["run_daq"] is False
        assert call["max_steps"] == 77
    assert [c["photons_per_batch"] for c in sim.calls] == [950, 100, 1200, 50]
    assert len(out[1]) == 0
    for p, hits in zip(batch, out, strict=True):
        # Every hit belongs to this request: its times are this request's photon times + 10 ns.
        assert set((hits.time - np.float32(10.0)).round(3).tolist()) <= set(p.time.round(3).tolist())
        expected = int(np.count_nonzero(np.floor(p.time) % 2 == 0))
        assert len(hits) == expected
        assert np.all(hits.flags & SURFACE_DETECT)


def test_simulate_drops_out_of_range_channels_and_skips_empty_batches() -> None:
    rng = np.random.default_rng(9)
    batch = [make_photons(1, 500, rng)]
    sim = FakeSimulation(n_channels=10, rng=rng, bad_channel_every=5)
    (hits,) = simulator(sim, 10, budget=10_000).simulate(batch)
    assert np.all(hits.channel < 10)
    expected = int(np.count_nonzero(np.floor(batch[0].time) % 2 == 0))
    assert len(hits) == expected - len(range(0, expected, 5))  # every 5th hit had a bad channel
    sim2 = FakeSimulation(n_channels=10, rng=rng)
    out = simulator(sim2, 10, budget=10).simulate([make_photons(2, 0, rng), make_photons(3, 0, rng)])
    assert [len(h) for h in out] == [0, 0]
    assert sim2.calls == []


def test_simulate_marks_non_finite_photons_so_chroma_skips_them() -> None:
    rng = np.random.default_rng(10)
    p = make_photons(4, 100, rng)
    x = p.x.copy()
    x[:50] = np.nan
    bad = Photons(p.event_id, x, *(getattr(p, f) for f in tokens.PHOTON_FIELDS[1:]))
    sim = FakeSimulation(n_channels=10, rng=rng)
    (hits,) = simulator(sim, 10, budget=10_000).simulate([bad])
    expected = int(np.count_nonzero(np.floor(p.time[50:]) % 2 == 0))
    assert len(hits) == expected


# ------------------------------------------------------------------------------ settings and import


def test_detector_source_validation(tmp_path: Path) -> None:
    pkl = tmp_path / "det.pkl"
    pkl.write_bytes(b"x")
    gdml = tmp_path / "det.gdml"
    gdml.write_text("<gdml/>")
    ratdb = tmp_path / "ratdb.json"
    ratdb.write_text("{}")
    assert DetectorSource.from_settings(EngineSettings(backend="chroma", detector=pkl)) == DetectorSource(pkl, None)
    src = DetectorSource.from_settings(EngineSettings(backend="chroma", detector=gdml, ratdb=ratdb))
    assert src.is_gdml
    assert set(src.digest()) == {"detector", "ratdb"}
    cases = [
        (EngineSettings(backend="chroma"), "engine.detector .* None: the chroma backend needs a pickled"),
        (EngineSettings(backend="chroma", detector=gdml), "engine.ratdb .* = None: the GDML detector"),
        (EngineSettings(backend="chroma", detector=pkl, ratdb=ratdb), "only used with a GDML detector"),
        (EngineSettings(backend="chroma", detector=tmp_path / "missing.pkl"), "missing.pkl': no such file"),
        (EngineSettings(backend="chroma", detector=gdml, ratdb=tmp_path / "no.json"), "no.json': no such file"),
    ]
    for settings, message in cases:
        with pytest.raises(ConfigError, match=message) as info:
            DetectorSource.from_settings(settings)
        assert "\n" not in str(info.value)


def test_fold_seed_fits_32_bits() -> None:
    assert fold_seed(0) == 0
    assert fold_seed(12345) == 12345
    assert 0 <= fold_seed(2**63 - 1) < 2**32
    assert fold_seed(2**40 + 1) != fold_seed(1)


_HIDE_CHROMA = "import sys; sys.modules['chroma'] = None; sys.modules['pycuda'] = None; "


def test_from_settings_without_chroma_raises_one_config_line(tmp_path: Path) -> None:
    script = _HIDE_CHROMA + textwrap.dedent("""
        from charon.engine.chroma import ChromaSimulator
        from charon.errors import ConfigError
        from charon.settings import EngineSettings
        try:
            ChromaSimulator.from_settings(EngineSettings(backend="chroma"))
        except ConfigError as exc:
            print(exc)
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          check=True)
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(INSTALL_HINT + " (import failed: ")


def test_serve_with_chroma_backend_exits_2_with_one_line() -> None:
    """``charon serve --backend chroma`` on a host without Chroma: exit status 2, one stderr line."""
    script = _HIDE_CHROMA + "import runpy; sys.argv = ['charon'] + sys.argv[1:]; runpy.run_module('charon', run_name='__main__')"
    done = subprocess.run(
        [sys.executable, "-c", script, "serve", "--backend", "chroma", "--bind", "tcp://127.0.0.1:*",
         "--metrics-addr", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"charon serve: error: {INSTALL_HINT}")


def test_load_detector_rejects_pickles_that_are_not_chroma_detectors(tmp_path: Path) -> None:
    from charon.engine.chroma import load_detector

    not_a_detector = tmp_path / "dict.pkl"
    not_a_detector.write_bytes(pickle.dumps({"channel_index_to_position": []}))
    with pytest.raises(DetectorError, match=r"holds a dict, not a chroma\.detector\.Detector"):
        load_detector(DetectorSource(not_a_detector, None))
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"\x00not a pickle")
    with pytest.raises(DetectorError, match=r"cannot unpickle a Chroma detector from .*garbage\.pkl"):
        load_detector(DetectorSource(garbage, None))


def test_pickle_builder_cli_without_chroma_exits_2_with_one_line(tmp_path: Path) -> None:
    gdml = tmp_path / "det.gdml"
    gdml.write_text("<gdml/>")
    ratdb = tmp_path / "ratdb.json"
    ratdb.write_text("{}")
    script = _HIDE_CHROMA + "import runpy; runpy.run_module('charon.engine.chroma', run_name='__main__')"
    done = subprocess.run([sys.executable, "-c", script, str(gdml), str(ratdb), str(tmp_path / "out.pkl")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "GDML detectors need the pennneutrinos/chroma fork's chroma.rat and gmsh" in lines[0]
    assert not (tmp_path / "out.pkl").exists()
