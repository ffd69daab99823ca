"""The Geant4 harness itself, against analytic expectations (tolerances 4 binomial sigmas).

These tests prove ``tests.g4`` right before it judges charon: exact arrival times and full
detection in a sphere whose wall detects, the photocathode efficiency and bulk absorption as
binomial fractions, the channel and photon-index mapping, Fresnel transmission (normal incidence
through a stack; s and p at 60°), the GDML round trip (Geant4 reading its own GDML behaves as the
in-memory geometry), reproducibility by seed, 2-process merging, WLS bookkeeping, and that the
10 000-PMT RAT-like detector builds and maps channels. Every Geant4 run is a fresh subprocess.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import skip_or_fail
from tests.g4 import api, build, stats, tables
from tests.g4.build import BuiltDetector
from tests.g4.detectors import stack_transmittance
from tests.g4.offline import geant4_available

SIGMAS = 4.0
C = tables.C_MM_PER_NS


@pytest.fixture(scope="module", autouse=True)
def _geant4() -> None:
    if not geant4_available():
        skip_or_fail("geant4-pybind is not importable offline (pip install 'geant4-pybind>=0.1.3')")


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("g4")


def within(k: int, n: int, p: float) -> tuple[bool, str]:
    f = stats.detected_fraction(k, n)
    pull = f.pull(p)
    return abs(pull) <= SIGMAS, f"observed {f.value:.5f} ± {f.sigma:.5f}, expected {p:.5f} (pull {pull:+.2f})"


def aimed(det: BuiltDetector, per_pmt: int, rng: np.random.Generator, origin: tuple[float, float, float]
          = (0.0, 0.0, 0.0)) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``per_pmt`` photons from ``origin`` towards each PMT position, in shuffled order."""
    target = rng.permutation(np.repeat(np.arange(len(det.pmt_positions)), per_pmt))
    d = det.pmt_positions[target] - np.asarray(origin)
    return api.photon_batch(origin, d, rng=rng), target


# ------------------------------------------------------------------------------ exact cases


def test_sphere_wall_every_photon_detected_at_r_n_over_c(out: Path) -> None:
    det = build.build_sphere_wall(out / "sphere", radius_mm=1000.0, rindex=1.33, efficiency=1.0)
    rng = np.random.default_rng(1)
    n = 5000
    wl = rng.uniform(300.0, 600.0, n)
    t0 = rng.uniform(0.0, 50.0, n)
    hits = api.run(det.gdml, det.ratdb, api.photon_batch((0, 0, 0), api.isotropic(n, rng), wl, t0, rng=rng),
                   seed=1, fates=True)
    assert hits.n_hits == n
    assert np.array_equal(np.sort(hits.photon), np.arange(n))  # each photon exactly once
    flight = det.meta["expected"]["hit_time_ns"]
    assert flight == pytest.approx(1000.0 * 1.33 / C)
    # Geant4 writes GROUPVEL (which it then reads back and uses) with 6 significant digits
    assert np.max(np.abs(hits.time_ns - (t0[hits.photon] + flight))) < 5e-6 * flight
    assert np.max(np.abs(hits.wavelength_nm - wl[hits.photon])) < 1e-9
    assert np.max(np.abs(np.linalg.norm(hits.pos, axis=1) - 1000.0)) < 1e-6
    assert np.all(hits.channel == 0)
    info = hits.infos[0]
    assert info["fates"]["detected"] == n
    assert info["unmatched_hits"] == 0
    assert info["ignored_sd_calls"] == 0
    assert info["sensitive_volumes"] == ["wall"]


@pytest.mark.parametrize(("efficiency", "abslength_mm"), [(0.25, 0.0), (1.0, 1000.0)])
def test_sphere_wall_efficiency_and_bulk_absorption(out: Path, efficiency: float, abslength_mm: float) -> None:
    det = build.build_sphere_wall(out / f"sphere_{efficiency}_{abslength_mm}", efficiency=efficiency,
                                  abslength_mm=abslength_mm)
    n = 20_000
    rng = np.random.default_rng(2)
    hits = api.run(det.gdml, det.ratdb, api.photon_batch((0, 0, 0), api.isotropic(n, rng), rng=rng), seed=2)
    expected = det.meta["expected"]["detected_fraction"]
    assert expected == pytest.approx(efficiency * (math.exp(-1.0) if abslength_mm else 1.0))
    ok, msg = within(hits.n_hits, n, expected)
    assert ok, msg


