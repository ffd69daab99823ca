"""The detector model every built-in engine simulates: materials, surfaces, vessel and PMTs.

A detector is plain data (frozen dataclasses holding numpy arrays) so that engines on different
back ends (NumPy, Warp on CPU or CUDA) read one definition, and so that its canonical form can be
hashed into the fingerprint that DETECTOR_INFO and the router's pool check rely on.

Geometry is analytic: a sphere or a z-axis cylinder centred on the origin (the *vessel*) filled with
one material and surrounded by another, plus PMTs whose photocathodes are patches of the vessel
wall. A photocathode is the part of the wall inside a cylinder of radius ``radius`` around the PMT
axis (``position``, inward ``normal``): on a sphere a spherical cap whose rim has radius
``radius``, on a flat end cap a disk. An optional triangle ``mesh`` (``charon.engine.mesh``) may
carry the same detector in mesh form for engines that trace triangles; it enters the fingerprint
through its ``to_canonical()`` hook.

Units: mm, nm, ns. Wavelength tables are linearly interpolated and clamped at their ends.

File format (``save_detector`` / ``load_detector``): an uncompressed ``.npz`` holding a JSON
header in the array ``header`` (uint8 bytes, ``{"format": "charon-detector", "version": 1, ...}``)
and every table and PMT array under a ``/``-separated name; see docs/physics.md.
"""

from __future__ import annotations

import functools
import json
import math
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from charon.engine.base import DetectorInfo, fingerprint_of
from charon.engine.optics import interp_table
from charon.errors import DetectorError

F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]

FILE_FORMAT = "charon-detector"
FILE_VERSION = 1
#: Distance (mm) within which a PMT centre must lie on the vessel wall, and normal tolerance.
PLACEMENT_TOLERANCE_MM = 1e-3
NORMAL_TOLERANCE = 1e-6


# --------------------------------------------------------------------------------------- tables


@dataclass(frozen=True, eq=False)
class WavelengthTable:
    """A quantity tabulated against wavelength (nm, strictly increasing), linear in between."""

    wavelength: F64
    value: F64

    def __post_init__(self) -> None:
        wl = np.array(self.wavelength, dtype=np.float64, copy=True).reshape(-1)
        val = np.array(self.value, dtype=np.float64, copy=True).reshape(-1)
        if wl.size == 0 or wl.shape != val.shape:
            raise DetectorError(f"wavelength table needs equal non-empty wavelength and value arrays, "
                                f"got {wl.size} and {val.size} entries")
        if not np.all(np.isfinite(wl)) or np.any(wl <= 0) or np.any(np.diff(wl) <= 0):
            raise DetectorError("wavelength table: wavelengths must be finite, > 0 nm and strictly increasing")
        if np.any(np.isnan(val)):
            raise DetectorError("wavelength table: values must not be NaN")
        wl.flags.writeable = False
        val.flags.writeable = False
        object.__setattr__(self, "wavelength", wl)
        object.__setattr__(self, "value", val)

    @classmethod
    def flat(cls, value: float, lo: float = 200.0, hi: float = 800.0) -> WavelengthTable:
        """The same value at every wavelength (tabulated at ``lo`` and ``hi`` nm)."""
        return cls(np.array([lo, hi]), np.array([value, value], dtype=np.float64))

    @property
    def is_flat(self) -> bool:
        return bool(np.all(self.value == self.value[0]))

    def __call__(self, wavelength: npt.ArrayLike) -> F64:
        """Interpolated values at ``wavelength`` (nm); clamped outside the table."""
        if self.is_flat:
            return np.full(np.shape(wavelength), self.value[0])
        return interp_table(wavelength, self.wavelength, self.value)

    def _check_range(self, what: str, lo: float, hi: float, *, lo_open: bool = False) -> None:
        v = self.value
        bad = (v <= lo) if lo_open else (v < lo)
        if np.any(bad) or np.any(v > hi):
            interval = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
            raise DetectorError(f"{what}: values must lie in {interval}")


# ------------------------------------------------------------------------------------ materials


