"""The NumPy reference engine against analytic expectations (4 sigma), plus its contract.

Statistical tolerances: a fraction f measured on N photons is compared with its expectation within
4 sqrt(f (1 - f) / N).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from charon.engine import optics
from charon.engine.base import Hits, Photons, Simulator
from charon.engine.detector import (
    Detector,
    Material,
    Surface,
    WavelengthTable,
    reference_detector,
    sphere_detector,
    water,
)
from charon.engine.numpy_engine import NumpySimulator
from charon.protocol.tokens import TERMINAL_FLAGS, Flag

R = 6000.0
C = optics.SPEED_OF_LIGHT_MM_PER_NS


def _check_fraction(observed: int, n: int, expected: float) -> None:
    sigma = math.sqrt(expected * (1.0 - expected) / n)
    assert abs(observed / n - expected) <= 4.0 * sigma, f"{observed / n} vs {expected} +- 4*{sigma}"


def _source(n: int, event_id: int = 1, pos: tuple[float, float, float] = (0.0, 0.0, 0.0),
            wavelength: float = 420.0, time: float = 0.0, flags: int = 0, seed: int = 1) -> Photons:
    rng = np.random.default_rng(seed)
    z = rng.uniform(-1.0, 1.0, n)
    phi = rng.uniform(0.0, 2.0 * math.pi, n)
    s = np.sqrt(1.0 - z * z)
    d = np.column_stack([s * np.cos(phi), s * np.sin(phi), z])
    pol = optics.random_perpendicular(d, rng.uniform(size=n))
    return Photons.from_arrays(event_id, np.tile(pos, (n, 1)), d, pol, wavelength, time, flags)


def _cols(ph: Photons) -> dict[str, np.ndarray]:
    return {k: getattr(ph, k) for k in ("x", "y", "z", "dx", "dy", "dz", "polx", "poly", "polz",
                                          "wavelength", "time", "flags")}


def _outcome(sim: NumpySimulator, ph: Photons):
    return sim.propagate(_cols(ph), optics.photon_keys(sim.seed, ph.event_id, np.arange(len(ph))))


@pytest.fixture(scope="module")
def absorb_only() -> Detector:
    return sphere_detector(inner=water(scattering_length_mm=math.inf), name="absorb-only")


@pytest.fixture(scope="module")
def ref() -> Detector:
    return reference_detector()


def test_is_a_simulator(ref: Detector) -> None:
    sim = NumpySimulator(ref, seed=0, max_steps=10)
    assert isinstance(sim, Simulator)
    assert sim.name == "numpy"
    assert sim.fingerprint == ref.fingerprint
    assert len(sim.detector_info()) == 3000


def test_detected_fraction_absorption_only(absorb_only: Detector) -> None:
    n = 300_000
    sim = NumpySimulator(absorb_only, seed=3, max_steps=100)
    hits = sim.simulate([_source(n)])[0]
    coverage = absorb_only.coverage()
    expected = 0.25 * coverage * math.exp(-R / 30_000.0)
    _check_fraction(len(hits), n, expected)
    assert np.all(hits.channel < 3000)
    assert np.all(hits.flags == int(Flag.SURFACE_DETECT))
    # time of flight: every hit travelled R at c / n
    np.testing.assert_allclose(hits.time, R * 1.33 / C, rtol=1e-6)
    np.testing.assert_allclose(hits.wavelength, 420.0)
    # hit directions point out radially to the PMT that saw them
    axes = absorb_only.pmts.positions[hits.channel] / R
    d = np.column_stack([hits.dx, hits.dy, hits.dz]).astype(np.float64)
    assert np.min(np.einsum("ij,ij->i", d, axes)) > math.cos(math.asin(160.0 / R)) - 1e-6


def test_time_of_flight_with_start_time_and_index(absorb_only: Detector) -> None:
    heavy = sphere_detector(inner=water(scattering_length_mm=math.inf, index=1.5), name="n15")
    sim = NumpySimulator(heavy, seed=3, max_steps=100)
    hits = sim.simulate([_source(20_000, time=12.5)])[0]
    assert len(hits) > 1000
    np.testing.assert_allclose(hits.time, 12.5 + R * 1.5 / C, rtol=1e-6)


def test_offset_source_hit_times(absorb_only: Detector) -> None:
    # from an off-centre point each hit time is t0 + |hit point - source| n / c
    sim = NumpySimulator(absorb_only, seed=4, max_steps=100)
    src = np.array([1000.0, -2000.0, 500.0])
    hits = sim.simulate([_source(20_000, pos=tuple(src))])[0]
    d = np.column_stack([hits.dx, hits.dy, hits.dz]).astype(np.float64)
    b = d @ src
    path = -b + np.sqrt(b * b - (src @ src - R * R))
    np.testing.assert_allclose(hits.time, path * 1.33 / C, rtol=1e-5)


def test_rayleigh_scattering_keeps_the_detected_fraction(ref: Detector) -> None:
    # no absorption: scattering only, from the centre the hit points stay isotropic, so the
    # detected fraction is QE x coverage; the unscattered fraction is exp(-R / lambda_sca)
    det = sphere_detector(inner=water(absorption_length_mm=math.inf, scattering_length_mm=4000.0),
                          name="scatter-only")
    n = 100_000
    sim = NumpySimulator(det, seed=9, max_steps=1000)
    ph = _source(n)
    out = _outcome(sim, ph)
    _check_fraction(int((out.channel >= 0).sum()), n, 0.25 * det.coverage())
    scattered = (out.flags & int(Flag.RAYLEIGH_SCATTER)) != 0
    _check_fraction(int(scattered.sum()), n, 1.0 - math.exp(-R / 4000.0))
    assert np.all((out.flags & int(Flag.BULK_ABSORB)) == 0)
    assert np.all((out.flags & (int(Flag.SURFACE_DETECT) | int(Flag.SURFACE_ABSORB))) != 0)
    hits = sim.simulate([ph])[0]
    assert np.all((hits.flags[hits.time > R * 1.33 / C * 1.0001] & int(Flag.RAYLEIGH_SCATTER)) != 0)
    # scattered photons arrive late: mean extra path > 0
    assert hits.time.max() > 2 * R * 1.33 / C


def test_absorption_fraction_and_flags(ref: Detector) -> None:
    n = 100_000
    sim = NumpySimulator(ref, seed=2, max_steps=1000)
    out = _outcome(sim, _source(n))
    # first interaction: absorption before both scattering and the wall
    first_absorbed = ((out.flags & int(Flag.BULK_ABSORB)) != 0) & ((out.flags & int(Flag.RAYLEIGH_SCATTER)) == 0)
    lam = 1.0 / (1.0 / 30_000.0 + 1.0 / 50_000.0)
    expected = (lam / 30_000.0) * (1.0 - math.exp(-R / lam))
    _check_fraction(int(first_absorbed.sum()), n, expected)
    assert np.all((out.flags & int(TERMINAL_FLAGS)) != 0)
    assert np.all(out.channel[(out.flags & int(Flag.SURFACE_DETECT)) == 0] == -1)


def _fresnel_detector(n_inner: float, cathode: Surface | None = None) -> Detector:
    """A bare dielectric wall (no surface) between water-like n_inner and vacuum."""
    det = sphere_detector(inner=water(absorption_length_mm=math.inf, scattering_length_mm=math.inf,
                                      index=n_inner), name=f"bare-{n_inner}")
    surfaces = {"photocathode": cathode or Surface("photocathode", absorb=WavelengthTable.flat(1.0))}
    from dataclasses import replace

    return replace(det, surfaces=surfaces, vessel=replace(det.vessel, surface=None))


def test_fresnel_at_normal_incidence() -> None:
    det = _fresnel_detector(1.5)
    sim = NumpySimulator(det, seed=5, max_steps=1)
    n = 200_000
    out = _outcome(sim, _source(n))
    on_cathode = (out.flags & int(Flag.SURFACE_ABSORB)) != 0
    bare = ~on_cathode
    assert n / 3 < bare.sum() < n * 2 / 3
    reflected = (out.flags[bare] & int(Flag.REFLECT_SPECULAR)) != 0
    r = ((1.5 - 1.0) / 2.5) ** 2
    _check_fraction(int(reflected.sum()), int(bare.sum()), r)
    # transmitted photons left into the outer world, reflected ones ran out of steps
    assert np.all((out.flags[bare] & int(Flag.NO_HIT)) != 0)


def test_total_internal_reflection_in_the_sphere() -> None:
    det = _fresnel_detector(1.33)
    sim = NumpySimulator(det, seed=6, max_steps=1)
    n = 20_000
    # photons launched along y from (b, 0, z0) hit the wall at sin(theta_i) = sqrt(b^2 + z0^2) / R;
    # z0 is chosen so that the wall point is bare (no photocathode there)
    for b, tir in ((5000.0, True), (2000.0, False)):
        z0 = next(z for z in np.arange(0.0, 300.0, 10.0)
                  if det.lookup.find(np.array([[b, math.sqrt(R * R - b * b - z * z), z]]))[0] < 0)
        rng = np.random.default_rng(1)
        d = np.tile([0.0, 1.0, 0.0], (n, 1))
        pol = optics.random_perpendicular(d, rng.uniform(size=n))
        ph = Photons.from_arrays(1, np.tile([b, 0.0, z0], (n, 1)), d, pol, 420.0)
        out = _outcome(sim, ph)
        assert np.all((out.flags & int(Flag.SURFACE_ABSORB)) == 0)
        reflected = (out.flags & int(Flag.REFLECT_SPECULAR)) != 0
        if tir:
            assert math.hypot(b, z0) / R > 1.0 / 1.33
            assert reflected.all()
        else:
            cos_i = math.sqrt(1.0 - (b * b + z0 * z0) / R**2)
            rs, rp, _, _ = optics.fresnel_reflectance(np.array([cos_i]), 1.33, 1.0)
            r = 0.5 * float(rs[0] + rp[0])
            assert 0.01 < r < 0.05
            _check_fraction(int(reflected.sum()), n, r)
            assert np.all((out.flags[~reflected] & int(Flag.NO_HIT)) != 0)


def test_reemission_spectrum_and_delay() -> None:
    # every absorbed photon is re-emitted with a wavelength uniform in [450, 550] nm after an
    # exponential delay of 5 ns; then absorption is off for it (no second absorption: long length
    # above 450 nm)
    scint = Material(
        "scint", WavelengthTable.flat(1.33),
        absorption_length=WavelengthTable([300.0, 440.0, 449.0, 800.0], [100.0, 100.0, 1e12, 1e12]),
        scattering_length=WavelengthTable.flat(math.inf),
        reemission_prob=WavelengthTable.flat(1.0),
        reemission_cdf=WavelengthTable([450.0, 550.0], [0.0, 1.0]),
        reemission_time_ns=5.0,
    )
    det = sphere_detector(inner=scint, name="scint")
    sim = NumpySimulator(det, seed=8, max_steps=100)
    n = 100_000
    hits = sim.simulate([_source(n, wavelength=400.0)])[0]
    assert np.all((hits.flags & int(Flag.BULK_REEMIT)) != 0)
    _check_fraction(len(hits), n, 0.25 * det.coverage())
    wl = hits.wavelength.astype(np.float64)
    assert wl.min() >= 450.0
    assert wl.max() <= 550.0
    m = len(hits)
    assert abs(wl.mean() - 500.0) < 4 * (100.0 / math.sqrt(12.0)) / math.sqrt(m)
    counts, _ = np.histogram(wl, bins=10, range=(450.0, 550.0))
    assert np.all(np.abs(counts - m / 10) < 4 * math.sqrt(m / 10 * 0.9))
    # time = path / (c / n) + delay; path >= R - (absorption point distance); delay ~ Exp(5 ns)
    assert hits.time.min() > (R - 2000.0) * 1.33 / C


def test_terminal_input_is_not_propagated(ref: Detector) -> None:
    sim = NumpySimulator(ref, seed=1, max_steps=100)
    n = 2_000
    for flag in (Flag.NO_HIT, Flag.BULK_ABSORB, Flag.SURFACE_DETECT, Flag.SURFACE_ABSORB, Flag.NAN_ABORT):
        fl = int(flag) | int(Flag.CHERENKOV)
        ph = _source(n, flags=fl)
        assert len(sim.simulate([ph])[0]) == 0
        out = _outcome(sim, ph)
        assert np.all(out.flags == fl)
        assert np.all(out.channel == -1)


def test_origin_bits_are_kept(absorb_only: Detector) -> None:
    sim = NumpySimulator(absorb_only, seed=1, max_steps=100)
    n = 20_000
    flags = np.where(np.arange(n) % 2 == 0, int(Flag.CHERENKOV), int(Flag.SCINTILLATION))
    base = _source(n)
    ph = Photons.from_arrays(1, np.zeros((n, 3)), np.column_stack([base.dx, base.dy, base.dz]),
                             np.column_stack([base.polx, base.poly, base.polz]), 420.0, 0.0, flags)
    hits = sim.simulate([ph])[0]
    assert len(hits) > 500
    origin = hits.flags & int(Flag.CHERENKOV | Flag.SCINTILLATION)
    assert set(np.unique(origin)) == {int(Flag.CHERENKOV), int(Flag.SCINTILLATION)}
    assert np.all((hits.flags & int(Flag.SURFACE_DETECT)) != 0)


def test_non_finite_input_gets_nan_abort(absorb_only: Detector) -> None:
    sim = NumpySimulator(absorb_only, seed=1, max_steps=100)
    n = 10_000
    good = _source(n)
    cols = {k: np.array(v, copy=True) for k, v in _cols(good).items()}
    bad_rows = np.arange(0, n, 7)
    cols["x"][bad_rows[0::4]] = np.nan
    cols["dz"][bad_rows[1::4]] = np.inf
    cols["time"][bad_rows[2::4]] = -np.inf
    cols["wavelength"][bad_rows[3::4]] = np.nan
    ph = Photons(1, *(cols[k] for k in ("x", "y", "z", "dx", "dy", "dz", "polx", "poly", "polz",
                                         "wavelength", "time", "flags")))
    out = _outcome(sim, ph)
    assert np.all((out.flags[bad_rows] & int(Flag.NAN_ABORT)) != 0)
    assert np.all(out.channel[bad_rows] == -1)
    ok = np.setdiff1d(np.arange(n), bad_rows)
    assert np.all((out.flags[ok] & int(Flag.NAN_ABORT)) == 0)
    # the other photons are simulated exactly as without the bad ones (keys by photon index)
    ref_out = _outcome(sim, good)
    np.testing.assert_array_equal(out.flags[ok], ref_out.flags[ok])
    np.testing.assert_array_equal(out.channel[ok], ref_out.channel[ok])
    # a zero direction is not a direction either
    cols2 = {k: np.array(v, copy=True) for k, v in _cols(good).items()}
    for k in ("dx", "dy", "dz"):
        cols2[k][:10] = 0.0
    out2 = sim.propagate(cols2, optics.photon_keys(1, 1, np.arange(n)))
    assert np.all((out2.flags[:10] & int(Flag.NAN_ABORT)) != 0)


def _assert_hits_equal(a: Hits, b: Hits) -> None:
    for name in ("channel", "dx", "dy", "dz", "polx", "poly", "polz", "wavelength", "time", "flags"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_deterministic_and_independent_of_batching(ref: Detector) -> None:
    events = [_source(30_000, event_id=10, seed=1), _source(0, event_id=11), _source(20_000, event_id=12, seed=2),
              _source(5, event_id=13, seed=3)]
    sim = NumpySimulator(ref, seed=42, max_steps=1000)
    together = sim.simulate(events)
    assert len(together) == 4
    assert len(together[1]) == 0
    again = NumpySimulator(ref, seed=42, max_steps=1000).simulate(events)
    alone = [sim.simulate([e])[0] for e in events]
    chunked = NumpySimulator(ref, seed=42, max_steps=1000, chunk_photons=7_000).simulate(events)
    for a, b, c, d in zip(together, again, alone, chunked, strict=True):
        _assert_hits_equal(a, b)
        _assert_hits_equal(a, c)
        _assert_hits_equal(a, d)
    other = NumpySimulator(ref, seed=43, max_steps=1000).simulate(events[:1])[0]
    assert not np.array_equal(other.channel, together[0].channel)
    # the same photons under another event id are another random stream
    renamed = Photons(99, *(getattr(events[0], k) for k in ("x", "y", "z", "dx", "dy", "dz", "polx", "poly",
                                                             "polz", "wavelength", "time", "flags")))
    assert not np.array_equal(sim.simulate([renamed])[0].channel, together[0].channel)
    for h in together:
        assert np.all(h.channel < 3000)
        assert h.channel.dtype == np.uint32
        assert h.time.dtype == np.float32


def test_zero_photons_and_empty_batch(ref: Detector) -> None:
    sim = NumpySimulator(ref, seed=0, max_steps=10)
    assert sim.simulate([]) == []
    (hits,) = sim.simulate([_source(0)])
    assert len(hits) == 0
    assert len(hits.frames()) == 10


def test_max_steps_ends_in_no_hit() -> None:
    # a perfect mirror wall with no photocathode reachable: photons bounce until max_steps
    det = sphere_detector(inner=water(absorption_length_mm=math.inf, scattering_length_mm=math.inf),
                          wall_surface=Surface("mirror", reflect_specular=WavelengthTable.flat(1.0)),
                          name="mirror")
    sim = NumpySimulator(det, seed=0, max_steps=3)
    n = 5_000
    out = _outcome(sim, _source(n, pos=(0.0, 0.0, 0.0)))
    cathode = (out.flags & (int(Flag.SURFACE_DETECT) | int(Flag.SURFACE_ABSORB))) != 0
    rest = out.flags[~cathode]
    assert rest.size > 0
    assert np.all((rest & int(Flag.NO_HIT)) != 0)
    assert np.all((rest & int(Flag.REFLECT_SPECULAR)) != 0)


def test_diffuse_wall_and_photons_outside(ref: Detector) -> None:
    det = sphere_detector(inner=water(absorption_length_mm=math.inf, scattering_length_mm=math.inf),
                          wall_surface=Surface("white", reflect_diffuse=WavelengthTable.flat(1.0)),
                          name="white")
    sim = NumpySimulator(det, seed=0, max_steps=1000)
    n = 20_000
    out = _outcome(sim, _source(n))
    # with a lossless white wall every photon ends on a photocathode
    assert np.all((out.flags & (int(Flag.SURFACE_DETECT) | int(Flag.SURFACE_ABSORB))) != 0)
    _check_fraction(int((out.channel >= 0).sum()), n, 0.25)
    outside = _outcome(sim, _source(100, pos=(0.0, 0.0, 7000.0)))
    assert np.all(outside.flags == int(Flag.NO_HIT))


def test_wavelength_dependent_tables() -> None:
    # n(300 nm) = 1.40, n(600 nm) = 1.30; QE(300 nm) = 0.10, QE(600 nm) = 0.30; linear in between
    water_wl = Material("water", WavelengthTable([300.0, 600.0], [1.40, 1.30]),
                        WavelengthTable([300.0, 600.0], [20_000.0, 40_000.0]), WavelengthTable.flat(math.inf))
    base = sphere_detector(inner=water_wl, name="dispersive")
    from dataclasses import replace

    cathode = Surface("photocathode", detect=WavelengthTable([300.0, 600.0], [0.10, 0.30]),
                      absorb=WavelengthTable([300.0, 600.0], [0.90, 0.70]))
    det = replace(base, surfaces=dict(base.surfaces, photocathode=cathode))
    sim = NumpySimulator(det, seed=2, max_steps=10)
    n = 100_000
    # Time runs at the group velocity c / (n + dn/d(ln E)), as Geant4 computes it from RINDEX: with
    # two points the slope is (1.40 - 1.30) / ln(600 / 300) at both ends, linear in between.
    slope = 0.10 / math.log(2.0)
    v300, v600 = C / (1.40 + slope), C / (1.30 + slope)
    for wl, vg, qe, lam in ((300.0, v300, 0.10, 20_000.0), (450.0, 0.5 * (v300 + v600), 0.20, 30_000.0),
                            (600.0, v600, 0.30, 40_000.0)):
        hits = sim.simulate([_source(n, wavelength=wl)])[0]
        _check_fraction(len(hits), n, qe * det.coverage() * math.exp(-R / lam))
        np.testing.assert_allclose(hits.time, R / vg, rtol=1e-6)


def test_cylinder_vessel_absorption_only() -> None:
    from charon.engine.detector import cylinder_detector

    det = cylinder_detector(radius=2000.0, half_height=3000.0, pmt_radius=150.0, barrel_rings=8,
                            barrel_columns=30, cap_pitch=400.0,
                            inner=water(absorption_length_mm=10_000.0, scattering_length_mm=math.inf))
    # expectation: QE x average over isotropic directions of [exit point on a photocathode] x
    # exp(-path / lambda), integrated with an independent sample of 10^6 directions
    rng = np.random.default_rng(77)
    m = 1_000_000
    z = rng.uniform(-1, 1, m)
    phi = rng.uniform(0, 2 * math.pi, m)
    s = np.sqrt(1 - z * z)
    d = np.column_stack([s * np.cos(phi), s * np.sin(phi), z])
    with np.errstate(divide="ignore"):
        t_side = 2000.0 / np.where(s > 0, s, 1e-300)
        t_cap = 3000.0 / np.abs(z)
    path = np.minimum(t_side, t_cap)
    on = det.lookup.find(d * path[:, None]) >= 0
    expected = 0.25 * float(np.mean(on * np.exp(-path / 10_000.0)))
    n = 200_000
    sim = NumpySimulator(det, seed=5, max_steps=10)
    hits = sim.simulate([_source(n)])[0]
    # 4 sigma of the engine's binomial error and the integration's error combined
    sigma = math.sqrt(expected * (1 - expected) * (1 / n + 1 / m))
    assert abs(len(hits) / n - expected) <= 4 * sigma
    assert np.all(hits.channel < len(det.pmts))
    # times: path along the hit direction to the wall
    hd = np.column_stack([hits.dx, hits.dy, hits.dz]).astype(np.float64)
    s_h = np.hypot(hd[:, 0], hd[:, 1])
    with np.errstate(divide="ignore"):
        hp = np.minimum(2000.0 / np.where(s_h > 0, s_h, 1e-300), 3000.0 / np.abs(hd[:, 2]))
    np.testing.assert_allclose(hits.time, hp * 1.33 / C, rtol=1e-4)
    types = det.pmts.channel_type[hits.channel]
    assert set(np.unique(types)) == {0, 1}
