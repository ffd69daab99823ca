"""Conversion between FlukaIO particles and charon photons/hits, vectorised with numpy.

A batch of PART messages is viewed as a numpy structured array whose packed dtype is the whole
message (header included), so decoding and encoding a batch is one ``frombuffer``/``tobytes``.
The unit and field mapping is the table in proto-spec/flukaio.md:

* photons: current layout ``pdgid == 22``; legacy layout (no pdgid) ``m == 0, aa == 0, zz == 0``;
* position cm -> mm; direction cosines normalised; time s -> ns;
* ``gen``: the library calls it the particle generation, and trackers (xcoll) write the parent
  id there (1, 2, 3, ...), so by default only its origin bits (CHERENKOV, SCINTILLATION) become
  photon flags; with ``gen_flags`` the whole field is taken as Chroma history bits, and a photon
  carrying a terminal bit (NO_HIT, BULK_ABSORB, ...) is finished and not propagated;
* energy: trackers put the total energy in GeV into ``pc``; wavelength [nm] = hc / E with
  hc = 1239.84198 eV nm;
* not propagated, and counted by reason (:data:`NOT_PROPAGATED`): particles that are not
  photons, photons whose ``pc`` is not a finite positive energy, photons with a non-finite
  position or time or a direction that is not finite and non-zero, and finished photons;
* polarisation: the current layout's spin vector, made transverse to the direction; the legacy
  layout has none, and a spin that is zero or parallel to the direction carries none either, so
  those photons get a random transverse polarisation, drawn from a generator keyed by
  (seed, event id) so a rerun gives the same photons.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from charon.engine import optics
from charon.engine.base import DetectorInfo, Hits, Photons
from charon.flukaio.codec import Layout, MessageType, ParticleBlock
from charon.protocol.tokens import ORIGIN_FLAGS, TERMINAL_FLAGS

#: Planck constant times the speed of light, eV nm.
HC_EV_NM: Final = 1239.84198
PHOTON_PDGID: Final = 22
CM_TO_MM: Final = 10.0
S_TO_NS: Final = 1e9
GEV_TO_EV: Final = 1e9
#: Why a particle of a batch is not propagated, in the order they are tested (each particle
#: counts once, under the first reason that applies).
NOT_PROPAGATED: Final = ("not_photon", "bad_momentum", "bad_kinematics", "finished")

_HEADER = [("size", "<u2"), ("type", "u1"), ("id", "<u4"), ("gen", "<u4")]
_KINEMATICS = [(name, "<f8") for name in ("x", "y", "z", "tx", "ty", "tz", "m", "pc", "t")]
LEGACY_DTYPE: Final = np.dtype([*_HEADER, ("aa", "<u2"), ("zz", "<u2"), *_KINEMATICS, ("weight", "<f8")])
CURRENT_DTYPE: Final = np.dtype([*_HEADER, *_KINEMATICS, ("sx", "<f8"), ("sy", "<f8"), ("sz", "<f8"),
                                 ("pdgid", "<i4"), ("q", "<i2"), ("weight", "<f8")])
assert LEGACY_DTYPE.itemsize == Layout.LEGACY.value
assert CURRENT_DTYPE.itemsize == Layout.CURRENT.value

Records = npt.NDArray[np.void]
F64 = npt.NDArray[np.float64]


def dtype_of(layout: Layout) -> np.dtype[np.void]:
    return LEGACY_DTYPE if layout is Layout.LEGACY else CURRENT_DTYPE


def records(blocks: Sequence[ParticleBlock], layout: Layout) -> Records:
    """All particles of a batch as one structured array (read-only views when there is one block)."""
    dtype = dtype_of(layout)
    if not blocks:
        return np.zeros(0, dtype)
    if len(blocks) == 1:
        return np.frombuffer(blocks[0].data, dtype)
    return np.frombuffer(b"".join(b.data for b in blocks), dtype)


def photon_mask(particles: Records, layout: Layout) -> npt.NDArray[np.bool_]:
    if layout is Layout.CURRENT:
        return np.asarray(particles["pdgid"] == PHOTON_PDGID)
    return np.asarray((particles["m"] == 0.0) & (particles["aa"] == 0) & (particles["zz"] == 0))


def _unit(v: F64) -> F64:
    """Unit vectors, scaled first so that tiny or huge finite components do not under/overflow."""
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.abs(v).max(axis=1, initial=0.0)
        return optics.normalize(v / scale[:, None])


def _flags(particles: Records, gen_flags: bool) -> npt.NDArray[np.uint32]:
    gen = np.asarray(particles["gen"], np.uint32)
    return gen if gen_flags else gen & np.uint32(int(ORIGIN_FLAGS))


def _reasons(particles: Records, layout: Layout, gen_flags: bool) -> list[npt.NDArray[np.bool_]]:
    """One mask per :data:`NOT_PROPAGATED` reason (a particle may match several).

    Checked on the values the engine would get (float32 mm, ns, nm), so nothing overflows later.
    """
    p = particles
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        wavelength = (HC_EV_NM / (p["pc"] * GEV_TO_EV)).astype(np.float32)
        where = np.stack([p["x"] * CM_TO_MM, p["y"] * CM_TO_MM, p["z"] * CM_TO_MM, p["t"] * S_TO_NS],
                         axis=1).astype(np.float32)
        direction = _unit(np.stack([p["tx"], p["ty"], p["tz"]], axis=1)).astype(np.float32)
        return [
            ~photon_mask(p, layout),
            ~(np.isfinite(wavelength) & (wavelength > 0)),
            ~(np.isfinite(where).all(axis=1) & np.isfinite(direction).all(axis=1)),
            (_flags(p, gen_flags) & np.uint32(int(TERMINAL_FLAGS))) != 0,
        ]


@dataclass(frozen=True, slots=True)
class Conversion:
    """A batch's photons to propagate, and how many particles were left out, by reason."""

    photons: Photons
    dropped: dict[str, int]

    @property
    def skipped(self) -> int:
        return sum(self.dropped.values())