@dataclass(frozen=True, eq=False)
class Material:
    """Bulk optics of one medium.

    ``absorption_length`` and ``scattering_length`` (Rayleigh) are mean free paths in mm and may be
    ``inf``. On absorption a photon is re-emitted with probability ``reemission_prob``, with a new
    wavelength drawn from ``reemission_cdf`` (cumulative distribution over wavelength, rising from
    0 to 1) after an exponential delay of mean ``reemission_time_ns``.
    """

    name: str
    refractive_index: WavelengthTable
    absorption_length: WavelengthTable
    scattering_length: WavelengthTable
    reemission_prob: WavelengthTable = field(default_factory=lambda: WavelengthTable.flat(0.0))
    reemission_cdf: WavelengthTable | None = None
    reemission_time_ns: float = 0.0

    def __post_init__(self) -> None:
        where = f"material {self.name!r}"
        if not self.name or "/" in self.name:
            raise DetectorError(f"{where}: name must be non-empty and contain no '/'")
        self.refractive_index._check_range(f"{where} refractive_index", 0.0, 100.0, lo_open=True)
        if not np.all(np.isfinite(self.refractive_index.value)):
            raise DetectorError(f"{where} refractive_index: values must be finite")
        self.absorption_length._check_range(f"{where} absorption_length (mm)", 0.0, math.inf, lo_open=True)
        self.scattering_length._check_range(f"{where} scattering_length (mm)", 0.0, math.inf, lo_open=True)
        self.reemission_prob._check_range(f"{where} reemission_prob", 0.0, 1.0)
        if not math.isfinite(self.reemission_time_ns) or self.reemission_time_ns < 0:
            raise DetectorError(f"{where}: reemission_time_ns must be finite and >= 0")
        if np.any(self.reemission_prob.value > 0):
            cdf = self.reemission_cdf
            if cdf is None:
                raise DetectorError(f"{where}: reemission_prob > 0 needs a reemission_cdf")
            if (cdf.value.size < 2 or np.any(np.diff(cdf.value) < 0) or cdf.value[0] != 0.0
                    or cdf.value[-1] != 1.0):
                raise DetectorError(f"{where} reemission_cdf: values must rise monotonically from 0 to 1")

    @property
    def reemits(self) -> bool:
        return bool(np.any(self.reemission_prob.value > 0))


# ------------------------------------------------------------------------------------- surfaces


SURFACE_TABLES = ("detect", "absorb", "reflect_diffuse", "reflect_specular")


@dataclass(frozen=True, eq=False)
class Surface:
    """Probabilities, by wavelength, of what a photon does on reaching a surface.

    They are drawn in the order absorb, detect, reflect_diffuse, reflect_specular; the remaining
    probability (1 - their sum) goes to Fresnel reflection/refraction between the two materials.
    """

    name: str
    detect: WavelengthTable = field(default_factory=lambda: WavelengthTable.flat(0.0))
    absorb: WavelengthTable = field(default_factory=lambda: WavelengthTable.flat(0.0))
    reflect_diffuse: WavelengthTable = field(default_factory=lambda: WavelengthTable.flat(0.0))
    reflect_specular: WavelengthTable = field(default_factory=lambda: WavelengthTable.flat(0.0))

    def __post_init__(self) -> None:
        where = f"surface {self.name!r}"
        if not self.name or "/" in self.name:
            raise DetectorError(f"{where}: name must be non-empty and contain no '/'")
        for what in SURFACE_TABLES:
            getattr(self, what)._check_range(f"{where} {what}", 0.0, 1.0)
        grid = np.unique(np.concatenate([getattr(self, t).wavelength for t in SURFACE_TABLES]))
        total = sum(getattr(self, t)(grid) for t in SURFACE_TABLES)
        if np.any(total > 1.0 + 1e-9):
            raise DetectorError(f"{where}: detect + absorb + reflect_diffuse + reflect_specular exceeds 1")


# ------------------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Vessel:
    """The detector volume, centred on the origin: a sphere, or a cylinder along z.

    ``surface`` names the optical surface covering the whole wall (outside the photocathodes);
    ``None`` means a bare dielectric boundary (Fresnel) between ``inner_material`` and
    ``outer_material``. Photons that cross into the outer material leave the detector (NO_HIT).
    """

    shape: Literal["sphere", "cylinder"]
    radius: float
    inner_material: str
    outer_material: str
    surface: str | None = None
    half_height: float | None = None

    def __post_init__(self) -> None:
        if self.shape not in ("sphere", "cylinder"):
            raise DetectorError(f"vessel shape must be 'sphere' or 'cylinder', got {self.shape!r}")
        if not (math.isfinite(self.radius) and self.radius > 0):
            raise DetectorError(f"vessel radius must be a finite number > 0 mm, got {self.radius!r}")
        if self.shape == "cylinder":
            if self.half_height is None or not (math.isfinite(self.half_height) and self.half_height > 0):
                raise DetectorError("cylinder vessel needs a finite half_height > 0 mm")
        elif self.half_height is not None:
            raise DetectorError("sphere vessel takes no half_height")

    def canonical(self) -> dict[str, Any]:
        return {"shape": self.shape, "radius": float(self.radius),
                "half_height": None if self.half_height is None else float(self.half_height),
                "inner_material": self.inner_material, "outer_material": self.outer_material,
                "surface": self.surface}

    def wall_normal(self, points: F64) -> F64:
        """Outward unit normal of the wall at ``points`` (N, 3) lying on it."""
        p = np.asarray(points, dtype=np.float64)
        if self.shape == "sphere":
            return np.asarray(p / np.sqrt(np.einsum("ij,ij->i", p, p))[:, None], dtype=np.float64)
        assert self.half_height is not None
        rho = np.hypot(p[:, 0], p[:, 1])
        on_cap = np.abs(p[:, 2]) - self.half_height >= rho - self.radius
        out = np.zeros_like(p)
        out[:, 0] = np.where(on_cap, 0.0, p[:, 0] / np.where(rho > 0, rho, 1.0))
        out[:, 1] = np.where(on_cap, 0.0, p[:, 1] / np.where(rho > 0, rho, 1.0))
        out[:, 2] = np.where(on_cap, np.sign(p[:, 2]), 0.0)
        return out

    def distance_to_wall(self, points: F64) -> F64:
        """Signed distance of ``points`` from the wall (> 0 outside), exact for the sphere."""
        p = np.asarray(points, dtype=np.float64)
        if self.shape == "sphere":
            return np.asarray(np.sqrt(np.einsum("ij,ij->i", p, p)) - self.radius, dtype=np.float64)
        assert self.half_height is not None
        d_side = np.hypot(p[:, 0], p[:, 1]) - self.radius
        d_cap = np.abs(p[:, 2]) - self.half_height
        return np.asarray(np.maximum(d_side, d_cap))


