"""Warp engine physics against analytic expectations (every tolerance is 4 sigma unless stated).

Each detector gets one simulator per module (the kernel module is compiled once per process and
cached on disk in Warp's default cache, so later runs start in milliseconds).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from charon.engine.detector import Material, sphere_detector, water
from charon.engine.warp_engine import WarpSimulator
from charon.protocol.tokens import Flag
from tests.warp_support import C_MM_PER_NS, WT, ball, beam, chi2_limit, point_source

SIGMAS = 4.0


def binomial_ok(k: int, n: int, p: float) -> tuple[bool, str]:
    sigma = math.sqrt(p * (1.0 - p) / n)
    diff = k / n - p
    return abs(diff) <= SIGMAS * sigma + 1e-12, f"observed {k / n:.5f}, expected {p:.5f} +- {sigma:.5f}"


def sim(detector, **kw):  # type: ignore[no-untyped-def]
    return WarpSimulator(detector, seed=kw.pop("seed", 11), device="cpu", threads=kw.pop("threads", 2), **kw)


# ------------------------------------------------------------------------------ bulk physics


def test_detected_fraction_absorption_only() -> None:
    lam = 10_000.0
    det = sphere_detector(qe=0.25, inner=water(absorption_length_mm=lam, scattering_length_mm=math.inf))
    n = 400_000
    hits = sim(det, max_steps=10).simulate([point_source(n)])[0]
    p = det.coverage() * 0.25 * math.exp(-det.vessel.radius / lam)
    ok, msg = binomial_ok(len(hits), n, p)
    assert ok, msg
    assert np.all(hits.channel < det.n_channels)
    assert np.all(hits.flags & Flag.SURFACE_DETECT)
    assert not np.any(hits.flags & (Flag.BULK_ABSORB | Flag.RAYLEIGH_SCATTER))


def test_time_of_flight_and_hit_kinematics() -> None:
    det = sphere_detector(qe=1.0, inner=water(absorption_length_mm=math.inf, scattering_length_mm=math.inf))
    src = point_source(50_000, time=5.0, wavelength=450.0)
    hits = sim(det).simulate([src])[0]
    assert len(hits) > 0.9 * det.coverage() * len(src)
    expected = 5.0 + det.vessel.radius * 1.33 / C_MM_PER_NS
    # float32 rounding only: all hits arrive at the same time
    assert np.max(np.abs(hits.time - expected)) < 2e-4
    assert np.all(hits.wavelength == np.float32(450.0))
    # the photon arrives where its channel is: direction from the centre points at that PMT
    pmt = det.pmts.positions[hits.channel] / det.vessel.radius
    cos = (np.stack([hits.dx, hits.dy, hits.dz], 1) * pmt).sum(1)
    assert np.all(cos > math.cos(math.asin(det.pmts.radius / det.vessel.radius)) - 1e-6)
    pol = np.stack([hits.polx, hits.poly, hits.polz], 1)
    assert np.allclose(np.linalg.norm(pol, axis=1), 1.0, atol=1e-5)
    assert np.allclose((pol * np.stack([hits.dx, hits.dy, hits.dz], 1)).sum(1), 0.0, atol=1e-5)


# ------------------------------------------------------------------------------ Fresnel


@pytest.fixture(scope="module")
def glass() -> WarpSimulator:
    """n = 1.5 ball in vacuum, one step: the final direction shows reflection or refraction."""
    return sim(ball(n_in=1.5, n_out=1.0), max_steps=1)


def reflected(state, normal_out):  # type: ignore[no-untyped-def]
    return (state.dir * normal_out).sum(1) < 0


def test_fresnel_normal_incidence(glass: WarpSimulator) -> None:
    n = 200_000
    src = point_source(n, seed=3)
    st = glass.propagate(src)
    d0 = np.stack([src.dx, src.dy, src.dz], 1)
    away = ~(st.flags & Flag.SURFACE_DETECT).astype(bool)  # the one small PMT detects
    refl = reflected(st, d0)[away]
    expected = ((1.5 - 1.0) / (1.5 + 1.0)) ** 2
    ok, msg = binomial_ok(int(refl.sum()), int(away.sum()), expected)
    assert ok, msg
    assert np.all(st.flags[away][refl] & Flag.REFLECT_SPECULAR)
    # reflected straight back, transmitted straight on
    assert np.allclose(st.dir[away][refl], -d0[away][refl], atol=1e-5)
    assert np.allclose(st.dir[away][~refl], d0[away][~refl], atol=1e-5)


def _oblique(sim_: WarpSimulator, angle: float, pol: tuple[float, float, float] | None, n: int):  # type: ignore[no-untyped-def]
    """Photons hitting the ball's wall at ``angle`` in the xy plane (s = z, p = y)."""
    r = sim_.detector.vessel.radius
    b = r * math.sin(angle)
    st = sim_.propagate(beam(n, (0.0, b, 0.0), (1.0, 0.0, 0.0), pol))
    hit_point = np.array([math.sqrt(r * r - b * b), b, 0.0]) / r
    return st, reflected(st, hit_point[None, :]), hit_point