def convert(particles: Records, layout: Layout, event_id: int, seed: int, *,
            gen_flags: bool = False) -> Conversion:
    """The propagatable photons among ``particles`` as one event, and the rest counted by reason."""
    keep = np.ones(len(particles), np.bool_)
    dropped: dict[str, int] = {}
    for reason, mask in zip(NOT_PROPAGATED, _reasons(particles, layout, gen_flags), strict=True):
        left_out = keep & mask
        dropped[reason] = int(np.count_nonzero(left_out))
        keep &= ~mask
    return Conversion(_photons(particles[keep], layout, event_id, seed, gen_flags), dropped)


def to_photons(particles: Records, layout: Layout, event_id: int, seed: int, *,
               gen_flags: bool = False) -> Photons:
    """The propagatable photons among ``particles`` (see :func:`convert`) as one event."""
    return convert(particles, layout, event_id, seed, gen_flags=gen_flags).photons


def _photons(p: Records, layout: Layout, event_id: int, seed: int, gen_flags: bool) -> Photons:
    pos = np.stack([p["x"], p["y"], p["z"]], axis=1) * CM_TO_MM
    direction = _unit(np.stack([p["tx"], p["ty"], p["tz"]], axis=1))
    if layout is Layout.CURRENT:
        spin = _unit(np.stack([p["sx"], p["sy"], p["sz"]], axis=1))
    else:
        spin = np.zeros_like(direction)
    # A spin that is missing, zero or along the direction gets a random transverse polarisation.
    azimuth = np.random.default_rng([seed, event_id]).uniform(0.0, 1.0, len(p))
    pol = optics.transverse_polarization(np.nan_to_num(direction), np.nan_to_num(spin), azimuth)
    wavelength = HC_EV_NM / (p["pc"] * GEV_TO_EV)
    return Photons.from_arrays(event_id, pos, direction, pol, wavelength, p["t"] * S_TO_NS,
                               _flags(p, gen_flags))


def hits_to_bytes(hits: Hits, info: DetectorInfo, layout: Layout) -> bytes:
    """The hits as consecutive PART messages: id = channel, gen = flags, position = the PMT's."""
    n = len(hits)
    out = np.zeros(n, dtype_of(layout))
    if n == 0:
        return b""
    channel = np.asarray(hits.channel, dtype=np.int64)
    if int(channel.max()) >= len(info) or int(channel.min()) < 0:
        raise ValueError(f"hit channel {int(channel.max())} outside the detector's {len(info)} channels")
    out["size"] = layout.value
    out["type"] = MessageType.PART
    out["id"] = hits.channel
    out["gen"] = hits.flags
    out["x"] = np.asarray(info.x, np.float64)[channel] / CM_TO_MM
    out["y"] = np.asarray(info.y, np.float64)[channel] / CM_TO_MM
    out["z"] = np.asarray(info.z, np.float64)[channel] / CM_TO_MM
    out["tx"], out["ty"], out["tz"] = hits.dx, hits.dy, hits.dz
    wavelength = np.asarray(hits.wavelength, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["pc"] = np.where(wavelength > 0, HC_EV_NM / wavelength / GEV_TO_EV, 0.0)
    out["t"] = np.asarray(hits.time, np.float64) / S_TO_NS
    out["weight"] = 1.0
    if layout is Layout.CURRENT:
        out["sx"], out["sy"], out["sz"] = hits.polx, hits.poly, hits.polz
        out["pdgid"] = PHOTON_PDGID
    return out.tobytes()
