"""Warp engine behaviour: reproducibility, flags, chunking, devices, agreement with other engines.

Statistical comparisons use 4 sigma. Kernels come from Warp's default on-disk cache (shared by
every test process: the cache is keyed by the module's content hash, so concurrent runs cannot
disturb each other); one test starts fresh processes on a private cache to prove the
``kernel_cache_dir`` setting works.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest

from charon.engine.base import Hits, Photons, Simulator
from charon.engine.detector import (
    cylinder_detector,
    load_detector,
    reference_detector,
    save_detector,
    sphere_detector,
    water,
)
from charon.engine.warp_engine import WarpSimulator, cuda_available, event_seed, mesh_from_detector
from charon.errors import ConfigError
from charon.protocol.tokens import TERMINAL_FLAGS, Flag
from tests.warp_support import chi2_limit, chi2_two_sample, point_source

SIGMAS = 4.0
REF = reference_detector()


@pytest.fixture(scope="module")
def analytic() -> WarpSimulator:
    return WarpSimulator(REF, seed=3, device="cpu", threads=2)


@pytest.fixture(scope="module")
def mesh() -> WarpSimulator:
    return WarpSimulator(REF, seed=3, device="cpu", threads=2, geometry="mesh")


def same_hits(a: Hits, b: Hits) -> bool:
    return all(np.array_equal(getattr(a, f.name), getattr(b, f.name)) for f in fields(Hits))


def test_is_a_simulator(analytic: WarpSimulator) -> None:
    assert isinstance(analytic, Simulator)
    assert analytic.name == "builtin"
    assert analytic.fingerprint == REF.fingerprint
    info = analytic.detector_info()
    assert len(info) == REF.n_channels
    assert analytic.device == "cpu"
    assert analytic.geometry == "analytic"
    assert analytic.simulate([]) == []
    empty = analytic.simulate([point_source(0)])
    assert [len(h) for h in empty] == [0]


def test_threads_give_bit_identical_hits() -> None:
    src = point_source(250_000, event_id=9)
    one = WarpSimulator(REF, seed=5, device="cpu", threads=1).simulate([src])[0]
    two_sim = WarpSimulator(REF, seed=5, device="cpu", threads=2)
    assert two_sim._pool is not None  # the launch really is split
    two = two_sim.simulate([src])[0]
    assert len(one) > 20_000
    assert same_hits(one, two)
    again = two_sim.simulate([src])[0]
    assert same_hits(two, again)  # a re-run (e.g. after a worker failure) gives the same hits
    two_sim.close()


def test_chunking_does_not_change_hits(analytic: WarpSimulator) -> None:
    src = point_source(120_000, event_id=4)
    whole = analytic.simulate([src])[0]
    chunked_sim = WarpSimulator(REF, seed=3, device="cpu", threads=2, chunk_photons=17_011)
    parts = chunked_sim.simulate([src])[0]
    assert same_hits(whole, parts)
    assert chunked_sim._out_size == 17_011  # memory is bounded by the chunk, not the request


def test_seed_and_event_id_select_the_streams(analytic: WarpSimulator) -> None:
    a = analytic.simulate([point_source(50_000, event_id=1)])[0]
    b = analytic.simulate([point_source(50_000, event_id=2)])[0]
    other_seed = WarpSimulator(REF, seed=4, device="cpu", threads=1).simulate([point_source(50_000, event_id=1)])[0]
    assert not same_hits(a, b)
    assert not same_hits(a, other_seed)
    assert event_seed(3, 1) != event_seed(3, 2) != event_seed(4, 2)
    # a batch is the same as its events one at a time
    batch = analytic.simulate([point_source(50_000, event_id=1), point_source(50_000, event_id=2)])
    assert same_hits(batch[0], a)
    assert same_hits(batch[1], b)


def test_terminal_flags_nan_and_origin_bits(analytic: WarpSimulator) -> None:
    terminal = [Flag.NO_HIT, Flag.BULK_ABSORB, Flag.SURFACE_DETECT, Flag.SURFACE_ABSORB, Flag.NAN_ABORT]
    n_each = 2000
    base = point_source(n_each * (len(terminal) + 3), seed=8)
    flags = np.zeros(len(base), np.uint32)
    for i, f in enumerate(terminal):
        flags[i * n_each:(i + 1) * n_each] = int(f) | int(Flag.CHERENKOV)
    k = len(terminal) * n_each
    flags[k:k + n_each] = int(Flag.CHERENKOV)
    flags[k + n_each:k + 2 * n_each] = int(Flag.SCINTILLATION)
    flags[k + 2 * n_each:] = int(Flag.CHERENKOV)
    x = base.x.copy()
    x[k + 2 * n_each] = np.nan
    dz = base.dz.copy()
    dx, dy = base.dx.copy(), base.dy.copy()
    dx[k + 2 * n_each + 1] = dy[k + 2 * n_each + 1] = dz[k + 2 * n_each + 1] = 0.0  # no direction
    t = base.time.copy()
    t[k + 2 * n_each + 2] = np.inf
    ph = replace(base, x=x, dx=dx, dy=dy, dz=dz, time=t, flags=flags)
    st = analytic.propagate(ph)
    assert np.array_equal(st.flags[:k], flags[:k])  # untouched
    assert np.all(st.steps[:k] == 0)
    assert np.all(st.channel[:k] == -1)
    bad = slice(k + 2 * n_each, k + 2 * n_each + 3)
    assert np.all(st.flags[bad] & Flag.NAN_ABORT)
    assert np.all(st.channel[bad] == -1)
    hits = analytic.simulate([ph])[0]
    assert len(hits) > 0
    assert np.all(hits.flags & (Flag.CHERENKOV | Flag.SCINTILLATION))
    assert not np.any(hits.flags & Flag.NAN_ABORT)
    n_ch = np.count_nonzero(hits.flags & Flag.CHERENKOV)
    n_sc = np.count_nonzero(hits.flags & Flag.SCINTILLATION)
    assert n_ch > 0
    assert n_sc > 0
    assert n_ch + n_sc == len(hits)
    # every live photon ends with a terminal flag (out-of-steps ones get NO_HIT)
    assert np.all(st.flags[k:] & TERMINAL_FLAGS)


def test_photons_outside_the_vessel_are_not_traced(analytic: WarpSimulator) -> None:
    ph = point_source(1000, centre=(0.0, 0.0, 7000.0))
    st = analytic.propagate(ph)
    assert np.all(st.flags & Flag.NO_HIT)
    assert len(analytic.simulate([ph])[0]) == 0


def _compare(a: list[Hits], b: list[Hits], n_channels: int) -> None:
    ha, hb = Hits.concatenate(a), Hits.concatenate(b)
    na, nb = len(ha), len(hb)
    assert abs(na - nb) <= SIGMAS * math.sqrt(na + nb), f"hit totals {na} vs {nb}"
    chi2, ndf = chi2_two_sample(np.bincount(ha.channel, minlength=n_channels),
                                np.bincount(hb.channel, minlength=n_channels))
    assert chi2 < chi2_limit(ndf), f"per-PMT chi2/ndf = {chi2 / ndf:.3f} ({ndf} dof)"
    ta, tb = ha.time.astype(np.float64), hb.time.astype(np.float64)
    sigma = math.sqrt(ta.var() / na + tb.var() / nb)
    assert abs(ta.mean() - tb.mean()) <= SIGMAS * sigma, f"mean times {ta.mean():.4f} vs {tb.mean():.4f}"


def test_analytic_and_mesh_forms_agree(analytic: WarpSimulator, mesh: WarpSimulator) -> None:
    assert mesh.geometry == "mesh"
    geo = mesh.scene
    assert geo is not None
    assert geo.n_channels == REF.n_channels
    # several events so the two forms see independent photon sets too
    batch = [point_source(150_000, event_id=e, seed=20 + e) for e in range(3)]
    _compare(analytic.simulate(batch), mesh.simulate(batch), REF.n_channels)


def test_cylinder_analytic_and_mesh_agree() -> None:
    det = cylinder_detector(radius=2000.0, half_height=2500.0, pmt_radius=150.0, barrel_rings=10,
                            barrel_columns=30, cap_pitch=450.0, qe=0.5,
                            inner=water(absorption_length_mm=20_000.0, scattering_length_mm=10_000.0))
    a = WarpSimulator(det, seed=2, device="cpu", threads=2, geometry="analytic")
    m = WarpSimulator(det, seed=2, device="cpu", threads=2, geometry="mesh")
    batch = [point_source(200_000, event_id=e, seed=80 + e, centre=(300.0, -200.0, 400.0)) for e in range(2)]
    ha, hm = a.simulate(batch), m.simulate(batch)
    assert sum(len(h) for h in ha) > 20_000
    _compare(ha, hm, det.n_channels)


@pytest.mark.parametrize("geometry", ["analytic", "mesh"])
def test_photocathode_edges_are_exact(geometry: str) -> None:
    """Aimed 1 % inside every photocathode rim: that channel; 1 % outside: no hit (8 azimuths each)."""
    det = sphere_detector(qe=1.0, inner=water(absorption_length_mm=math.inf, scattering_length_mm=math.inf))
    sim = WarpSimulator(det, seed=1, device="cpu", threads=2, geometry=geometry)  # type: ignore[arg-type]
    u = det.pmts.positions / det.vessel.radius
    helper = np.where(np.abs(u[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])
    e1 = np.cross(helper, u)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(u, e1)
    alpha = math.asin(det.pmts.radius / det.vessel.radius)
    # the mesh rim is a 12-gon: stay clear of its corners and edge midpoints by a wider margin
    inner, outer = (0.99, 1.01) if geometry == "analytic" else (0.95, 1.05)
    for scale, expect_hit in ((inner, True), (outer, False)):
        dirs = []
        for phi in np.linspace(0.0, 2.0 * math.pi, 8, endpoint=False) + 0.1:
            a = scale * alpha
            dirs.append(math.cos(a) * u + math.sin(a) * (math.cos(phi) * e1 + math.sin(phi) * e2))
        d = np.concatenate(dirs)
        hits = sim.simulate([Photons.from_arrays(0, np.zeros_like(d), d, np.zeros_like(d), 420.0)])[0]
        if expect_hit:
            assert np.array_equal(np.sort(hits.channel), np.sort(np.tile(np.arange(len(u)), 8)))
        else:
            assert len(hits) == 0


def test_detector_file_with_mesh_round_trips(tmp_path: Path) -> None:
    det = replace(REF, mesh=mesh_from_detector(REF))
    assert det.fingerprint != REF.fingerprint
    path = tmp_path / "ref-mesh.npz"
    save_detector(det, path)
    loaded = load_detector(path)
    assert loaded.fingerprint == det.fingerprint
    sim = WarpSimulator(loaded, seed=1, device="cpu", threads=1)
    assert sim.geometry == "mesh"  # auto picks the mesh when the detector carries one


def test_warp_agrees_with_numpy_reference(analytic: WarpSimulator) -> None:
    from charon.engine.numpy_engine import NumpySimulator

    ref = NumpySimulator(REF, seed=3, max_steps=1000)
    batch = [point_source(100_000, event_id=e, seed=40 + e) for e in range(2)]
    _compare(analytic.simulate(batch), ref.simulate(batch), REF.n_channels)


def test_device_selection() -> None:
    with pytest.raises(ConfigError, match=r"engine\.threads"):
        WarpSimulator(REF, threads=-1)
    with pytest.raises(ConfigError, match="geometry"):
        WarpSimulator(REF, geometry="voxels")  # type: ignore[arg-type]
    if cuda_available():
        pytest.skip("this machine has CUDA: 'cuda' is valid here")
    with pytest.raises(ConfigError, match="no CUDA device"):
        WarpSimulator(REF, device="cuda")
    assert WarpSimulator(REF, device="auto", threads=1).device == "cpu"


def test_kernel_cache_dir_setting_is_used(tmp_path: Path) -> None:
    """A fresh process compiles into the configured directory; the next start loads from it."""
    cache = tmp_path / "kernels"
    code = ("import sys, time; from pathlib import Path; t = time.perf_counter();"
            "from charon.engine.detector import reference_detector;"
            "from charon.engine.warp_engine import WarpSimulator;"
            "WarpSimulator(reference_detector(), device='cpu', threads=1, kernel_cache_dir=Path(sys.argv[1]));"
            "print(round(time.perf_counter() - t, 3))")
    env = dict(os.environ, CI="")
    runs = [subprocess.run([sys.executable, "-c", code, str(cache)], capture_output=True, text=True,
                           timeout=100, env=env, check=True) for _ in range(2)]
    built = list(cache.rglob("*.o")) + list(cache.rglob("*.so"))
    assert built, f"nothing compiled into {cache}"
    first, second = (float(r.stdout.strip().splitlines()[-1]) for r in runs)
    assert second < first  # the second start skips compilation


def test_kernels_compile_for_cuda_without_a_gpu(tmp_path: Path) -> None:
    """The CUDA side of the kernel module builds (NVRTC, bundled with Warp) for Ampere and Hopper."""
    import warp as wp

    from charon.engine import warp_kernels

    WarpSimulator(REF, device="cpu", threads=1)  # initialises Warp
    paths = wp.compile_aot_module(warp_kernels, arch=[80, 90], module_dir=tmp_path, use_ptx=True)
    assert len(paths) == 2
    for p in paths:
        text = Path(p).read_text()
        assert ".entry" in text
        assert "propagate" in text


@pytest.mark.gpu
def test_cuda_matches_cpu_statistically() -> None:
    if not cuda_available():
        pytest.skip("no CUDA device visible to Warp (needs an NVIDIA GPU and driver)")
    gpu = WarpSimulator(REF, seed=3, device="cuda")
    cpu = WarpSimulator(REF, seed=3, device="cpu", threads=2)
    assert gpu.device.startswith("cuda")
    batch = [point_source(200_000, event_id=e, seed=60 + e) for e in range(2)]
    g = gpu.simulate(batch)
    _compare(g, cpu.simulate(batch), REF.n_channels)
    assert all(same_hits(x, y) for x, y in zip(g, gpu.simulate(batch), strict=True))


def test_the_builtin_backend_gets_the_cuda_device_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """engine.cuda_device reaches the builtin engine (it was dropped: cuda:0 was hard-coded)."""
    from charon.engine import registry, warp_engine
    from charon.settings import EngineSettings

    seen: dict[str, object] = {}

    class Recorder:
        def __init__(self, _detector: object, **kw: object) -> None:
            seen.update(kw)

    monkeypatch.setattr(warp_engine, "WarpSimulator", Recorder)
    registry.make_simulator(EngineSettings(backend="builtin", cuda_device=3))
    assert seen["cuda_device"] == 3


def test_cuda_device_selects_the_device_and_out_of_range_is_one_line() -> None:
    class TwoGPUs:
        @staticmethod
        def get_cuda_device_count() -> int:
            return 2

    sim = WarpSimulator.__new__(WarpSimulator)
    sim._wp = TwoGPUs()
    assert sim._pick_device("cuda", 1) == "cuda:1"
    assert sim._pick_device("auto", 0) == "cuda:0"
    assert sim._pick_device("cpu", 1) == "cpu"
    with pytest.raises(ConfigError, match=r"engine.cuda_device .* = 2: this host has 2 CUDA device\(s\), 0..1"):
        sim._pick_device("cuda", 2)
