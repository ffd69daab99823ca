"""Optical physics formulas shared by the photon engines, as plain vectorised numpy functions.

These are the NumPy engine's building blocks and the reference the compiled kernels are tested
against: every engine applies the same formulas. All vectors are float64 arrays of shape (N, 3);
unit vectors in, unit vectors out.

Random numbers depend only on the photon, never on the batch, chunk, thread or device that
simulates it. Every engine keys a photon's stream by (seed, event, photon index), where the event
is its id *and a digest of its photon data* (:func:`photons_digest`): RAT restarts event ids at
every run, and with ids alone every run would draw the same numbers; identical resends keep
identical digests, so they still give identical hits. The NumPy engine draws counter-based
numbers (``uniform(key, counter)`` hashes a 64-bit per-photon key with a draw counter through
splitmix64's finaliser, "mix64", which any back end with wrapping 64-bit arithmetic computes bit
for bit); the Warp engine seeds Warp's own per-thread generator from the same event key, so the
two engines agree statistically, not number for number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
U64 = npt.NDArray[np.uint64]
B = npt.NDArray[np.bool_]

#: Speed of light in vacuum, mm/ns.
SPEED_OF_LIGHT_MM_PER_NS: Final = 299.792458

_MASK64: Final = (1 << 64) - 1
GOLDEN: Final = 0x9E3779B97F4A7C15
_M1: Final = 0xBF58476D1CE4E5B9
_M2: Final = 0x94D049BB133111EB
_TWO_M53: Final = 2.0**-53


# ------------------------------------------------------------------------------------------ RNG


def mix64_int(z: int) -> int:
    """splitmix64 finaliser on a Python int (mod 2**64)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _M1) & _MASK64
    z = ((z ^ (z >> 27)) * _M2) & _MASK64
    return z ^ (z >> 31)


def mix64(z: U64) -> U64:
    """splitmix64 finaliser, element-wise on a uint64 array (multiplications wrap mod 2**64)."""
    z = np.asarray(z, dtype=np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
    return np.asarray(z ^ (z >> np.uint64(31)))


def event_key(seed: int, event_id: int, digest: int = 0) -> int:
    """The 64-bit key of one event's photon streams:
    mix64(mix64(mix64(seed + GOLDEN) ^ event_id) ^ digest), ``digest`` from :func:`photons_digest`."""
    key = mix64_int(mix64_int(seed + GOLDEN) ^ (event_id & _MASK64))
    return mix64_int(key ^ (digest & _MASK64)) if digest else key


def photon_keys(seed: int, event_id: int, index: npt.ArrayLike, digest: int = 0) -> U64:
    """Per-photon keys: mix64(event_key + (index + 1) * GOLDEN)."""
    i = np.asarray(index, dtype=np.uint64).reshape(-1)
    base = np.full(i.shape, event_key(seed, event_id, digest), dtype=np.uint64)
    return mix64(base + (i + np.uint64(1)) * np.uint64(GOLDEN))


#: Bytes of each column, at each end, that enter an event's digest: cost independent of its size.
DIGEST_SAMPLE_BYTES: Final = 256


def photons_digest(columns: Sequence[npt.NDArray[Any]]) -> int:
    """A 64-bit digest of an event's photon columns (count and both ends of every column), never 0.

    Two events with the same id but different photons (a new run) get different streams; a resend
    of the same photons gets the same ones.
    """
    import hashlib

    h = hashlib.blake2b(digest_size=8)
    for col in columns:
        raw = (col if col.flags.c_contiguous else np.ascontiguousarray(col)).data.cast("B")
        h.update(len(raw).to_bytes(8, "little"))
        h.update(raw[:DIGEST_SAMPLE_BYTES])
        h.update(raw[-DIGEST_SAMPLE_BYTES:])
    return int.from_bytes(h.digest(), "little") or 1


def uniform(keys: U64, counter: int | npt.NDArray[np.integer[Any]]) -> F64:
    """Uniform numbers in the open interval (0, 1): ((mix64(key ^ (counter * GOLDEN)) >> 11) + 0.5) / 2**53.

    ``counter`` is the draw number (scalar or per photon); each (key, counter) pair gives one
    number, always the same one.
    """
    k = np.asarray(keys, dtype=np.uint64)
    if isinstance(counter, int):
        c = np.full(k.shape, (counter * GOLDEN) & _MASK64, dtype=np.uint64)
    else:
        c = np.asarray(counter, dtype=np.uint64) * np.uint64(GOLDEN)
    z = mix64(k ^ c)
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) * _TWO_M53


def exponential(u: F64, mean: F64 | float) -> F64:
    """Exponential variate with ``mean`` (may be inf) from uniform ``u`` in (0, 1)."""
    return np.asarray(-np.asarray(mean) * np.log(u), dtype=np.float64)


# -------------------------------------------------------------------------------- vector helpers