@dataclass(frozen=True, eq=False)
class PMTArray:
    """The PMTs (channels), indexed by channel id.

    ``positions`` (P, 3) mm: photocathode centres on the vessel wall; ``normals`` (P, 3): inward
    unit normals of the wall there; ``radius`` (mm): photocathode aperture radius; ``shape``:
    "cap" (the patch follows the wall: a spherical cap on a sphere) or "disk" (a flat disk, which
    the analytic geometry allows only on a flat wall, where it equals the patch).
    """

    positions: F64
    normals: F64
    radius: float
    surface: str
    channel_type: I32
    shape: Literal["cap", "disk"] = "cap"

    def __post_init__(self) -> None:
        pos = np.array(self.positions, dtype=np.float64, copy=True)
        nrm = np.array(self.normals, dtype=np.float64, copy=True)
        typ = np.array(self.channel_type, copy=True)
        if pos.ndim != 2 or pos.shape[1] != 3 or nrm.shape != pos.shape:
            raise DetectorError(f"PMT positions and normals must both be (P, 3) arrays, got {pos.shape} "
                                f"and {nrm.shape}")
        if pos.shape[0] == 0:
            raise DetectorError("a detector needs at least one PMT")
        if typ.shape != (pos.shape[0],) or not np.issubdtype(typ.dtype, np.integer):
            raise DetectorError(f"PMT channel_type must be {pos.shape[0]} integers")
        if np.any(typ < -(2**31)) or np.any(typ >= 2**31):
            raise DetectorError("PMT channel_type must fit in int32")
        if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(nrm))):
            raise DetectorError("PMT positions and normals must be finite")
        if np.any(np.abs(np.linalg.norm(nrm, axis=1) - 1.0) > NORMAL_TOLERANCE):
            raise DetectorError("PMT normals must be unit vectors")
        if not (math.isfinite(self.radius) and self.radius > 0):
            raise DetectorError(f"PMT radius must be a finite number > 0 mm, got {self.radius!r}")
        if self.shape not in ("cap", "disk"):
            raise DetectorError(f"PMT shape must be 'cap' or 'disk', got {self.shape!r}")
        for a in (pos, nrm):
            a.flags.writeable = False
        typ = typ.astype(np.int32)
        typ.flags.writeable = False
        object.__setattr__(self, "positions", pos)
        object.__setattr__(self, "normals", nrm)
        object.__setattr__(self, "channel_type", typ)

    def __len__(self) -> int:
        return int(self.positions.shape[0])


@runtime_checkable
class CanonicalForm(Protocol):
    """What a mesh attached to a detector must offer so that it enters the fingerprint and the file."""

    def to_canonical(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]: ...


# ------------------------------------------------------------------------------------- detector