def test_two_processes_cover_every_photon_once(out: Path) -> None:
    det = build.build_sphere_wall(out / "sphere2", efficiency=1.0)
    n = 4000
    rng = np.random.default_rng(3)
    hits = api.run(det.gdml, det.ratdb, api.photon_batch((0, 0, 0), api.isotropic(n, rng), rng=rng),
                   seed=3, processes=2)
    assert len(hits.infos) == 2
    assert [i["n_photons"] for i in hits.infos] == [2000, 2000]
    assert hits.infos[0]["random_seeds"] != hits.infos[1]["random_seeds"]
    assert np.array_equal(hits.photon, np.arange(n))
    assert 0 < hits.beamon_wall_s < 60


# ------------------------------------------------------------------------------ channels and indices


@pytest.fixture(scope="module")
def cylinder_qe1(out: Path) -> BuiltDetector:
    return build.build_water_cylinder(out / "cyl_qe1", qe=1.0, abslength_mm=0.0, rayleigh_mm=0.0)


def test_channel_and_photon_index_mapping(cylinder_qe1: BuiltDetector) -> None:
    det = cylinder_qe1
    p_count = len(det.pmt_positions)
    assert p_count == 48
    rng = np.random.default_rng(4)
    photons, target = aimed(det, 40, rng)
    # 7 photons per event: event offsets are part of what is tested
    hits = api.run(det.gdml, det.ratdb, photons, seed=4, max_photons_per_event=7, warmup=0)
    dist = np.linalg.norm(det.pmt_positions[target], axis=1)
    apex = dist - det.meta["pmt"]["glass"]["dome_semi_axes_mm"][2]  # water path to the dome apex
    direct = hits.time_ns < apex[hits.photon] * 1.33 / C + 0.5  # within 0.5 ns of the straight path
    assert np.all(hits.channel[direct] == target[hits.photon[direct]])
    # first pass: one hit per photon unless reflected at the glass (normal-incidence Fresnel)
    first = np.unique(hits.photon[direct])
    assert len(first) == direct.sum()
    t_glass = 1 - tables.fresnel_normal(1.33, 1.49)
    ok, msg = within(len(first), len(target), t_glass)
    assert ok, msg
    assert hits.infos[0]["unmatched_hits"] == 0
    assert hits.infos[0]["sensitive_volumes"] == ["pmt_inner"]


# ------------------------------------------------------------------------------ Fresnel


def test_fresnel_normal_incidence_water_glass_vacuum(out: Path) -> None:
    det = build.build_slab_stack(out / "stack")
    n = 20_000
    rng = np.random.default_rng(5)
    photons = api.photon_batch((0.0, 0.0, -100.0), np.tile([0.0, 0.0, 1.0], (n, 1)), rng=rng)
    hits = api.run(det.gdml, det.ratdb, photons, seed=5)
    expected = stack_transmittance([1.33, 1.49, 1.0])
    assert det.meta["expected"]["transmittance_normal"] == pytest.approx(expected)
    single = (1 - tables.fresnel_normal(1.33, 1.49)) * (1 - tables.fresnel_normal(1.49, 1.0))
    assert expected == pytest.approx(single / (1 - tables.fresnel_normal(1.33, 1.49)
                                               * tables.fresnel_normal(1.49, 1.0)))
    ok, msg = within(hits.n_hits, n, expected)
    assert ok, msg
    assert np.all(hits.channel == 0)


def test_fresnel_s_and_p_at_60_degrees(out: Path) -> None:
    det = build.build_slab_stack(out / "stack_glass", layers=[["glass", 1.49, 10.0]])
    theta = math.radians(60.0)
    d = np.array([math.sin(theta), 0.0, math.cos(theta)])
    n = 10_000
    s_pol = np.array([0.0, 1.0, 0.0])
    p_pol = np.array([math.cos(theta), 0.0, -math.sin(theta)])
    photons = api.photon_batch((0.0, 0.0, -100.0), np.tile(d, (2 * n, 1)),
                               pol=np.vstack([np.tile(s_pol, (n, 1)), np.tile(p_pol, (n, 1))]))
    hits = api.run(det.gdml, det.ratdb, photons, seed=6)
    rs, rp = tables.fresnel_rs_rp(1.33, 1.49, theta)
    k_s = int(np.sum(hits.photon < n))
    k_p = int(np.sum(hits.photon >= n))
    for k, r in ((k_s, rs), (k_p, rp)):
        ok, msg = within(k, n, 1 - r)
        assert ok, msg
    # s and p differ by far more than the statistics: polarisation reached the boundary process
    assert abs(stats.two_proportion_z(k_s, n, k_p, n)) > 10


