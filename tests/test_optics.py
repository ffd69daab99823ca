"""The shared optics formulas against analytic expectations (statistical checks at 4 sigma)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from charon.engine import optics

N = 200_000


def _keys(n: int = N, seed: int = 7, event: int = 3) -> np.ndarray:
    return optics.photon_keys(seed, event, np.arange(n))


def _u(slot: int, n: int = N, seed: int = 7) -> np.ndarray:
    return optics.uniform(_keys(n, seed), slot)


def _within(observed: float, expected: float, sigma: float, k: float = 4.0) -> None:
    assert abs(observed - expected) <= k * sigma, f"{observed} vs {expected} +- {k}*{sigma}"


def _hist_matches(values: np.ndarray, pdf, lo: float, hi: float, bins: int = 20) -> None:
    """Every bin's count is within 4 sigma (binomial) of the integrated pdf (Simpson)."""
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    n = values.shape[0]
    for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True):
        p = (b - a) / 6.0 * (pdf(a) + 4.0 * pdf(0.5 * (a + b)) + pdf(b))
        _within(c, n * p, math.sqrt(n * p * (1.0 - p)) + 1.0)


# ------------------------------------------------------------------------------------------ RNG


def test_mix64_is_splitmix64() -> None:
    # splitmix64 seeded with 0: first output 0xE220A8397B1DCDAF (Vigna's reference generator).
    assert optics.mix64_int(optics.GOLDEN) == 0xE220A8397B1DCDAF
    values = [0, 1, optics.GOLDEN, 2**64 - 1, 123456789123456789]
    arr = optics.mix64(np.array(values, dtype=np.uint64))
    assert [int(v) for v in arr] == [optics.mix64_int(v) for v in values]


def test_uniform_moments_and_open_interval() -> None:
    u = _u(0)
    assert u.min() > 0.0
    assert u.max() < 1.0
    _within(float(u.mean()), 0.5, math.sqrt(1 / 12 / N))
    _within(float((u * u).mean()), 1 / 3, math.sqrt((1 / 5 - 1 / 9) / N))
    # consecutive draws of one photon and draws of neighbouring photons are uncorrelated
    v = _u(1)
    _within(float(np.corrcoef(u, v)[0, 1]), 0.0, 1 / math.sqrt(N))
    _within(float(np.corrcoef(u[:-1], u[1:])[0, 1]), 0.0, 1 / math.sqrt(N))


def test_random_numbers_depend_only_on_seed_event_photon_and_counter() -> None:
    keys = optics.photon_keys(11, 5, np.arange(1000))
    one = optics.photon_keys(11, 5, np.array([637]))
    assert one[0] == keys[637]
    assert optics.uniform(one, 42)[0] == optics.uniform(keys, 42)[637]
    assert optics.uniform(keys, np.full(1000, 42))[637] == optics.uniform(keys, 42)[637]
    assert not np.array_equal(keys, optics.photon_keys(12, 5, np.arange(1000)))
    assert not np.array_equal(keys, optics.photon_keys(11, 6, np.arange(1000)))
    assert np.unique(keys).shape[0] == 1000


def test_exponential_mean() -> None:
    x = optics.exponential(_u(2), 2500.0)
    _within(float(x.mean()), 2500.0, 2500.0 / math.sqrt(N))
    assert np.all(np.isinf(optics.exponential(_u(2, 10), math.inf)))


# -------------------------------------------------------------------------------- directions


def test_isotropic_and_perpendicular() -> None:
    d = optics.isotropic(_u(0), _u(1))
    np.testing.assert_allclose(optics.dot(d, d), 1.0, atol=1e-12)
    for axis in range(3):
        _within(float(d[:, axis].mean()), 0.0, math.sqrt(1 / 3 / N))
    _hist_matches(d[:, 2], lambda c: 0.5, -1.0, 1.0)
    e = optics.random_perpendicular(d, _u(2))
    np.testing.assert_allclose(optics.dot(e, e), 1.0, atol=1e-12)
    assert np.max(np.abs(optics.dot(e, d))) < 1e-12


