"""The chroma backend end to end with real Chroma on a CUDA GPU, and Chroma vs charon's own engine.

One detector is built twice: as a charon detector file (.npz) and as a pickled
``chroma.detector.Detector`` of the same shape: a water cylinder with a black wall and flat
photocathode disks on both end caps (flat disks are exact in both geometries). Photons start
isotropically at the centre, so each PMT's hit count and mean hit time have a clear expectation
that both engines must meet within statistics.

Skipped, with the reason, where Chroma, PyCUDA or a GPU is missing.
"""

from __future__ import annotations

import importlib.util
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from charon.client import Client
from charon.engine.base import Hits, Photons
from charon.engine.detector import (
    Detector,
    Material,
    PMTArray,
    Surface,
    Vessel,
    WavelengthTable,
    save_detector,
)
from charon.settings import EngineSettings
from tests import procs

pytestmark = [pytest.mark.gpu, pytest.mark.chroma]

_REASON = "needs Chroma (pennneutrinos/chroma fork) with PyCUDA on a CUDA host; see docs/chroma.md"
pytest.importorskip("chroma.sim", reason=f"{_REASON} (chroma.sim not importable)", exc_type=ImportError)
cuda = pytest.importorskip("pycuda.driver", reason=f"{_REASON} (pycuda not importable)", exc_type=ImportError)


def _gpu_count() -> int:
    try:
        cuda.init()
        return int(cuda.Device.count())
    except Exception:  # noqa: BLE001 - any driver failure means: no usable GPU here
        return 0


if _gpu_count() == 0:
    pytest.skip(f"{_REASON} (no CUDA device visible)", allow_module_level=True)

RADIUS = 1000.0        # mm, cylinder radius
HALF_HEIGHT = 1000.0   # mm
PMT_RADIUS = 150.0     # mm
QE = 0.5
N_WATER = 1.33
ABSORPTION = 5000.0    # mm
RING = 400.0           # mm, off-axis PMT distance from the cap centre
DISK_INSET = 0.05      # mm, Chroma disks sit this far inside the cap so the wall never hides them
N_PHOTONS = 400_000
C = 299.792458         # mm/ns


def pmt_positions() -> np.ndarray:
    ring = [(RING * math.cos(a), RING * math.sin(a)) for a in np.arange(6) * math.pi / 3]
    xy = [(0.0, 0.0), *ring]
    return np.array([(x, y, s * HALF_HEIGHT) for s in (1.0, -1.0) for x, y in xy], dtype=np.float64)


def charon_detector() -> Detector:
    water = Material("water", WavelengthTable.flat(N_WATER), WavelengthTable.flat(ABSORPTION),
                     WavelengthTable.flat(math.inf))
    vacuum = Material("vacuum", WavelengthTable.flat(1.0), WavelengthTable.flat(math.inf),
                      WavelengthTable.flat(math.inf))
    black = Surface("black", absorb=WavelengthTable.flat(1.0))
    cathode = Surface("photocathode", detect=WavelengthTable.flat(QE), absorb=WavelengthTable.flat(1.0 - QE))
    pos = pmt_positions()
    normals = np.zeros_like(pos)
    normals[:, 2] = -np.sign(pos[:, 2])
    pmts = PMTArray(positions=pos, normals=normals, radius=PMT_RADIUS, surface=cathode.name,
                    channel_type=np.arange(len(pos), dtype=np.int32), shape="disk")
    return Detector(name="chroma-twin", materials={"water": water, "vacuum": vacuum},
                    surfaces={"black": black, "photocathode": cathode},
                    vessel=Vessel("cylinder", RADIUS, "water", "vacuum", surface="black", half_height=HALF_HEIGHT),
                    pmts=pmts)