def test_acrylic_vessel_normal_incidence_transmission_and_time(out: Path) -> None:
    det = build.build_acrylic_vessel(out / "vessel_clear", qe=1.0, water_abslength_mm=0.0,
                                     target_abslength_mm=0.0, acrylic_abslength_mm=0.0)
    rng = np.random.default_rng(7)
    photons, target = aimed(det, 300, rng)
    hits = api.run(det.gdml, det.ratdb, photons, seed=7)
    p = det.params
    inner = p["vessel_radius_mm"] - p["vessel_thickness_mm"]
    face = p["pmt_distance_mm"] - 5.0
    t_direct = (inner * 1.50 + p["vessel_thickness_mm"] * 1.49 + (face - p["vessel_radius_mm"]) * 1.33) / C
    direct = hits.time_ns < t_direct + 1.0
    assert np.max(np.abs(hits.time_ns[direct] - t_direct)) < 5e-6 * t_direct  # GDML: 6 digits
    assert np.all(hits.channel[direct] == target[hits.photon[direct]])
    expected = det.meta["expected"]["transmission_normal"]
    assert expected == pytest.approx((1 - tables.fresnel_normal(1.50, 1.49)) * (1 - tables.fresnel_normal(1.49, 1.33)))
    ok, msg = within(int(direct.sum()), len(target), expected)
    assert ok, msg


def test_reflector_single_reflection_expectation(out: Path) -> None:
    det = build.build_reflector(out / "reflector_qe1", qe=1.0)
    n = 40_000
    rng = np.random.default_rng(12)
    hits = api.run(det.gdml, det.ratdb, api.photon_batch((0, 0, 0), lower_hemisphere(n, rng), rng=rng), seed=12)
    exp = det.meta["expected"]
    per_pmt = np.add(exp["per_pmt_fraction_via_mirror"], exp["per_pmt_fraction_via_diffuser"])
    counts = hits.counts(len(det.pmt_positions))
    mirror_side = det.pmt_positions[:, 0] < 0
    # the mirror (x < 0) and diffuser (x > 0) halves each receive what one reflection predicts
    for side in (mirror_side, ~mirror_side):
        ok, msg = within(int(counts[side].sum()), n, float(per_pmt[side].sum()))
        assert ok, msg
    assert exp["fraction_via_mirror"] > 0.3 * (exp["fraction_via_mirror"] + exp["fraction_via_diffuser"])


# ------------------------------------------------------------------------------ GDML round trip


def lower_hemisphere(n: int, rng: np.random.Generator) -> np.ndarray:
    d = api.isotropic(n, rng)
    d[:, 2] = -np.abs(d[:, 2])
    return d


@pytest.mark.parametrize(("name", "params", "n"), [
    ("water_cylinder", {"qe": 1.0}, 12_000),
    ("acrylic_vessel", {"qe": 1.0}, 12_000),
    ("reflector", {"qe": 1.0}, 40_000),
    ("rat_like", {"n_pmts": 240, "qe": 1.0}, 30_000),
])
def test_gdml_read_back_matches_in_memory_geometry(out: Path, name: str, params: dict[str, object],
                                                   n: int) -> None:
    det = build.build(name, out / f"rt_{name}", **params)

    def sample(seed: int) -> dict[str, np.ndarray]:
        # Independent photons for each run: with QE 1 the same directions would be detected almost
        # alike whatever Geant4's seed, and the statistical comparison below would be toothless.
        rng = np.random.default_rng(seed)
        # the reflector's suggested source: the lower hemisphere from the origin
        d = lower_hemisphere(n, rng) if name == "reflector" else api.isotropic(n, rng)
        return api.photon_batch((0, 0, 0), d, rng=rng)

    from_gdml = api.run(det.gdml, det.ratdb, sample(81), seed=11)
    in_memory = api.run(det.gdml, det.ratdb, sample(82), seed=12, in_memory=True)
    assert from_gdml.infos[0]["geometry"].endswith("detector.gdml")
    assert in_memory.infos[0]["geometry"] == f"build:{name}"
    k1, k2 = from_gdml.n_hits, in_memory.n_hits
    assert k1 > 100
    assert k2 > 100
    z = stats.two_proportion_z(k1, n, k2, n)
    assert abs(z) < SIGMAS, f"detected {k1} vs {k2} of {n} (z {z:+.2f})"
    p_count = len(det.pmt_positions)
    chi2, ndf = stats.two_sample_chi2(from_gdml.counts(p_count), in_memory.counts(p_count), n, n)
    assert ndf > 0
    assert stats.chi2_sf(chi2, ndf) > 1e-4, f"per-channel chi2 {chi2:.1f} / {ndf}"
    assert max(abs(x) for x in stats.quantile_pulls(from_gdml.time_ns, in_memory.time_ns)) < SIGMAS
    assert from_gdml.infos[0]["unmatched_hits"] == 0


# ------------------------------------------------------------------------------ reproducibility