@dataclass(frozen=True, eq=False)
class Detector:
    """A complete detector: every engine input except the photons and the seed."""

    name: str
    #: By name; stored sorted by name, which is also their index order (see ``material_names``).
    materials: Mapping[str, Material]
    surfaces: Mapping[str, Surface]
    vessel: Vessel
    pmts: PMTArray
    #: Optional triangle-mesh form (``charon.engine.mesh.MeshGeometry``) for mesh-tracing engines.
    mesh: Any = None

    def __post_init__(self) -> None:
        mats = dict(self.materials)
        surfs = dict(self.surfaces)
        for key, m in mats.items():
            if key != m.name:
                raise DetectorError(f"material stored under {key!r} is named {m.name!r}")
        for key, s in surfs.items():
            if key != s.name:
                raise DetectorError(f"surface stored under {key!r} is named {s.name!r}")
        v = self.vessel
        for what, name in (("inner_material", v.inner_material), ("outer_material", v.outer_material)):
            if name not in mats:
                raise DetectorError(f"vessel {what} {name!r} is not a defined material "
                                    f"(defined: {sorted(mats)})")
        for what, sname in (("vessel surface", v.surface), ("PMT surface", self.pmts.surface)):
            if sname is not None and sname not in surfs:
                raise DetectorError(f"{what} {sname!r} is not a defined surface (defined: {sorted(surfs)})")
        object.__setattr__(self, "materials", {k: mats[k] for k in sorted(mats)})
        object.__setattr__(self, "surfaces", {k: surfs[k] for k in sorted(surfs)})
        if self.mesh is not None:
            if not isinstance(self.mesh, CanonicalForm):
                raise DetectorError("detector mesh must provide to_canonical()")
            check = getattr(self.mesh, "check_indices", None)
            if check is not None:
                try:
                    check(len(mats), len(surfs))
                except ValueError as exc:
                    raise DetectorError(f"mesh: {exc}") from None
        _check_pmt_placement(v, self.pmts)

    # -- public views -------------------------------------------------------------------------

    @property
    def n_channels(self) -> int:
        return len(self.pmts)

    @property
    def material_names(self) -> tuple[str, ...]:
        """Material names in index order (sorted): what mesh material indices refer to."""
        return tuple(self.materials)

    @property
    def surface_names(self) -> tuple[str, ...]:
        """Surface names in index order (sorted): what mesh surface indices refer to (-1 = none)."""
        return tuple(self.surfaces)

    def material_index(self, name: str) -> int:
        return self.material_names.index(name)

    def surface_index(self, name: str | None) -> int:
        return -1 if name is None else self.surface_names.index(name)

    def info(self) -> DetectorInfo:
        """Channel positions (float32 mm) and types (int32): the DETECTOR_INFO reply body."""
        pos = self.pmts.positions.astype(np.float32)
        return DetectorInfo(np.ascontiguousarray(pos[:, 0]), np.ascontiguousarray(pos[:, 1]),
                            np.ascontiguousarray(pos[:, 2]), self.pmts.channel_type.copy())

    def to_canonical(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        """The complete definition as (JSON-able dict, named arrays), the input of the fingerprint.

        The detector ``name`` is a label and stays out; everything that affects the physics is in.
        """
        arrays: dict[str, npt.NDArray[Any]] = {}
        materials: dict[str, Any] = {}
        for name in sorted(self.materials):
            m = self.materials[name]
            tables = ["refractive_index", "absorption_length", "scattering_length", "reemission_prob"]
            if m.reemission_cdf is not None:
                tables.append("reemission_cdf")
            for t in tables:
                tab: WavelengthTable = getattr(m, t)
                arrays[f"materials/{name}/{t}/wavelength"] = tab.wavelength
                arrays[f"materials/{name}/{t}/value"] = tab.value
            materials[name] = {"tables": tables, "reemission_time_ns": float(m.reemission_time_ns)}
        surfaces: dict[str, Any] = {}
        for name in sorted(self.surfaces):
            s = self.surfaces[name]
            for t in SURFACE_TABLES:
                tab = getattr(s, t)
                arrays[f"surfaces/{name}/{t}/wavelength"] = tab.wavelength
                arrays[f"surfaces/{name}/{t}/value"] = tab.value
            surfaces[name] = {"tables": list(SURFACE_TABLES)}
        arrays["pmts/positions"] = self.pmts.positions
        arrays["pmts/normals"] = self.pmts.normals
        arrays["pmts/channel_type"] = self.pmts.channel_type
        definition: dict[str, Any] = {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "materials": materials,
            "surfaces": surfaces,
            "vessel": self.vessel.canonical(),
            "pmts": {"radius": float(self.pmts.radius), "surface": self.pmts.surface,
                     "shape": self.pmts.shape, "count": len(self.pmts)},
            "mesh": None,
        }
        if self.mesh is not None:
            mesh_def, mesh_arrays = self.mesh.to_canonical()
            definition["mesh"] = mesh_def
            for k, a in mesh_arrays.items():
                arrays[f"mesh/{k}"] = np.asarray(a)
        return definition, arrays

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 over the canonical definition (geometry and every optical table)."""
        definition, arrays = self.to_canonical()
        return fingerprint_of(definition, arrays)

    @functools.cached_property
    def lookup(self) -> PMTLookup:
        """Exact hit-point -> channel lookup for points on the vessel wall."""
        return PMTLookup.build(self.vessel, self.pmts)

    def photocathode_solid_angle(self) -> float:
        """Solid angle (sr) the photocathodes subtend from the origin (sphere vessel: exact)."""
        if self.vessel.shape != "sphere":
            raise DetectorError("photocathode_solid_angle is defined for sphere vessels only")
        cos_a = math.sqrt(1.0 - (self.pmts.radius / self.vessel.radius) ** 2)
        return len(self.pmts) * 2.0 * math.pi * (1.0 - cos_a)

    def coverage(self) -> float:
        """Fraction of the full solid angle covered by photocathodes, seen from the centre."""
        return self.photocathode_solid_angle() / (4.0 * math.pi)


def _patch_max_depth(vessel: Vessel, radius: float) -> float:
    """Largest depth (along the PMT normal) of a photocathode patch of ``radius`` below its centre."""
    if radius >= vessel.radius:
        return math.inf
    return vessel.radius - math.sqrt(vessel.radius**2 - radius**2)


def _check_pmt_placement(vessel: Vessel, pmts: PMTArray) -> None:
    pos, nrm, r = pmts.positions, pmts.normals, pmts.radius
    if r >= 0.5 * vessel.radius:
        raise DetectorError(f"PMT radius {r} mm is too large for a vessel of radius {vessel.radius} mm")
    off = np.abs(vessel.distance_to_wall(pos))
    if np.any(off > PLACEMENT_TOLERANCE_MM):
        k = int(np.argmax(off))
        raise DetectorError(f"PMT {k} lies {off[k]:.3g} mm off the vessel wall (allowed "
                            f"{PLACEMENT_TOLERANCE_MM} mm)")
    inward = -vessel.wall_normal(pos)
    dev = np.linalg.norm(nrm - inward, axis=1)
    if np.any(dev > 1e-4):
        k = int(np.argmax(dev))
        raise DetectorError(f"PMT {k} normal is not the inward wall normal there")
    if vessel.shape == "cylinder":
        assert vessel.half_height is not None
        on_cap = np.abs(nrm[:, 2]) > 0.5
        if pmts.shape == "disk" and not np.all(on_cap):
            raise DetectorError("disk photocathodes need a flat wall: put them on the cylinder end caps "
                                "or use shape 'cap'")
        side = ~on_cap
        if np.any(np.abs(pos[side, 2]) + r > vessel.half_height):
            raise DetectorError("a barrel photocathode reaches over the cylinder edge")
        if np.any(np.hypot(pos[on_cap, 0], pos[on_cap, 1]) + r > vessel.radius):
            raise DetectorError("an end-cap photocathode reaches over the cylinder edge")
    elif pmts.shape == "disk":
        raise DetectorError("disk photocathodes need a flat wall; on a sphere use shape 'cap'")
    # Photocathodes must not overlap, so that a wall point belongs to at most one channel.
    if vessel.shape == "sphere":
        u = pos / np.linalg.norm(pos, axis=1, keepdims=True)
        min_cos = math.cos(2.0 * math.asin(r / vessel.radius))
        limit_kind = "angular"
    else:
        u = pos
        depth = _patch_max_depth(vessel, r)
        min_sep = 2.0 * math.hypot(r, depth)
        limit_kind = "distance"
    p = len(pmts)
    block = 512
    for start in range(0, p, block):
        a = u[start:start + block]
        if limit_kind == "angular":
            c = a @ u.T
            c[np.arange(a.shape[0]), np.arange(start, start + a.shape[0])] = -1.0
            bad = np.argwhere(c > min_cos + 1e-12)
        else:
            d2 = ((a[:, None, :] - u[None, :, :]) ** 2).sum(axis=2)
            d2[np.arange(a.shape[0]), np.arange(start, start + a.shape[0])] = np.inf
            bad = np.argwhere(d2 < min_sep**2)
        if bad.size:
            i, j = int(bad[0, 0]) + start, int(bad[0, 1])
            raise DetectorError(f"photocathodes of PMTs {i} and {j} overlap")


# --------------------------------------------------------------------------------------- lookup


@dataclass(frozen=True, eq=False)
class PMTLookup:
    """Hit point on the wall -> channel id, or -1 where the point is on no photocathode.

    A coarse grid over the direction of the point seen from the origin, (cos theta, phi) with
    ``n_u`` x ``n_phi`` equal-area cells, lists every PMT whose photocathode can reach into each
    cell (``candidates``, padded with -1). ``find`` then checks exactly, for each candidate, that
    the point lies within ``radius`` of the PMT axis and within ``max_depth`` of its centre along
    the normal; photocathodes do not overlap, so at most one candidate passes.
    """

    n_u: int
    n_phi: int
    candidates: I32  # (n_u * n_phi, K)
    #: Per cell: the channel whose photocathode covers the whole cell, -1 where no photocathode
    #: reaches into it, -2 where the exact check must decide.
    settled: I32
    positions: F64
    normals: F64
    radius: float
    max_depth: float

    @classmethod
    def build(cls, vessel: Vessel, pmts: PMTArray, cells_per_pmt: int = 160) -> PMTLookup:
        pos = pmts.positions
        p = len(pmts)
        n_u = max(8, int(math.sqrt(cells_per_pmt * p / 2.0)))
        n_phi = 2 * n_u
        r = pmts.radius
        depth = _patch_max_depth(vessel, r)
        dist = np.linalg.norm(pos, axis=1)
        # Every patch point lies within rho of its centre, hence within angle `ang` of the centre's
        # direction seen from the origin.
        rho = math.hypot(r, depth)
        ang = np.where(dist > rho, np.arcsin(np.clip(rho / np.maximum(dist, rho), 0.0, 1.0)) + 1e-9, math.pi)
        theta = np.arccos(np.clip(pos[:, 2] / dist, -1.0, 1.0))
        phi = np.arctan2(pos[:, 1], pos[:, 0])
        th_lo = np.maximum(theta - ang, 0.0)
        th_hi = np.minimum(theta + ang, math.pi)
        i_lo = np.clip(np.floor((np.cos(th_hi) + 1.0) * 0.5 * n_u).astype(np.int64) - 1, 0, n_u - 1)
        i_hi = np.clip(np.floor((np.cos(th_lo) + 1.0) * 0.5 * n_u).astype(np.int64) + 1, 0, n_u - 1)
        # Azimuthal half-width of the cone: asin(sin(ang) / sin(theta)) at its widest row; a cone
        # reaching a pole covers every phi.
        sin_min = np.sin(np.minimum(th_lo, math.pi - th_hi))
        full = (th_lo <= 0.0) | (th_hi >= math.pi) | (np.sin(ang) >= sin_min)
        half = np.arcsin(np.clip(np.sin(ang) / np.where(full, 1.0, sin_min), -1.0, 1.0))
        cell_w = 2.0 * math.pi / n_phi
        j_lo = np.floor((phi - half + math.pi) / cell_w).astype(np.int64) - 1
        j_hi = np.floor((phi + half + math.pi) / cell_w).astype(np.int64) + 1
        full |= (j_hi - j_lo + 1) >= n_phi
        j_lo = np.where(full, 0, j_lo)
        j_hi = np.where(full, n_phi - 1, j_hi)
        cells: list[npt.NDArray[np.int64]] = []
        owners: list[npt.NDArray[np.int64]] = []
        for k in range(p):
            ii = np.arange(i_lo[k], i_hi[k] + 1)
            jj = np.arange(j_lo[k], j_hi[k] + 1) % n_phi
            c = (ii[:, None] * n_phi + jj[None, :]).reshape(-1)
            cells.append(c)
            owners.append(np.full(c.shape[0], k, dtype=np.int64))
        cell = np.concatenate(cells)
        owner = np.concatenate(owners)
        if vessel.shape == "sphere":
            # Drop candidates whose cap misses the cell: the point of a (theta, phi) cell nearest an
            # axis is at the clamped azimuth difference and the clamped optimal polar angle.
            alpha = math.asin(r / vessel.radius)
            ci, cj = np.divmod(cell, n_phi)
            t_hi = np.arccos(np.clip(ci * (2.0 / n_u) - 1.0, -1.0, 1.0))
            t_lo = np.arccos(np.clip((ci + 1) * (2.0 / n_u) - 1.0, -1.0, 1.0))
            ph_lo = cj * cell_w - math.pi
            dphi = np.mod(phi[owner] - ph_lo, 2.0 * math.pi)
            dmin = np.where(dphi <= cell_w, 0.0, np.minimum(dphi - cell_w, 2.0 * math.pi - dphi))
            a_coef = np.cos(theta[owner])
            b_coef = np.sin(theta[owner]) * np.cos(np.minimum(dmin, math.pi))
            # A cos(t) + B sin(t) = R cos(t - t*): its maximum on [t_lo, t_hi] is at t* when t* lies
            # inside, else at an end.
            t_star = np.arctan2(b_coef, a_coef)
            nearest = np.maximum(a_coef * np.cos(t_lo) + b_coef * np.sin(t_lo),
                                 a_coef * np.cos(t_hi) + b_coef * np.sin(t_hi))
            nearest = np.where((t_star >= t_lo) & (t_star <= t_hi), np.hypot(a_coef, b_coef), nearest)
            reach = nearest >= math.cos(alpha + 1e-9)
            cell, owner = cell[reach], owner[reach]
        # Within a cell, try first the PMT whose centre is nearest the cell centre.
        ci, cj = np.divmod(cell, n_phi)
        cu = (ci + 0.5) * (2.0 / n_u) - 1.0
        cphi = (cj + 0.5) * cell_w - math.pi
        cs = np.sqrt(np.maximum(0.0, 1.0 - cu * cu))
        cdir = np.stack([cs * np.cos(cphi), cs * np.sin(cphi), cu], axis=1)
        closeness = -(cdir * (pos[owner] / dist[owner, None])).sum(axis=1)
        order = np.lexsort((owner, closeness, cell))
        cell, owner = cell[order], owner[order]
        keep = np.ones(cell.shape[0], dtype=bool)
        keep[1:] = (cell[1:] != cell[:-1]) | (owner[1:] != owner[:-1])
        cell, owner = cell[keep], owner[keep]
        first = np.searchsorted(cell, cell, side="left")
        rank = np.arange(cell.shape[0]) - first
        width = int(rank.max()) + 1 if rank.size else 1
        cand = np.full((n_u * n_phi, width), -1, dtype=np.int32)
        cand[cell, rank] = owner
        cand.flags.writeable = False
        settled = np.where(cand[:, 0] < 0, -1, -2).astype(np.int32)
        if vessel.shape == "sphere":
            # On a sphere a photocathode is the cap of half-angle alpha around its axis; the point of
            # a (theta, phi) cell farthest from any axis is one of the cell's corners, so a cell whose
            # four corners lie within alpha is covered entirely (tiny margin for rounding).
            cos_alpha = math.cos(math.asin(r / vessel.radius) - 1e-9)
            ci, cj = np.divmod(cell, n_phi)
            axis = pos[owner] / dist[owner, None]
            inside = np.ones(cell.shape[0], dtype=bool)
            for di in (0, 1):
                cu = np.clip((ci + di) * (2.0 / n_u) - 1.0, -1.0, 1.0)
                sn = np.sqrt(np.maximum(0.0, 1.0 - cu * cu))
                for dj in (0, 1):
                    ph = (cj + dj) * cell_w - math.pi
                    corner = np.stack([sn * np.cos(ph), sn * np.sin(ph), cu], axis=1)
                    inside &= np.einsum("ij,ij->i", corner, axis) >= cos_alpha
            settled[cell[inside]] = owner[inside]
        settled.flags.writeable = False
        return cls(n_u, n_phi, cand, settled, pos, pmts.normals, r, depth)

    def cell_of(self, points: F64) -> npt.NDArray[np.intp]:
        """Grid cell index of each point's direction from the origin."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        return self._cells(p[:, 0], p[:, 1], p[:, 2])

    def _cells(self, x: F64, y: F64, z: F64) -> npt.NDArray[np.intp]:
        norm = np.sqrt(x * x + y * y + z * z)
        norm[norm == 0] = 1.0
        i = np.clip(((z / norm + 1.0) * (0.5 * self.n_u)).astype(np.intp), 0, self.n_u - 1)
        phi = np.arctan2(y, x)
        j = np.clip(((phi + math.pi) * (self.n_phi / (2.0 * math.pi))).astype(np.intp), 0, self.n_phi - 1)
        return np.asarray(i * self.n_phi + j)

    def on_photocathode(self, x: F64, y: F64, z: F64, channel: npt.NDArray[np.integer[Any]]
                        ) -> npt.NDArray[np.bool_]:
        """The exact test: does each point (x, y, z) lie on the photocathode of the paired channel?"""
        c = self.positions[channel]
        n = self.normals[channel]
        vx, vy, vz = x - c[:, 0], y - c[:, 1], z - c[:, 2]
        depth = vx * n[:, 0] + vy * n[:, 1] + vz * n[:, 2]
        lateral2 = vx * vx + vy * vy + vz * vz - depth * depth
        return np.asarray((lateral2 <= self.radius * self.radius)
                          & (np.abs(depth) <= self.max_depth + PLACEMENT_TOLERANCE_MM))

    def find(self, points: F64) -> I32:
        """Channel id of the photocathode each point (N, 3) on the wall lies on, else -1."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        return self.find_xyz(p[:, 0], p[:, 1], p[:, 2])

    def find_xyz(self, x: F64, y: F64, z: F64) -> I32:
        """``find`` for points given as three coordinate arrays."""
        cells = self._cells(x, y, z)
        out = self.settled[cells].copy()
        idx = np.flatnonzero(out == -2)
        out[idx] = -1
        cells = cells[idx]
        for col in range(self.candidates.shape[1]):
            if idx.size == 0:
                break
            k = self.candidates[cells, col]
            valid = k >= 0
            if not np.all(valid):
                idx, cells, k = idx[valid], cells[valid], k[valid]
            on = self.on_photocathode(x[idx], y[idx], z[idx], k)
            out[idx[on]] = k[on]
            miss = ~on
            idx, cells = idx[miss], cells[miss]
        return out


# ---------------------------------------------------------------------------- reference detector


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


# ------------------------------------------------------------------------------------ file I/O


def save_detector(detector: Detector, path: Path) -> None:
    """Write ``detector`` as an uncompressed ``.npz`` with a JSON header (format version 1)."""
    definition, arrays = detector.to_canonical()
    header = dict(definition, name=detector.name)
    blob = np.frombuffer(json.dumps(header, sort_keys=True, allow_nan=False).encode(), dtype=np.uint8)
    payload: dict[str, npt.NDArray[Any]] = {"header": blob}
    payload.update(arrays)
    with Path(path).open("wb") as fh:
        np.savez(fh, **payload)  # type: ignore[arg-type]


def load_detector(path: Path | None) -> Detector:
    """The detector stored at ``path``, or the built-in reference detector when ``path`` is None."""
    if path is None:
        return reference_detector()
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise DetectorError(f"detector file {str(path)!r} does not exist") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        raise DetectorError(f"detector file {str(path)!r} is not a charon detector (.npz with a charon header)"
                            ) from None
    try:
        return _from_parts(arrays)
    except DetectorError as exc:
        raise DetectorError(f"detector file {str(path)!r}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, UnicodeDecodeError) as exc:
        raise DetectorError(f"detector file {str(path)!r} is malformed: {type(exc).__name__}: {exc}") from None


def _from_parts(arrays: dict[str, npt.NDArray[Any]]) -> Detector:
    if "header" not in arrays:
        raise DetectorError("missing 'header' entry (not a charon detector file)")
    header = json.loads(arrays.pop("header").tobytes().decode())
    if not isinstance(header, dict) or header.get("format") != FILE_FORMAT:
        raise DetectorError(f"header format is not {FILE_FORMAT!r}")
    if header.get("version") != FILE_VERSION:
        raise DetectorError(f"unsupported format version {header.get('version')!r} (this charon reads "
                            f"version {FILE_VERSION})")

    def table(prefix: str) -> WavelengthTable:
        try:
            return WavelengthTable(arrays[f"{prefix}/wavelength"], arrays[f"{prefix}/value"])
        except KeyError:
            raise DetectorError(f"missing table {prefix!r}") from None
        except DetectorError as exc:
            raise DetectorError(f"{prefix}: {exc}") from None

    materials: dict[str, Material] = {}
    for name, spec in dict(header["materials"]).items():
        tabs = set(spec["tables"])
        materials[name] = Material(
            name=name,
            refractive_index=table(f"materials/{name}/refractive_index"),
            absorption_length=table(f"materials/{name}/absorption_length"),
            scattering_length=table(f"materials/{name}/scattering_length"),
            reemission_prob=table(f"materials/{name}/reemission_prob"),
            reemission_cdf=table(f"materials/{name}/reemission_cdf") if "reemission_cdf" in tabs else None,
            reemission_time_ns=float(spec["reemission_time_ns"]),
        )
    surfaces = {name: Surface(name, *(table(f"surfaces/{name}/{t}") for t in SURFACE_TABLES))
                for name in dict(header["surfaces"])}
    v = header["vessel"]
    vessel = Vessel(shape=v["shape"], radius=float(v["radius"]), inner_material=str(v["inner_material"]),
                    outer_material=str(v["outer_material"]), surface=v["surface"],
                    half_height=None if v["half_height"] is None else float(v["half_height"]))
    pm = header["pmts"]
    pmts = PMTArray(positions=arrays["pmts/positions"], normals=arrays["pmts/normals"],
                    radius=float(pm["radius"]), surface=str(pm["surface"]),
                    channel_type=arrays["pmts/channel_type"], shape=pm["shape"])
    if len(pmts) != int(pm["count"]):
        raise DetectorError(f"header says {pm['count']} PMTs, arrays hold {len(pmts)}")
    mesh = None
    if header.get("mesh") is not None:
        try:
            from charon.engine.mesh import MeshGeometry
        except ImportError:
            raise DetectorError("file carries a mesh but this charon has no mesh support") from None
        mesh_arrays = {k[len("mesh/"):]: a for k, a in arrays.items() if k.startswith("mesh/")}
        try:
            mesh = MeshGeometry.from_arrays(mesh_arrays)
        except ValueError as exc:
            raise DetectorError(f"mesh: {exc}") from None
    return Detector(name=str(header.get("name", "detector")), materials=materials, surfaces=surfaces,
                    vessel=vessel, pmts=pmts, mesh=mesh)