def dot(a: F64, b: F64) -> F64:
    return np.asarray(np.einsum("ij,ij->i", a, b), dtype=np.float64)


def normalize(v: F64) -> F64:
    n = np.sqrt(dot(v, v))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(v / n[:, None], dtype=np.float64)


def cross(a: F64, b: F64) -> F64:
    return np.asarray(np.cross(a, b), dtype=np.float64)


def orthonormal_basis(d: F64) -> tuple[F64, F64]:
    """Two unit vectors completing ``d`` to a right-handed orthonormal basis (Duff et al. 2017)."""
    x, y, z = d[:, 0], d[:, 1], d[:, 2]
    sign = np.where(z >= 0.0, 1.0, -1.0)
    a = -1.0 / (sign + z)
    b = x * y * a
    t1 = np.stack([1.0 + sign * x * x * a, sign * b, -sign * x], axis=1)
    t2 = np.stack([b, sign + y * y * a, -y], axis=1)
    return t1, t2


def isotropic(u1: F64, u2: F64) -> F64:
    """Uniform directions on the unit sphere: cos(theta) = 2 u1 - 1, phi = 2 pi u2."""
    z = 2.0 * u1 - 1.0
    r = np.sqrt(np.maximum(0.0, 1.0 - z * z))
    phi = 2.0 * math.pi * u2
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def random_perpendicular(d: F64, u: F64) -> F64:
    """A unit vector perpendicular to ``d`` at azimuth 2 pi u (a random linear polarisation)."""
    t1, t2 = orthonormal_basis(d)
    phi = 2.0 * math.pi * u
    return np.asarray(np.cos(phi)[:, None] * t1 + np.sin(phi)[:, None] * t2, dtype=np.float64)


def transverse_polarization(d: F64, pol: F64, u: F64) -> F64:
    """``pol`` made perpendicular to ``d`` and unit; a random one where that is undefined (|.| < 1e-6)."""
    e = pol - dot(pol, d)[:, None] * d
    n = np.sqrt(dot(e, e))
    bad = ~(n > 1e-6)
    with np.errstate(invalid="ignore", divide="ignore"):
        e = e / n[:, None]
    if np.any(bad):
        e[bad] = random_perpendicular(d[bad], u[bad])
    return np.asarray(e, dtype=np.float64)


# ---------------------------------------------------------------------------- wavelength tables


def interp_table(wavelength: npt.ArrayLike, table_wavelength: F64, table_value: F64) -> F64:
    """Linear interpolation in a wavelength table, clamped to its end values outside it."""
    return np.asarray(np.interp(np.asarray(wavelength, dtype=np.float64), table_wavelength, table_value),
                      dtype=np.float64)


def sample_cdf(u: F64, cdf_wavelength: F64, cdf_value: F64) -> F64:
    """Inverse-CDF sampling of a wavelength from a tabulated CDF (rising 0 -> 1), linear in between."""
    return np.asarray(np.interp(u, cdf_value, cdf_wavelength), dtype=np.float64)


# ----------------------------------------------------------------------------------- Rayleigh


def rayleigh_cos_psi(u: F64) -> F64:
    """cos(psi) with density (3/4)(1 - cos^2 psi) on [-1, 1]: psi is the angle between the
    scattered direction and the incident polarisation (dipole emission).

    The CDF (2 + 3c - c^3)/4 = u is a depressed cubic; its root in [-1, 1] is
    c = 2 cos((2 pi - acos(1 - 2u)) / 3).
    """
    c = 2.0 * np.cos((2.0 * math.pi - np.arccos(np.clip(1.0 - 2.0 * u, -1.0, 1.0))) / 3.0)
    return np.asarray(np.clip(c, -1.0, 1.0), dtype=np.float64)


def rayleigh_scatter(d: F64, pol: F64, u1: F64, u2: F64) -> tuple[F64, F64]:
    """Rayleigh (dipole) scattering of linearly polarised photons: (new direction, new polarisation).

    The new direction d' has density proportional to sin^2 of its angle to the old polarisation e;
    the new polarisation is the part of e perpendicular to d', normalised. Averaged over e (or over
    the azimuth around d, which is the same thing) the angle theta to the old direction follows
    1 + cos^2 theta, and light scattered at 90 degrees is polarised perpendicular to the
    scattering plane.
    """
    c = rayleigh_cos_psi(u1)
    s = np.sqrt(np.maximum(0.0, 1.0 - c * c))
    phi = 2.0 * math.pi * u2
    b = cross(pol, d)
    new_d = (c[:, None] * pol + (s * np.cos(phi))[:, None] * d + (s * np.sin(phi))[:, None] * b)
    new_d = normalize(new_d)
    e = pol - dot(pol, new_d)[:, None] * new_d
    n = np.sqrt(dot(e, e))
    degenerate = ~(n > 1e-9)
    with np.errstate(invalid="ignore", divide="ignore"):
        e = e / n[:, None]
    if np.any(degenerate):
        e[degenerate] = d[degenerate]  # d' = +-e: the old direction is perpendicular to d'
    return new_d, np.asarray(e, dtype=np.float64)