def chroma_detector() -> Any:
    """The same detector in Chroma: a z-axis cylinder (black, water inside) and 14 photocathode disks."""
    from chroma import make
    from chroma.detector import Detector as ChromaDetector
    from chroma.geometry import Material as ChromaMaterial
    from chroma.geometry import Mesh, Solid
    from chroma.geometry import Surface as ChromaSurface

    water = ChromaMaterial("water")
    water.set("refractive_index", N_WATER)
    water.set("absorption_length", ABSORPTION)
    water.set("scattering_length", 1e12)
    vacuum = ChromaMaterial("vacuum")
    vacuum.set("refractive_index", 1.0)
    vacuum.set("absorption_length", 1e12)
    vacuum.set("scattering_length", 1e12)
    black = ChromaSurface("black")
    black.set("absorb", 1.0)
    cathode = ChromaSurface("photocathode")
    cathode.set("detect", QE)
    cathode.set("absorb", 1.0 - QE)

    det = ChromaDetector(water)
    # make.cylinder extrudes around y; rotate y -> z. 512 sides keep the polygon within 0.02 mm.
    y_to_z = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    det.add_solid(Solid(make.cylinder(RADIUS, 2 * HALF_HEIGHT, nsteps=512), water, vacuum, black),
                  rotation=y_to_z, displacement=np.zeros(3))
    n = 256
    angles = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    for i, p in enumerate(pmt_positions()):
        inset = -DISK_INSET if p[2] > 0 else DISK_INSET
        # The circle's area-preserving polygon: same photocathode area as the exact disk.
        r = PMT_RADIUS * math.sqrt((2 * math.pi / n) / math.sin(2 * math.pi / n))
        rim = np.column_stack([r * np.cos(angles), r * np.sin(angles), np.full(n, inset)])
        vertices = np.vstack([[0.0, 0.0, inset], rim])
        triangles = np.column_stack([np.zeros(n, int), 1 + np.arange(n), 1 + (np.arange(n) + 1) % n])
        det.add_pmt(Solid(Mesh(vertices, triangles), water, water, cathode), displacement=p, channel_type=i)
    return det


@pytest.fixture(scope="module")
def detector_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("chroma-twin")
    npz = root / "twin.npz"
    save_detector(charon_detector(), npz)
    pkl = root / "twin.pkl"
    with pkl.open("wb") as f:
        pickle.dump(chroma_detector(), f)
    return npz, pkl