def fresnel_rs_rp(theta: float, n1: float, n2: float) -> tuple[float, float]:
    ci = math.cos(theta)
    ct = math.sqrt(1.0 - (n1 / n2 * math.sin(theta)) ** 2)
    rs = (n1 * ci - n2 * ct) / (n1 * ci + n2 * ct)
    rp = (n2 * ci - n1 * ct) / (n2 * ci + n1 * ct)
    return rs * rs, rp * rp


def test_fresnel_brewster_angle(glass: WarpSimulator) -> None:
    theta_b = math.atan(1.0 / 1.5)
    rs, rp = fresnel_rs_rp(theta_b, 1.5, 1.0)
    assert rp < 1e-12
    n = 100_000
    # p polarisation: no reflection at all (float32 leaves R_p ~ 1e-9)
    _, refl_p, _ = _oblique(glass, theta_b, (0.0, 1.0, 0.0), n)
    assert refl_p.sum() <= 2
    # s polarisation
    _, refl_s, _ = _oblique(glass, theta_b, (0.0, 0.0, 1.0), n)
    ok, msg = binomial_ok(int(refl_s.sum()), n, rs)
    assert ok, msg
    # unpolarised: (R_s + R_p) / 2, and what is reflected is s-polarised
    st_u, refl_u, _ = _oblique(glass, theta_b, None, n)
    ok, msg = binomial_ok(int(refl_u.sum()), n, 0.5 * (rs + rp))
    assert ok, msg
    assert np.all(np.abs(st_u.pol[refl_u][:, 2]) > 1.0 - 1e-5)


def test_total_internal_reflection(glass: WarpSimulator) -> None:
    critical = math.asin(1.0 / 1.5)
    theta = math.radians(60.0)
    assert theta > critical
    st, refl, normal = _oblique(glass, theta, None, 20_000)
    assert refl.all()
    d0 = np.array([1.0, 0.0, 0.0])
    mirror = d0 - 2.0 * (d0 @ normal) * normal
    assert np.allclose(st.dir, mirror[None, :], atol=1e-5)
    # just below the critical angle some light gets out
    _, refl_below, _ = _oblique(glass, critical - 0.02, None, 20_000)
    assert 0 < refl_below.sum() < 20_000


# ------------------------------------------------------------------------------ Rayleigh


@pytest.fixture(scope="module")
def fog() -> WarpSimulator:
    """Water with a 10 mm Rayleigh length in a 10 m sphere: every photon scatters in step one."""
    inner = Material("fog", WT.flat(1.33), WT.flat(math.inf), WT.flat(10.0))
    return sim(ball(n_in=1.33, n_out=1.0, radius=10_000.0, inner=inner), max_steps=1)


def test_rayleigh_angular_distribution(fog: WarpSimulator) -> None:
    n = 200_000
    src = beam(n, (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), None)
    st = fog.propagate(src)
    assert np.all(st.flags & Flag.RAYLEIGH_SCATTER)
    c = st.dir[:, 2].astype(np.float64)
    edges = np.linspace(-1.0, 1.0, 21)
    counts, _ = np.histogram(c, edges)
    cdf = (edges + edges**3 / 3.0 + 4.0 / 3.0) / (8.0 / 3.0)  # of (3/8)(1 + c^2)
    expected = n * np.diff(cdf)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    ndf = len(counts) - 1
    assert chi2 < chi2_limit(ndf), f"chi2 {chi2:.1f} for {ndf} dof"
    # <cos^2> = 2/5 for 1 + cos^2; variance of cos^2 under it is 0.0888...
    m2 = float((c * c).mean())
    assert abs(m2 - 0.4) < SIGMAS * math.sqrt(0.08889 / n)