# ------------------------------------------------------------------------------------- Fresnel


def fresnel_reflectance(cos_i: F64, n1: F64 | float, n2: F64 | float) -> tuple[F64, F64, F64, B]:
    """Fresnel power reflectances (R_s, R_p), cos of the refraction angle, and the TIR mask.

    ``cos_i`` is the cosine of the angle of incidence (>= 0) going from index ``n1`` to ``n2``.
    Under total internal reflection R_s = R_p = 1 and cos_t = 0.
    """
    ci = np.clip(np.asarray(cos_i, dtype=np.float64), 0.0, 1.0)
    eta = np.asarray(n1, dtype=np.float64) / np.asarray(n2, dtype=np.float64)
    sin_t2 = eta * eta * (1.0 - ci * ci)
    tir = sin_t2 > 1.0
    ct = np.sqrt(np.maximum(0.0, 1.0 - sin_t2))
    a1, a2 = np.asarray(n1, dtype=np.float64), np.asarray(n2, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rs = (a1 * ci - a2 * ct) / (a1 * ci + a2 * ct)
        rp = (a2 * ci - a1 * ct) / (a2 * ci + a1 * ct)
    r_s = np.where(tir, 1.0, rs * rs)
    r_p = np.where(tir, 1.0, rp * rp)
    return (np.asarray(r_s, np.float64), np.asarray(r_p, np.float64), np.asarray(np.where(tir, 0.0, ct)),
            np.asarray(tir))


def fresnel(d: F64, pol: F64, normal: F64, n1: F64 | float, n2: F64 | float, u_pol: F64,
            u_reflect: F64) -> tuple[F64, F64, B]:
    """Reflection or refraction at a dielectric boundary, with polarisation (as Chroma does it).

    ``normal`` points back into the medium the photon comes from (d . normal < 0). The photon's
    polarisation is projected on the s (perpendicular to the plane of incidence) and p directions
    and collapses to s with probability (pol . s)^2 (draw ``u_pol``); it is then reflected with that
    component's reflectance R_s or R_p (draw ``u_reflect``), always under total internal
    reflection. Returns (new direction, new polarisation, reflected mask).
    """
    cos_i = np.clip(-dot(d, normal), 0.0, 1.0)
    r_s, r_p, cos_t, _tir = fresnel_reflectance(cos_i, n1, n2)
    s_dir = cross(d, normal)
    s_len = np.sqrt(dot(s_dir, s_dir))
    at_normal = s_len < 1e-9
    with np.errstate(invalid="ignore", divide="ignore"):
        s_dir = s_dir / s_len[:, None]
    if np.any(at_normal):
        s_dir[at_normal] = pol[at_normal]  # no plane of incidence: any transverse axis is "s"
    proj = dot(pol, s_dir)
    is_s = u_pol < proj * proj
    refl_p = np.where(is_s, r_s, r_p)
    reflected = u_reflect < refl_p
    eta = np.asarray(n1, dtype=np.float64) / np.asarray(n2, dtype=np.float64)
    eta_b = np.broadcast_to(eta, cos_i.shape)
    refl_d = d + (2.0 * cos_i)[:, None] * normal
    refr_d = eta_b[:, None] * d + (eta_b * cos_i - cos_t)[:, None] * normal
    new_d = normalize(np.where(reflected[:, None], refl_d, refr_d))
    p_dir = normalize(cross(s_dir, new_d))
    new_pol = np.where(is_s[:, None], s_dir, p_dir)
    return new_d, np.asarray(new_pol, dtype=np.float64), np.asarray(reflected)


# ------------------------------------------------------------------------------------ surfaces


def specular_reflect(d: F64, pol: F64, normal: F64) -> tuple[F64, F64]:
    """Mirror reflection of direction and polarisation about the plane with unit ``normal``."""
    new_d = d - (2.0 * dot(d, normal))[:, None] * normal
    new_pol = pol - (2.0 * dot(pol, normal))[:, None] * normal
    return normalize(new_d), normalize(new_pol)


def lambertian(normal: F64, u1: F64, u2: F64, u3: F64) -> tuple[F64, F64]:
    """Diffuse (cosine-weighted) reflection into the hemisphere of ``normal``; random polarisation."""
    cos_t = np.sqrt(u1)
    sin_t = np.sqrt(np.maximum(0.0, 1.0 - u1))
    phi = 2.0 * math.pi * u2
    t1, t2 = orthonormal_basis(normal)
    new_d = (cos_t[:, None] * normal + (sin_t * np.cos(phi))[:, None] * t1
             + (sin_t * np.sin(phi))[:, None] * t2)
    new_d = normalize(new_d)
    return new_d, random_perpendicular(new_d, u3)
