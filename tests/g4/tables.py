"""Optical property tables of the test detectors, as plain numbers (no Geant4 needed).

One place for every curve the detectors use, so that the Geant4 construction (``detectors``) and
the expectations written into ``meta.json`` come from the same numbers. A table is a pair
``(wavelengths_nm, values)`` with wavelengths ascending; lengths are in mm, times in ns.
``kit.Kit.properties`` turns a table into a Geant4 property vector (energy = hc/λ, ascending).
"""

from __future__ import annotations

import itertools
import math

Table = tuple[list[float], list[float]]

# hc in eV·nm, as Geant4's h_Planck * c_light gives it (CLHEP units).
HC_EV_NM = 1239.84198
C_MM_PER_NS = 299.792458

# Flat tables span 200-800 nm; Geant4 holds the end values outside a table's range.
WL_MIN_NM = 200.0
WL_MAX_NM = 800.0
# Wavelength-dependent tables: 300-650 nm every 10 nm (36 points).
DISPERSIVE_GRID_NM = [300.0 + 10.0 * i for i in range(36)]


def flat(value: float) -> Table:
    """A wavelength-independent table (two points, 200 and 800 nm)."""
    return [WL_MIN_NM, WL_MAX_NM], [float(value), float(value)]


def sampled(fn: object, grid: list[float] | None = None) -> Table:
    """``fn(λ_nm)`` sampled on ``grid`` (default: 300-650 nm every 10 nm)."""
    assert callable(fn)
    wl = list(grid if grid is not None else DISPERSIVE_GRID_NM)
    return wl, [float(fn(x)) for x in wl]


def as_json(table: Table) -> dict[str, list[float]]:
    return {"wavelength_nm": list(table[0]), "value": list(table[1])}


def interpolate(table: Table, wavelength_nm: float) -> float:
    """Linear interpolation in energy, as Geant4 does it, with the end values held outside the range."""
    wl, val = table
    e = HC_EV_NM / wavelength_nm
    pts = sorted(zip((HC_EV_NM / w for w in wl), val, strict=True))
    if e <= pts[0][0]:
        return pts[0][1]
    if e >= pts[-1][0]:
        return pts[-1][1]
    for (e0, v0), (e1, v1) in itertools.pairwise(pts):
        if e0 <= e <= e1:
            return v0 + (v1 - v0) * (e - e0) / (e1 - e0)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- dispersive water (detector c)

# Cauchy law n(λ) = A + B/λ² through n(300 nm) = 1.36 and n(650 nm) = 1.33.
CAUCHY_B_NM2 = 0.03 / (1.0 / 300.0**2 - 1.0 / 650.0**2)
CAUCHY_A = 1.33 - CAUCHY_B_NM2 / 650.0**2


def water_rindex(wavelength_nm: float) -> float:
    return CAUCHY_A + CAUCHY_B_NM2 / wavelength_nm**2


WATER_ABSLENGTH_ANCHORS_MM = ((300.0, 2_000.0), (350.0, 10_000.0), (400.0, 35_000.0), (440.0, 40_000.0),
                              (500.0, 25_000.0), (550.0, 12_000.0), (600.0, 5_000.0), (650.0, 3_000.0))


def water_abslength_mm(wavelength_nm: float) -> float:
    """Absorption length: 2 m at 300 nm, 40 m at 440 nm, 3 m at 650 nm (log-linear between anchors)."""
    pts = WATER_ABSLENGTH_ANCHORS_MM
    if wavelength_nm <= pts[0][0]:
        return pts[0][1]
    for (w0, a0), (w1, a1) in itertools.pairwise(pts):
        if wavelength_nm <= w1:
            f = (wavelength_nm - w0) / (w1 - w0)
            return math.exp(math.log(a0) + f * (math.log(a1) - math.log(a0)))
    return pts[-1][1]


def water_rayleigh_mm(wavelength_nm: float) -> float:
    """Rayleigh length ∝ λ⁴: 10 m at 300 nm, about 220 m at 650 nm."""
    return 10_000.0 * (wavelength_nm / 300.0) ** 4


def bialkali_qe(wavelength_nm: float) -> float:
    """A bialkali-like quantum efficiency: peak 0.28 at 390 nm, 0.05 at 300 nm, 0.02 at 650 nm."""
    if wavelength_nm <= 390.0:
        return 0.05 + 0.23 * math.pow(max(0.0, wavelength_nm - 300.0) / 90.0, 1.5)
    return 0.02 + 0.26 * math.exp(-((wavelength_nm - 390.0) / 120.0) ** 2)


# WLS coating (detector c): absorbs below ~400 nm, re-emits a band around 450 nm.
def wls_abslength_mm(wavelength_nm: float) -> float:
    """0.5 mm below 380 nm rising steeply to 10 m above 420 nm (nearly transparent to its emission)."""
    if wavelength_nm <= 380.0:
        return 0.5
    if wavelength_nm >= 420.0:
        return 10_000.0
    return 0.5 * math.pow(20_000.0, (wavelength_nm - 380.0) / 40.0)


def wls_emission(wavelength_nm: float) -> float:
    """Relative emission spectrum (Geant4 normalises it): a Gaussian at 450 nm, sigma 20 nm, 400-520 nm."""
    if not 400.0 <= wavelength_nm <= 520.0:
        return 0.0
    return math.exp(-0.5 * ((wavelength_nm - 450.0) / 20.0) ** 2)


# ---------------------------------------------------------------- analytic helpers for meta.json


def fresnel_normal(n1: float, n2: float) -> float:
    """Reflectance at normal incidence."""
    return ((n1 - n2) / (n1 + n2)) ** 2


def fresnel_rs_rp(n1: float, n2: float, theta_i: float) -> tuple[float, float]:
    """s and p reflectances at incidence angle ``theta_i`` (rad); 1, 1 beyond the critical angle."""
    s = n1 * math.sin(theta_i) / n2
    if s >= 1.0:
        return 1.0, 1.0
    theta_t = math.asin(s)
    ci, ct = math.cos(theta_i), math.cos(theta_t)
    rs = ((n1 * ci - n2 * ct) / (n1 * ci + n2 * ct)) ** 2
    rp = ((n1 * ct - n2 * ci) / (n1 * ct + n2 * ci)) ** 2
    return rs, rp


def disk_solid_angle(distance: float, radius: float) -> float:
    """Solid angle of a disk of ``radius`` seen on its axis from ``distance``."""
    return 2.0 * math.pi * (1.0 - distance / math.hypot(distance, radius))


def spheroid_solid_angle(distance: float, a: float, c: float) -> float:
    """Solid angle of an oblate spheroid (semi-axes a, a, c) seen on its axis from ``distance`` > c.

    The tangent cone from (0, 0, D) touches x²/a² + z²/c² = 1 at z = c²/D; its half-angle alpha has
    tan(alpha) = a / sqrt(D² - c²). For the front half of the spheroid this is also the solid angle of
    the dome (the tangent circle lies on the dome for D > c).
    """
    d2 = distance * distance - c * c
    return 2.0 * math.pi * (1.0 - math.sqrt(d2) / math.sqrt(d2 + a * a))