def test_rayleigh_polarisation(fog: WarpSimulator) -> None:
    n = 200_000
    st = fog.propagate(beam(n, (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), (1.0, 0.0, 0.0)))
    k = st.dir.astype(np.float64)
    e = st.pol.astype(np.float64)
    # dipole pattern: density ~ 1 - (k.e0)^2, so <(k.e0)^2> = 1/5
    kx2 = k[:, 0] ** 2
    assert abs(kx2.mean() - 0.2) < SIGMAS * kx2.std() / math.sqrt(n)
    # no light along the old polarisation
    assert np.mean(np.abs(k[:, 0]) > 0.99) < 1e-3
    # new polarisation: transverse, in the plane of e0 and k
    assert np.allclose((k * e).sum(1), 0.0, atol=1e-5)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    plane_normal = np.cross(np.array([1.0, 0.0, 0.0]), k)
    assert np.allclose((plane_normal * e).sum(1), 0.0, atol=1e-4)
    # unpolarised light scattered at 90 degrees is polarised perpendicular to the scattering plane
    st_u = fog.propagate(beam(n, (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), None))
    side = np.abs(st_u.dir[:, 2]) < 0.02
    assert side.sum() > 1000
    # (only photons scattered close to the old polarisation axis carry |pol_z| ~ 0.1)
    pz = np.abs(st_u.pol[side][:, 2])
    assert pz.mean() < 0.01
    assert np.quantile(pz, 0.95) < 0.03


# ------------------------------------------------------------------------------ re-emission


def test_reemission_spectrum_and_delay() -> None:
    tau = 5.0
    cdf_wl = np.array([400.0, 420.0, 480.0, 500.0])
    cdf_val = np.array([0.0, 0.1, 0.9, 1.0])
    scint = Material(
        "scint", WT.flat(1.5),
        absorption_length=WT(np.array([300.0, 380.0, 390.0, 800.0]), np.array([1.0, 1.0, 1e12, 1e12])),
        scattering_length=WT.flat(math.inf), reemission_prob=WT.flat(1.0),
        reemission_cdf=WT(cdf_wl, cdf_val), reemission_time_ns=tau)
    det = sphere_detector(qe=1.0, inner=scint)
    n = 100_000
    hits = sim(det).simulate([point_source(n, wavelength=350.0)])[0]
    assert len(hits) > 0.9 * det.coverage() * n
    assert np.all(hits.flags & Flag.BULK_REEMIT)
    wl = hits.wavelength.astype(np.float64)
    assert wl.min() >= 400.0
    assert wl.max() <= 500.0
    edges = np.linspace(400.0, 500.0, 11)
    counts, _ = np.histogram(wl, edges)
    expected = len(hits) * np.diff(np.interp(edges, cdf_wl, cdf_val))
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < chi2_limit(len(counts) - 1), f"chi2 {chi2:.1f}"
    delay = hits.time.astype(np.float64) - det.vessel.radius * 1.5 / C_MM_PER_NS
    assert abs(delay.mean() - tau) < SIGMAS * tau / math.sqrt(len(hits)) + 0.02
    assert delay.min() > -0.02


# ------------------------------------------------------------------------------ mesh boundaries


def test_fresnel_on_a_mesh_boundary_from_both_sides() -> None:
    """A triangle-mesh glass ball in vacuum: the side a photon comes from picks n1 and n2."""
    from dataclasses import replace

    from charon.engine.mesh import MeshGeometry, icosphere

    det = ball(n_in=1.5, n_out=1.0, radius=1000.0)
    v, f = icosphere(4)
    nt = f.shape[0]
    glass_i, vac_i = det.material_index("glass"), det.material_index("vacuum")
    geo = MeshGeometry(v * 1000.0, f, np.full(nt, glass_i), np.full(nt, vac_i), np.full(nt, -1),
                       np.zeros(nt, np.int32), np.array([-1]))
    det = replace(det, mesh=geo)
    expected = ((1.5 - 1.0) / 2.5) ** 2
    n = 100_000
    for steps in (1, 2):
        s = sim(det, max_steps=steps, geometry="mesh")
        # off-axis by 1 mm so the ray misses the icosphere's vertex on the x axis
        st = s.propagate(beam(n, (-3000.0, 1.0, 0.5), (1.0, 0.0, 0.0), None))
        back = st.dir[:, 0] < 0
        if steps == 1:  # vacuum -> glass at the near side
            ok, msg = binomial_ok(int(back.sum()), n, expected)
            assert ok, msg
            assert np.all(st.pos[~back][:, 0] < -999.0)  # stopped just inside the near face
        else:  # of those that entered, the far side (glass -> vacuum) reflects the same fraction
            entered = n - int(((st.pos[:, 0] < -999.0) & back).sum())
            refl_far = int((back & (st.pos[:, 0] > 0)).sum())
            ok, msg = binomial_ok(refl_far, entered, expected)
            assert ok, msg