def test_same_seed_same_hits_different_seed_different(cylinder_qe1: BuiltDetector, tmp_path: Path) -> None:
    det = cylinder_qe1
    rng = np.random.default_rng(9)
    n = 5000
    photons = api.photon_batch((0, 0, 0), api.isotropic(n, rng), rng=rng)
    a = api.run(det.gdml, det.ratdb, photons, seed=21)
    b = api.run(det.gdml, det.ratdb, photons, seed=21)
    c = api.run(det.gdml, det.ratdb, photons, seed=22)
    assert a.n_hits > 50
    for col in api.HIT_COLUMNS:
        assert np.array_equal(getattr(a, col), getattr(b, col)), col
    a.save(tmp_path / "hits.npz")
    again = api.Hits.load(tmp_path / "hits.npz")
    assert np.array_equal(again.time_ns, a.time_ns)
    assert (again.n_photons, again.infos) == (a.n_photons, a.infos)
    assert not (a.n_hits == c.n_hits and np.array_equal(a.photon, c.photon) and np.array_equal(a.time_ns, c.time_ns))


# ------------------------------------------------------------------------------ WLS, scale, overlaps


def test_wls_secondaries_keep_their_primary_index(out: Path) -> None:
    det = build.build_dispersive(out / "wls", wls=True)
    assert det.meta["wls"]["wls_time_profile"] == "exponential"
    n = 4000
    rng = np.random.default_rng(10)
    # 350 nm straight down from z = -400 into the WLS plate at z = -500 (0.5 mm absorption length)
    photons = api.photon_batch((0.0, 0.0, -400.0), np.tile([0.0, 0.0, -1.0], (n, 1)), 350.0, rng=rng)
    hits = api.run(det.gdml, det.ratdb, photons, seed=10, fates=True)
    info = hits.infos[0]
    assert info["wls_materials"] is True
    assert "OpWLS" not in info["processes_off"]
    assert info["fates"]["wls_absorbed"] > 0.9 * n
    assert hits.n_hits > 30
    assert np.all((hits.photon >= 0) & (hits.photon < n))
    # re-emitted light: the 450 nm band (the 350 nm primaries cannot reach a PMT unconverted)
    assert np.all(hits.wavelength_nm > 395.0)
    assert 435.0 < np.mean(hits.wavelength_nm) < 465.0
    # exponential re-emission delay (2 ns) on top of at least the straight flight from the plate
    assert np.min(hits.time_ns) > 100.0 / C * 1.33


def test_rat_like_10000_pmts_build_and_map(out: Path) -> None:
    det = build.build_rat_like(out / "rat10k", n_pmts=10_000, qe=1.0, abslength_mm=0.0, rayleigh_mm=0.0)
    assert det.pmt_positions.shape == (10_000, 3)
    assert np.allclose(np.linalg.norm(det.pmt_positions, axis=1), 9000.0)
    assert np.allclose(np.einsum("ij,ij->i", det.pmt_directions, -det.pmt_positions / 9000.0), 1.0)
    assert det.meta["pmt"]["min_spacing_mm"] > 2 * 130.0
    assert det.meta["build"]["construct_s"] + det.meta["build"]["write_gdml_s"] < 60.0
    text = det.gdml.read_text()
    assert text.count("<bordersurface") == 2  # one photocathode, one mirror: the body PV is shared
    rng = np.random.default_rng(11)
    chosen = rng.choice(10_000, 50, replace=False)
    target = np.repeat(chosen, 20)
    photons = api.photon_batch((0, 0, 0), det.pmt_positions[target], rng=rng)
    hits = api.run(det.gdml, det.ratdb, photons, seed=11, warmup=0)
    apex = 9000.0 - det.meta["pmt"]["body"]["ellipsoid_mm"][2]
    direct = hits.time_ns < apex * 1.33 / C + 0.5  # not reflected at some glass on the way
    assert np.all(hits.channel[direct] == target[hits.photon[direct]])
    assert len(np.unique(hits.photon[direct])) == direct.sum()
    ok, msg = within(int(direct.sum()), len(target), 1 - tables.fresnel_normal(1.33, 1.49))
    assert ok, msg
    assert hits.infos[0]["sensitive_volumes"] == ["pmt_inner1"]


def test_geant4_overlap_check_passes_and_catches(out: Path) -> None:
    for name in ("water_cylinder", "acrylic_vessel", "reflector", "sphere_wall", "slab_stack"):
        det = build.build(name, out / f"ov_{name}", check_overlaps=True)
        assert det.meta["build"]["overlaps"] == [], name
    crowded = build.build("water_cylinder", out / "ov_crowded", check_overlaps=True, per_ring=60)
    assert len(crowded.meta["build"]["overlaps"]) > 0
