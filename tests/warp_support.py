"""Detectors and photon sources shared by the Warp engine tests (plain helpers, no fixtures)."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from charon.engine.base import Photons
from charon.engine.detector import (
    Detector,
    Material,
    PMTArray,
    Surface,
    Vessel,
    WavelengthTable,
)

WT = WavelengthTable
C_MM_PER_NS = 299.792458


def isotropic(n: int, seed: int) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    z = rng.uniform(-1.0, 1.0, n)
    phi = rng.uniform(0.0, 2.0 * math.pi, n)
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def point_source(n: int, *, event_id: int = 0, wavelength: float = 420.0, time: float = 0.0,
                 seed: int = 1, centre: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Photons:
    """``n`` isotropic photons from ``centre`` with zero (= random) polarisation."""
    d = isotropic(n, seed)
    return Photons.from_arrays(event_id, np.tile(np.asarray(centre, float), (n, 1)), d, np.zeros((n, 3)),
                               wavelength, time)


def beam(n: int, pos: tuple[float, float, float], direction: tuple[float, float, float],
         pol: tuple[float, float, float] | None, *, event_id: int = 0, wavelength: float = 420.0) -> Photons:
    """``n`` identical photons; ``pol=None`` gives each a random transverse polarisation."""
    d = np.tile(np.asarray(direction, float), (n, 1))
    if pol is None:
        rng = np.random.default_rng(5)
        a = rng.normal(size=(n, 3))
        p = a - (a * d).sum(1, keepdims=True) * d
        p /= np.linalg.norm(p, axis=1, keepdims=True)
    else:
        p = np.tile(np.asarray(pol, float), (n, 1))
    return Photons.from_arrays(event_id, np.tile(np.asarray(pos, float), (n, 1)), d, p, wavelength)


def ball(*, n_in: float, n_out: float, radius: float = 1000.0, inner: Material | None = None) -> Detector:
    """A sphere of index ``n_in`` in a world of ``n_out``, bare wall (Fresnel), one small PMT at +z."""
    mat_in = inner or Material("glass", WT.flat(n_in), WT.flat(math.inf), WT.flat(math.inf))
    mats = {mat_in.name: mat_in,
            "vacuum": Material("vacuum", WT.flat(n_out), WT.flat(math.inf), WT.flat(math.inf))}
    u = np.array([[0.0, 0.0, 1.0]])
    pmts = PMTArray(positions=u * radius, normals=-u, radius=0.01 * radius, surface="photocathode",
                    channel_type=np.zeros(1, np.int32))
    return Detector("ball", mats, {"photocathode": Surface("photocathode", detect=WT.flat(1.0))},
                    Vessel("sphere", radius, mat_in.name, "vacuum", surface=None), pmts)


def chi2_two_sample(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> tuple[float, int]:
    """Two-sample chi2 of equal-size histograms (bins with entries only) and its degrees of freedom."""
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    m = (a + b) > 0
    chi2 = float((((a - b) ** 2)[m] / (a + b)[m]).sum())
    return chi2, int(m.sum())


def chi2_limit(ndf: int, sigmas: float = 4.0) -> float:
    """Upper acceptance for chi2 with ``ndf`` degrees of freedom: ndf + sigmas * sqrt(2 ndf)."""
    return ndf + sigmas * math.sqrt(2.0 * ndf)