def isotropic_photons(event_id: int, n: int, seed: int, t0: float = 0.0) -> Photons:
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    helper = np.where(np.abs(d[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    pol = np.cross(d, helper)
    pol /= np.linalg.norm(pol, axis=1, keepdims=True)
    return Photons.from_arrays(event_id, np.zeros((n, 3)), d, pol, 420.0, t0, 0x400)


def per_pmt(hits: Hits, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ch = hits.channel.astype(np.int64)
    counts = np.bincount(ch, minlength=p)
    t = hits.time.astype(np.float64)
    mean_t = np.bincount(ch, weights=t, minlength=p) / np.maximum(counts, 1)
    var_t = np.bincount(ch, weights=t * t, minlength=p) / np.maximum(counts, 1) - mean_t**2
    return counts, mean_t, var_t


def expected_counts() -> np.ndarray:
    """Analytic hits per PMT: N * QE * (1/4pi) * integral over the disk of exp(-L/lambda) cos(theta)/L^2."""
    out = []
    k = 400  # midpoint rule in polar coordinates over the disk
    rr = (np.arange(k) + 0.5) / k * PMT_RADIUS
    aa = (np.arange(k) + 0.5) / k * 2 * math.pi
    r, a = np.meshgrid(rr, aa, indexing="ij")
    area = r * (PMT_RADIUS / k) * (2 * math.pi / k)
    for p in pmt_positions():
        x, y, z = p[0] + r * np.cos(a), p[1] + r * np.sin(a), abs(p[2])
        dist = np.sqrt(x * x + y * y + z * z)
        out.append(float(np.sum(area * (z / dist) / dist**2 * np.exp(-dist / ABSORPTION))) / (4 * math.pi))
    return N_PHOTONS * QE * np.array(out)


@pytest.fixture
def client(context: zmq.Context[Any]) -> Any:
    def make(endpoint: str) -> Client:
        return Client(endpoint, timeout_s=300.0, retries=0, context=context)
    return make


def _builtin_backend() -> str:
    return "builtin" if importlib.util.find_spec("warp") is not None else "numpy"


@pytest.mark.slow
@pytest.mark.timeout(900)  # first start compiles Chroma's kernels and builds the BVH
def test_chroma_serve_detector_info_and_agreement_with_builtin(detector_files: tuple[Path, Path],
                                                               client: Any) -> None:
    npz, pkl = detector_files
    positions = pmt_positions()
    p = len(positions)
    photons = isotropic_photons(11, N_PHOTONS, seed=5)
    results: dict[str, Hits] = {}
    for backend, path in (("chroma", pkl), (_builtin_backend(), npz)):
        with procs.running("serve", "--bind", "tcp://127.0.0.1:*", "--metrics-addr", "127.0.0.1:0",
                           "--backend", backend, "--detector", str(path), "--seed", "3",
                           timeout=600) as server, client(server.endpoint) as c:
            info = c.detector_info()
            assert len(info) == p
            np.testing.assert_allclose(info.positions(), positions, atol=1e-3)
            np.testing.assert_array_equal(info.channel_type, np.arange(p))
            results[backend] = c.simulate(photons)

    expected = expected_counts()
    per_engine = {name: per_pmt(h, p) for name, h in results.items()}
    for name, (counts, _, _) in per_engine.items():
        hits = results[name]
        assert np.all(hits.channel < p)
        assert np.all(hits.flags & 0x4), f"{name}: every hit carries SURFACE_DETECT"
        assert np.all(hits.flags & 0x400), f"{name}: the CHERENKOV origin bit survives"
        # Each engine against the analytic expectation (Poisson, 4 sigma, plus 1 % for the meshes).
        z = (counts - expected) / np.sqrt(expected)
        assert np.all(np.abs(z) < 4.0 + 0.01 * np.sqrt(expected)), f"{name}: counts {counts} vs {expected.round()}"
    (c_counts, c_mean, c_var), (b_counts, b_mean, b_var) = per_engine.values()
    # Chroma vs charon per PMT: difference of two Poisson counts within 4 sigma.
    z = (c_counts - b_counts) / np.sqrt(np.maximum(c_counts + b_counts, 1))
    assert np.all(np.abs(z) < 4.0), f"per-PMT counts disagree: chroma {c_counts}, charon {b_counts}"
    # Mean hit time per PMT within 4 standard errors (plus the disks' 0.05 mm inset, 0.0002 ns).
    se = np.sqrt(c_var / np.maximum(c_counts, 1) + b_var / np.maximum(b_counts, 1))
    assert np.all(np.abs(c_mean - b_mean) < 4.0 * se + 1e-3), f"mean times: chroma {c_mean}, charon {b_mean}"
    # And both against geometry: the on-axis PMT's hits arrive after at least HALF_HEIGHT * n / c.
    assert c_mean[0] > HALF_HEIGHT * N_WATER / C


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_batched_pass_splits_hits_back_to_their_requests(detector_files: tuple[Path, Path]) -> None:
    """Several requests in one Chroma pass: every hit returns to the request whose photons made it."""
    from charon.engine.chroma import ChromaSimulator

    _, pkl = detector_files
    sim = ChromaSimulator.from_settings(EngineSettings(backend="chroma", detector=pkl, seed=9,
                                                       batch_max_photons=10_000_000))
    try:
        # Request k starts its photons at t = 1000 k ns, so a hit's time names its request.
        sizes = [50_000, 0, 80_000, 20_000, 60_000]
        batch = [isotropic_photons(100 + k, n, seed=k, t0=1000.0 * k) for k, n in enumerate(sizes)]
        out = sim.simulate(batch)
        assert len(out) == len(batch)
        assert len(out[1]) == 0
        expected_per_photon = expected_counts().sum() / N_PHOTONS
        for k, (n, hits) in enumerate(zip(sizes, out, strict=True)):
            assert np.all((hits.time >= 1000.0 * k) & (hits.time < 1000.0 * k + 100.0)), k
            mu = n * expected_per_photon
            assert abs(len(hits) - mu) < 4.0 * math.sqrt(mu) + 0.01 * mu + 1, (k, len(hits), mu)
        # The same requests with a budget that forces one pass each give statistically equal totals.
        sim.batch_max_photons = 1
        single = sim.simulate(batch)
        a = sum(len(h) for h in out)
        b = sum(len(h) for h in single)
        assert abs(a - b) < 4.0 * math.sqrt(a + b)
    finally:
        sim.close()