def test_transverse_polarization_repairs_bad_input() -> None:
    d = np.tile([0.0, 0.0, 1.0], (4, 1))
    pol = np.array([[1.0, 0.0, 0.5], [0.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 3.0, 0.0]])
    e = optics.transverse_polarization(d, pol, np.full(4, 0.3))
    np.testing.assert_allclose(optics.dot(e, e), 1.0, atol=1e-12)
    np.testing.assert_allclose(optics.dot(e, d), 0.0, atol=1e-12)
    np.testing.assert_allclose(e[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(e[3], [0.0, 1.0, 0.0])


def test_lambertian_is_cosine_weighted() -> None:
    normal = np.tile([0.0, 1.0, 0.0], (N, 1))
    d, e = optics.lambertian(normal, _u(0), _u(1), _u(2))
    cos_t = d[:, 1]
    assert cos_t.min() >= 0.0
    # p(cos) = 2 cos on [0, 1]
    _hist_matches(cos_t, lambda c: 2.0 * c, 0.0, 1.0)
    assert np.max(np.abs(optics.dot(e, d))) < 1e-12


def test_specular_reflection_mirrors_direction_and_polarisation() -> None:
    d = optics.isotropic(_u(0, 1000), _u(1, 1000))
    d[:, 2] = -np.abs(d[:, 2])
    d = optics.normalize(d)
    e = optics.random_perpendicular(d, _u(2, 1000))
    n = np.tile([0.0, 0.0, 1.0], (1000, 1))
    rd, re = optics.specular_reflect(d, e, n)
    np.testing.assert_allclose(rd[:, :2], d[:, :2], atol=1e-12)
    np.testing.assert_allclose(rd[:, 2], -d[:, 2], atol=1e-12)
    assert np.max(np.abs(optics.dot(rd, re))) < 1e-12


# ----------------------------------------------------------------------------------- Rayleigh


def test_rayleigh_cos_psi_inverts_the_dipole_cdf() -> None:
    u = np.linspace(1e-6, 1 - 1e-6, 1001)
    c = optics.rayleigh_cos_psi(u)
    np.testing.assert_allclose((2.0 + 3.0 * c - c**3) / 4.0, u, atol=1e-9)
    assert c[0] == pytest.approx(-1.0, abs=1e-2)
    assert c[-1] == pytest.approx(1.0, abs=1e-2)


def test_rayleigh_angular_distribution_is_one_plus_cos_squared() -> None:
    d = optics.isotropic(_u(0), _u(1))
    e = optics.random_perpendicular(d, _u(2))
    nd, _ = optics.rayleigh_scatter(d, e, _u(3), _u(4))
    mu = optics.dot(d, nd)
    _hist_matches(mu, lambda m: 3.0 / 8.0 * (1.0 + m * m), -1.0, 1.0)
    # <mu^2> = 2/5 for 1 + mu^2 (1/3 would be isotropic)
    m2 = mu * mu
    _within(float(m2.mean()), 0.4, float(m2.std()) / math.sqrt(N))
    # relative to the old polarisation the density is 3/4 (1 - c^2): dipole emission
    _hist_matches(optics.dot(e, nd), lambda c: 0.75 * (1.0 - c * c), -1.0, 1.0)


def test_rayleigh_polarisation() -> None:
    d = np.tile([0.0, 0.0, 1.0], (N, 1))
    e = np.tile([1.0, 0.0, 0.0], (N, 1))
    nd, ne = optics.rayleigh_scatter(d, e, _u(3), _u(4))
    np.testing.assert_allclose(optics.dot(nd, nd), 1.0, atol=1e-12)
    np.testing.assert_allclose(optics.dot(ne, ne), 1.0, atol=1e-12)
    assert np.max(np.abs(optics.dot(nd, ne))) < 1e-9
    # new polarisation lies in the plane of old polarisation and new direction
    assert np.max(np.abs(optics.dot(ne, optics.normalize(optics.cross(e, nd))))) < 1e-9
    # light scattered at 90 degrees is polarised perpendicular to the scattering plane
    side = np.abs(optics.dot(d, nd)) < 0.005
    assert side.sum() > 300
    plane_normal = optics.normalize(optics.cross(d[side], nd[side]))
    assert np.min(np.abs(optics.dot(ne[side], plane_normal))) > 0.99
    # no light is scattered along the old polarisation
    assert np.max(np.abs(optics.dot(nd, e))) < 1.0
    assert np.mean(np.abs(optics.dot(nd, e)) > 0.99) < 0.01 * 0.2


# ------------------------------------------------------------------------------------ Fresnel


def test_fresnel_reflectance_normal_incidence_and_brewster() -> None:
    n1, n2 = 1.0, 1.5
    rs, rp, ct, tir = optics.fresnel_reflectance(np.array([1.0]), n1, n2)
    expected = ((n1 - n2) / (n1 + n2)) ** 2
    assert rs[0] == pytest.approx(expected, rel=1e-12)
    assert rp[0] == pytest.approx(expected, rel=1e-12)
    assert ct[0] == pytest.approx(1.0)
    assert not tir[0]
    brewster = math.atan(n2 / n1)
    rs, rp, _, _ = optics.fresnel_reflectance(np.array([math.cos(brewster)]), n1, n2)
    assert rp[0] < 1e-20
    assert rs[0] > 0.1
    # water -> vacuum beyond the critical angle
    crit = math.asin(1.0 / 1.33)
    rs, rp, ct, tir = optics.fresnel_reflectance(np.cos(np.array([crit + 0.01, crit - 0.01])), 1.33, 1.0)
    assert bool(tir[0])
    assert rs[0] == rp[0] == 1.0
    assert not tir[1]
    assert rs[1] < 1.0


def _incident(theta: float, n: int, pol: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = np.tile([math.sin(theta), 0.0, -math.cos(theta)], (n, 1))
    normal = np.tile([0.0, 0.0, 1.0], (n, 1))
    if pol == "s":
        e = np.tile([0.0, 1.0, 0.0], (n, 1))
    elif pol == "p":
        e = np.tile([math.cos(theta), 0.0, math.sin(theta)], (n, 1))
    else:
        e = optics.random_perpendicular(d, _u(9, n))
    return d, e, normal


def test_fresnel_sampling_normal_incidence() -> None:
    d, e, normal = _incident(0.0, N, "random")
    nd, ne, refl = optics.fresnel(d, e, normal, 1.0, 1.5, _u(0), _u(1))
    r = 0.04
    _within(float(refl.mean()), r, math.sqrt(r * (1 - r) / N))
    np.testing.assert_allclose(nd[refl], np.tile([0.0, 0.0, 1.0], (int(refl.sum()), 1)), atol=1e-12)
    np.testing.assert_allclose(nd[~refl], d[~refl], atol=1e-12)
    assert np.max(np.abs(optics.dot(nd, ne))) < 1e-9


def test_fresnel_sampling_brewster_angle() -> None:
    n1, n2 = 1.0, 1.5
    theta = math.atan(n2 / n1)
    d, e, normal = _incident(theta, N, "p")
    _, _, refl = optics.fresnel(d, e, normal, n1, n2, _u(0), _u(1))
    assert refl.sum() == 0
    d, e, normal = _incident(theta, N, "s")
    _, _, refl = optics.fresnel(d, e, normal, n1, n2, _u(0), _u(1))
    rs = float(optics.fresnel_reflectance(np.array([math.cos(theta)]), n1, n2)[0][0])
    _within(float(refl.mean()), rs, math.sqrt(rs * (1 - rs) / N))


def test_fresnel_unpolarised_average_and_snell() -> None:
    n1, n2, theta = 1.33, 1.0, math.radians(35.0)
    d, e, normal = _incident(theta, N, "random")
    nd, ne, refl = optics.fresnel(d, e, normal, n1, n2, _u(0), _u(1))
    rs, rp, _, _ = optics.fresnel_reflectance(np.array([math.cos(theta)]), n1, n2)
    r = 0.5 * float(rs[0] + rp[0])
    _within(float(refl.mean()), r, math.sqrt(r * (1 - r) / N))
    sin_t = np.hypot(nd[~refl, 0], nd[~refl, 1])
    np.testing.assert_allclose(n2 * sin_t, n1 * math.sin(theta), rtol=1e-9)
    assert np.all(nd[~refl, 2] < 0)
    assert np.all(nd[refl, 2] > 0)
    np.testing.assert_allclose(optics.dot(nd, nd), 1.0, atol=1e-12)
    assert np.max(np.abs(optics.dot(nd, ne))) < 1e-9


def test_total_internal_reflection() -> None:
    theta = math.asin(1.0 / 1.33) + 0.05
    d, e, normal = _incident(theta, 10_000, "random")
    nd, _, refl = optics.fresnel(d, e, normal, 1.33, 1.0, _u(0, 10_000), _u(1, 10_000))
    assert refl.all()
    np.testing.assert_allclose(nd[:, 2], math.cos(theta), atol=1e-12)


# ---------------------------------------------------------------------------------- spectra


def test_interp_table_clamps_and_interpolates() -> None:
    wl = np.array([300.0, 400.0, 500.0])
    val = np.array([1.0, 3.0, 2.0])
    out = optics.interp_table([200.0, 350.0, 450.0, 900.0], wl, val)
    np.testing.assert_allclose(out, [1.0, 2.0, 2.5, 2.0])


def test_sample_cdf_reproduces_a_spectrum() -> None:
    # triangular spectrum on [400, 500] nm peaking at 500: pdf = 2 (x - 400) / 100^2
    x = np.linspace(400.0, 500.0, 201)
    cdf = ((x - 400.0) / 100.0) ** 2
    wl = optics.sample_cdf(_u(5), x, cdf)
    assert wl.min() >= 400.0
    assert wl.max() <= 500.0
    _hist_matches(wl, lambda v: 2.0 * (v - 400.0) / 100.0**2, 400.0, 500.0, bins=10)
    _within(float(wl.mean()), 400.0 + 200.0 / 3.0, float(wl.std()) / math.sqrt(N))
