"""charon's engine against Geant4 on the very same Geant4-written detector file.

Geant4 (geant4-pybind, tests/g4) builds each detector, writes it as GDML plus a RATDB PMTINFO
file, and runs photons through the file it wrote; charon imports the same two files and runs an
independent sample of the same photon source. Agreement, with the tolerances of the GDML-import
issue:

* detected fraction within 3 sigma (both binomial errors) + 1.5 % (relative);
* per-PMT occupancy: two-sample chi^2 / ndf < 1.5;
* hit-time quantiles q10, q50, q90 within 0.3 ns (two Geant4 runs of 1e6 photons with different
  seeds differ by about 0.1 ns).

Geometries: a water cylinder with PMT bulbs built as union solids behind border surfaces, an
acrylic vessel (refraction and Fresnel at both of its faces), wavelength-dependent optics (index,
absorption, Rayleigh, photocathode efficiency) with a spread of wavelengths, and a polished metal
mirror next to a ground (diffuse) reflector. Every run is seeded: the test is deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from charon.engine.base import Hits, Photons
from charon.engine.warp_engine import WarpSimulator
from charon.importer import ImportOptions, import_gdml
from tests.conftest import skip_or_fail
from tests.g4 import api, build, stats
from tests.g4.offline import geant4_available

N_PHOTONS = 200_000
FRACTION_REL_TOL = 0.015
CHI2_PER_NDF_MAX = 1.5
QUANTILE_TOL_NS = 0.3


@dataclass(frozen=True)
class Case:
    geometry: str
    source: tuple[float, float, float]
    params: tuple[tuple[str, Any], ...] = ()
    wavelengths: tuple[float, float] | None = None  # uniform band (nm), else 420 nm
    lower_hemisphere: bool = False
    photons: int = N_PHOTONS


CASES = {
    "water_cylinder": Case("water_cylinder", (150.0, -250.0, 300.0)),
    "acrylic_vessel": Case("acrylic_vessel", (200.0, 100.0, -300.0)),
    "dispersive": Case("dispersive", (-100.0, 200.0, 0.0), wavelengths=(320.0, 600.0)),
    # Only reflected light reaches its PMTs (detected fraction about 0.2 %): more photons and a 7 x 7
    # grid, so the chi^2 has enough counts per PMT and enough degrees of freedom.
    "reflector": Case("reflector", (0.0, 0.0, 0.0), (("pmt_grid", 7), ("pmt_pitch_mm", 250.0)),
                      lower_hemisphere=True, photons=600_000),
}


def _photons(case: Case, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    d = api.isotropic(n, rng)
    if case.lower_hemisphere:
        d[:, 2] = -np.abs(d[:, 2])
    wl: float | np.ndarray = 420.0
    if case.wavelengths is not None:
        wl = rng.uniform(*case.wavelengths, size=n)
    return api.photon_batch(np.tile(case.source, (n, 1)), d, wavelength_nm=wl, time_ns=0.0, rng=rng)


@dataclass
class Compared:
    charon: Hits
    geant4: api.Hits
    n: int
    n_channels: int


@pytest.fixture(scope="module", autouse=True)
def _geant4() -> None:
    if not geant4_available():
        skip_or_fail("geant4-pybind is not importable offline (pip install 'charon[dev]')")


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Compared]:
    out: dict[str, Compared] = {}
    for name, case in CASES.items():
        det = build.build(case.geometry, tmp_path_factory.mktemp(name), **dict(case.params))
        # Independent samples of the same source: with shared photons the geometric part of every
        # photon's fate is common to both and the chi^2 comes out far below its ndf (toothless).
        g4 = api.run(det.gdml, det.ratdb, _photons(case, case.photons, seed=len(name)), seed=5, processes=2,
                     timeout_s=600)
        photons = _photons(case, case.photons, seed=1000 + len(name))
        imported = import_gdml(det.gdml, ImportOptions(ratdb=det.ratdb)).detector
        assert imported.n_channels == len(det.pmt_positions)
        np.testing.assert_allclose(imported.channel_table.positions, det.pmt_positions, atol=1e-6)
        sim = WarpSimulator(imported, seed=5, device="cpu", threads=2)
        ph = Photons.from_arrays(1, photons["pos"], photons["dir"], photons["pol"], photons["wavelength"],
                                 photons["time"])
        out[name] = Compared(sim.simulate([ph])[0], g4, case.photons, imported.n_channels)
        sim.close()
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_detected_fraction_agrees(compared: dict[str, Compared], name: str) -> None:
    c = compared[name]
    fc, fg = len(c.charon) / c.n, c.geant4.detected_fraction
    sigma = math.sqrt(fc * (1 - fc) / c.n + fg * (1 - fg) / c.n)
    assert fg > 20 / c.n, f"{name}: Geant4 detected almost nothing ({fg})"
    assert abs(fc - fg) <= 3 * sigma + FRACTION_REL_TOL * fg, \
        f"{name}: charon {fc:.5f}, Geant4 {fg:.5f} (sigma {sigma:.5f})"


@pytest.mark.parametrize("name", sorted(CASES))
def test_per_pmt_occupancy_agrees(compared: dict[str, Compared], name: str) -> None:
    c = compared[name]
    counts_c = np.bincount(np.asarray(c.charon.channel, np.int64), minlength=c.n_channels)
    chi2, ndf = stats.two_sample_chi2(counts_c, c.geant4.counts(c.n_channels), c.n, c.n)
    assert ndf >= 5, f"{name}: too few occupied PMTs to compare ({ndf} dof)"
    assert chi2 / ndf < CHI2_PER_NDF_MAX, f"{name}: chi2/ndf = {chi2 / ndf:.3f} ({ndf} dof)"


@pytest.mark.parametrize("name", sorted(CASES))
def test_hit_time_quantiles_agree(compared: dict[str, Compared], name: str) -> None:
    c = compared[name]
    qc = np.quantile(np.asarray(c.charon.time, np.float64), [0.1, 0.5, 0.9])
    qg = np.quantile(c.geant4.time_ns, [0.1, 0.5, 0.9])
    assert np.all(np.abs(qc - qg) <= QUANTILE_TOL_NS), f"{name}: q10/q50/q90 charon {qc}, Geant4 {qg}"


def test_import_reports_what_it_read(tmp_path: Path) -> None:
    det = build.build("water_cylinder", tmp_path)
    report = import_gdml(det.gdml, ImportOptions(ratdb=det.ratdb))
    scene = report.detector.scene
    assert scene is not None
    assert report.counts["channels"] == len(det.pmt_positions)
    # every PMT's bulb and inner volume carry its channel
    assert set(np.unique(scene.channel[scene.channel >= 0]).tolist()) == set(range(len(det.pmt_positions)))
    assert scene.n_shapes < scene.n_instances  # one mesh per solid, placed many times
