"""Parametric detectors: the built-in reference sphere, spheres and cylinders with PMT lattices."""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt

from charon.engine.detector.analytic import PMTArray, Vessel
from charon.engine.detector.model import Detector, Material, Surface, WavelengthTable
from charon.errors import DetectorError

F64 = npt.NDArray[np.float64]


def fibonacci_sphere(n: int) -> F64:
    """``n`` unit vectors on a Fibonacci (golden-angle) lattice, z from near +1 to near -1."""
    i = np.arange(n, dtype=np.float64)
    z = 1.0 - (2.0 * i + 1.0) / n
    r = np.sqrt(np.maximum(0.0, 1.0 - z * z))
    golden = math.pi * (3.0 - math.sqrt(5.0))
    phi = golden * i
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


REFERENCE_RADIUS_MM = 6000.0
REFERENCE_PMTS = 3000
REFERENCE_PMT_RADIUS_MM = 160.0
REFERENCE_QE = 0.25
REFERENCE_N = 1.33
REFERENCE_ABSORPTION_MM = 30_000.0
REFERENCE_SCATTERING_MM = 50_000.0


def water(absorption_length_mm: float = REFERENCE_ABSORPTION_MM,
          scattering_length_mm: float = REFERENCE_SCATTERING_MM, index: float = REFERENCE_N) -> Material:
    """Water with flat optics (n = 1.33, 30 m absorption, 50 m Rayleigh by default), no reemission."""
    return Material("water", WavelengthTable.flat(index), WavelengthTable.flat(absorption_length_mm),
                    WavelengthTable.flat(scattering_length_mm))


def sphere_detector(*, radius: float = REFERENCE_RADIUS_MM, n_pmts: int = REFERENCE_PMTS,
                    pmt_radius: float = REFERENCE_PMT_RADIUS_MM, qe: float = REFERENCE_QE,
                    inner: Material | None = None, wall_surface: Surface | None = None,
                    name: str = "sphere") -> Detector:
    """A sphere of ``inner`` (default: reference water) with PMT caps on a Fibonacci lattice.

    The wall outside the photocathodes is a black absorber unless ``wall_surface`` says otherwise;
    photocathodes detect with probability ``qe`` and absorb the rest.
    """
    inner = inner or water()
    outer = Material("vacuum", WavelengthTable.flat(1.0), WavelengthTable.flat(math.inf),
                     WavelengthTable.flat(math.inf))
    if inner.name == outer.name:
        raise DetectorError("the inner material must not be called 'vacuum'")
    wall = wall_surface or Surface("black", absorb=WavelengthTable.flat(1.0))
    cathode = Surface("photocathode", detect=WavelengthTable.flat(qe), absorb=WavelengthTable.flat(1.0 - qe))
    u = fibonacci_sphere(n_pmts)
    pmts = PMTArray(positions=u * radius, normals=-u, radius=pmt_radius, surface=cathode.name,
                    channel_type=np.zeros(n_pmts, dtype=np.int32), shape="cap")
    return Detector(name=name, materials={inner.name: inner, outer.name: outer},
                    surfaces={wall.name: wall, cathode.name: cathode},
                    vessel=Vessel("sphere", radius, inner.name, outer.name, surface=wall.name), pmts=pmts)


def cylinder_detector(*, radius: float, half_height: float, pmt_radius: float, barrel_rings: int,
                      barrel_columns: int, cap_pitch: float, qe: float = REFERENCE_QE,
                      inner: Material | None = None, wall_surface: Surface | None = None,
                      name: str = "cylinder") -> Detector:
    """A z-axis cylinder with PMT patches on the barrel (rings x columns) and on both end caps
    (square grid of ``cap_pitch`` mm, channel type 1 for end caps, 0 for the barrel).
    """
    inner = inner or water()
    outer = Material("vacuum", WavelengthTable.flat(1.0), WavelengthTable.flat(math.inf),
                     WavelengthTable.flat(math.inf))
    wall = wall_surface or Surface("black", absorb=WavelengthTable.flat(1.0))
    cathode = Surface("photocathode", detect=WavelengthTable.flat(qe), absorb=WavelengthTable.flat(1.0 - qe))
    z = (np.arange(barrel_rings) + 0.5) / barrel_rings * 2.0 * (half_height - pmt_radius) \
        - (half_height - pmt_radius)
    phi = (np.arange(barrel_columns) + 0.5) / barrel_columns * 2.0 * math.pi
    zz, pp = np.meshgrid(z, phi, indexing="ij")
    barrel = np.stack([radius * np.cos(pp).ravel(), radius * np.sin(pp).ravel(), zz.ravel()], axis=1)
    barrel_n = np.stack([-np.cos(pp).ravel(), -np.sin(pp).ravel(), np.zeros(zz.size)], axis=1)
    g = np.arange(-radius, radius + cap_pitch, cap_pitch)
    gx, gy = np.meshgrid(g, g, indexing="ij")
    ok = np.hypot(gx, gy) + pmt_radius <= radius
    cap_xy = np.stack([gx[ok], gy[ok]], axis=1)
    parts = [barrel]
    normals = [barrel_n]
    types = [np.zeros(barrel.shape[0], np.int32)]
    for sign in (1.0, -1.0):
        parts.append(np.column_stack([cap_xy, np.full(cap_xy.shape[0], sign * half_height)]))
        normals.append(np.tile([0.0, 0.0, -sign], (cap_xy.shape[0], 1)))
        types.append(np.ones(cap_xy.shape[0], np.int32))
    pmts = PMTArray(positions=np.concatenate(parts), normals=np.concatenate(normals), radius=pmt_radius,
                    surface=cathode.name, channel_type=np.concatenate(types), shape="cap")
    return Detector(name=name, materials={inner.name: inner, outer.name: outer},
                    surfaces={wall.name: wall, cathode.name: cathode},
                    vessel=Vessel("cylinder", radius, inner.name, outer.name, surface=wall.name,
                                  half_height=half_height), pmts=pmts)


@functools.cache
def reference_detector() -> Detector:
    """The built-in reference: 6 m water sphere, 3000 PMT caps of 160 mm radius, QE 0.25."""
    return sphere_detector(name="charon-reference")
