"""The detector model every built-in engine simulates: optics tables, materials, surfaces, channels.

A detector is plain data (frozen dataclasses holding read-only numpy arrays) so that engines on
different back ends (NumPy, Warp on CPU or CUDA) read one definition, and so that its canonical form
can be hashed into the fingerprint that DETECTOR_INFO and the router's pool check rely on.

Geometry comes in one of two forms (either or both may be present):

* analytic (``vessel`` + ``pmts``, :mod:`charon.engine.detector.analytic`): a sphere or z-cylinder
  whose wall carries PMT photocathode patches, traced exactly;
* a scene (:mod:`charon.engine.detector.scene`): instanced triangle meshes with materials and
  optical surfaces per placed volume, which is what an imported Geant4/RAT-PAC detector becomes.

A ``mesh`` (:class:`charon.engine.mesh.MeshGeometry`, per-triangle tags) may carry an analytic
detector in triangle form for engines that trace triangles.

The optics follow Geant4's meaning wherever a detector comes from Geant4: a material without a
refractive index kills photons at its boundaries (Geant4's NoRINDEX), photon time advances at the
group velocity, and a surface's ``model`` says how Geant4's boundary process treats it.

Units: mm, nm, ns. Wavelength tables are linearly interpolated and clamped at their ends.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from charon.engine.base import DetectorInfo, fingerprint_of
from charon.engine.optics import SPEED_OF_LIGHT_MM_PER_NS, interp_table
from charon.errors import DetectorError

if TYPE_CHECKING:
    from charon.engine.detector.analytic import PMTArray, PMTLookup, Vessel
    from charon.engine.detector.scene import Scene
    from charon.engine.mesh import MeshGeometry

F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]

FILE_FORMAT = "charon-detector"
#: Version 2: optional analytic geometry, scenes, channels, surface models, group velocity.
FILE_VERSION = 2
#: Photon energy times wavelength, eV nm (CLHEP's h_Planck * c_light, CODATA 2018).
HC_EV_NM = 1239.8419843320026


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

    @classmethod
    def from_energy(cls, energy_ev: npt.ArrayLike, value: npt.ArrayLike, *, points_per_interval: int = 8
                    ) -> WavelengthTable:
        """A table given against photon energy (eV), as Geant4 stores it, in wavelength form.

        Geant4 interpolates linearly in energy; between its points the wavelength table is
        sampled ``points_per_interval`` times so linear interpolation in wavelength follows it.
        """
        e = np.asarray(energy_ev, dtype=np.float64).reshape(-1)
        v = np.asarray(value, dtype=np.float64).reshape(-1)
        if e.size == 0 or e.shape != v.shape:
            raise DetectorError(f"energy table needs equal non-empty energy and value arrays, got {e.size} "
                                f"and {v.size} entries")
        if not np.all(np.isfinite(e)) or np.any(e <= 0):
            raise DetectorError("energy table: energies must be finite and > 0")
        order = np.argsort(e, kind="stable")
        e, v = e[order], v[order]
        if np.any(np.diff(e) <= 0):
            raise DetectorError("energy table: energies must be distinct")
        if e.size == 1:
            return cls(np.array([HC_EV_NM / e[0]]), v)
        k = max(1, int(points_per_interval))
        fine = np.concatenate([np.linspace(a, b, k, endpoint=False) for a, b in itertools.pairwise(e)]
                              + [e[-1:]])
        fine_v = np.interp(fine, e, v)
        return cls((HC_EV_NM / fine)[::-1], fine_v[::-1])

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


def group_velocity_points(energy: npt.ArrayLike, rindex: npt.ArrayLike) -> tuple[F64, F64]:
    """Group velocity (mm/ns) from refractive-index points given against rising photon energy,
    computed exactly as Geant4's ``G4MaterialPropertiesTable::CalculateGROUPVEL`` does.

    v = c / (n + dn/d(ln E)) at the first and last point and at the midpoints between the others,
    dn/d(ln E) from neighbouring points; where that would exceed c/n (anomalous dispersion) or be
    negative, v = c/n. Returns (energies, velocities); a flat index gives c/n everywhere.
    """
    c = SPEED_OF_LIGHT_MM_PER_NS
    e = np.asarray(energy, dtype=np.float64).reshape(-1)
    n = np.asarray(rindex, dtype=np.float64).reshape(-1)
    if e.size < 2:
        return e, c / n

    def limited(vg: float, n_here: float) -> float:
        return c / n_here if (vg < 0 or vg > c / n_here) else vg

    out_e = [float(e[0])]
    out_v = [limited(c / (n[0] + (n[1] - n[0]) / math.log(e[1] / e[0])), float(n[0]))]
    for i in range(2, e.size):
        n_mid = 0.5 * (n[i - 2] + n[i - 1])
        out_e.append(0.5 * (e[i - 2] + e[i - 1]))
        out_v.append(limited(c / (n_mid + (n[i - 1] - n[i - 2]) / math.log(e[i - 1] / e[i - 2])), float(n_mid)))
    out_e.append(float(e[-1]))
    out_v.append(limited(c / (n[-1] + (n[-1] - n[-2]) / math.log(e[-1] / e[-2])), float(n[-1])))
    return np.asarray(out_e), np.asarray(out_v)


def group_velocity(refractive_index: WavelengthTable) -> WavelengthTable:
    """Group velocity (mm/ns) of a refractive-index table, by :func:`group_velocity_points` on its
    points (taken in energy order, as Geant4 holds them)."""
    n_wl = refractive_index.value
    if refractive_index.is_flat or n_wl.size < 2:
        return WavelengthTable(refractive_index.wavelength, SPEED_OF_LIGHT_MM_PER_NS / n_wl)
    ev, vv = group_velocity_points(HC_EV_NM / refractive_index.wavelength[::-1], n_wl[::-1])
    keep = np.concatenate([[True], np.diff(ev) > 0])
    return WavelengthTable((HC_EV_NM / ev[keep])[::-1], vv[keep][::-1])


# ------------------------------------------------------------------------------------ materials


@dataclass(frozen=True, eq=False)
class Material:
    """Bulk optics of one medium.

    ``refractive_index`` None means the medium has none (Geant4: no RINDEX): a photon reaching a
    boundary of it, from either side, is killed there. ``absorption_length`` and
    ``scattering_length`` (Rayleigh) are mean free paths in mm and may be ``inf``. On absorption a
    photon is re-emitted with probability ``reemission_prob``, with a new wavelength drawn from
    ``reemission_cdf`` (cumulative distribution over wavelength, rising from 0 to 1), after a
    delay of ``reemission_time_ns``: exponentially distributed (``reemission_profile``
    "exponential") or exactly that (``"delta"``, Geant4's default for wavelength shifting); with
    ``reemission_redshift`` the new wavelength is never shorter than the absorbed one (Geant4's
    WLS: up to 100 draws, else the photon is lost). ``group_velocity`` (mm/ns) sets photon time;
    None computes it from the refractive index as Geant4 does.
    """

    name: str
    refractive_index: WavelengthTable | None
    absorption_length: WavelengthTable
    scattering_length: WavelengthTable
    reemission_prob: WavelengthTable = field(default_factory=lambda: WavelengthTable.flat(0.0))
    reemission_cdf: WavelengthTable | None = None
    reemission_time_ns: float = 0.0
    group_velocity: WavelengthTable | None = None
    reemission_profile: Literal["exponential", "delta"] = "exponential"
    reemission_redshift: bool = False

    def __post_init__(self) -> None:
        where = f"material {self.name!r}"
        if not self.name or "/" in self.name:
            raise DetectorError(f"{where}: name must be non-empty and contain no '/'")
        if self.refractive_index is not None:
            self.refractive_index._check_range(f"{where} refractive_index", 0.0, 100.0, lo_open=True)
            if not np.all(np.isfinite(self.refractive_index.value)):
                raise DetectorError(f"{where} refractive_index: values must be finite")
        if self.group_velocity is not None:
            self.group_velocity._check_range(f"{where} group_velocity (mm/ns)", 0.0, 1e6, lo_open=True)
        self.absorption_length._check_range(f"{where} absorption_length (mm)", 0.0, math.inf, lo_open=True)
        self.scattering_length._check_range(f"{where} scattering_length (mm)", 0.0, math.inf, lo_open=True)
        self.reemission_prob._check_range(f"{where} reemission_prob", 0.0, 1.0)
        if not math.isfinite(self.reemission_time_ns) or self.reemission_time_ns < 0:
            raise DetectorError(f"{where}: reemission_time_ns must be finite and >= 0")
        if self.reemission_profile not in ("exponential", "delta"):
            raise DetectorError(f"{where}: reemission_profile must be 'exponential' or 'delta'")
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

    @property
    def opaque(self) -> bool:
        """No refractive index: photons are killed at its boundaries."""
        return self.refractive_index is None

    @functools.cached_property
    def effective_group_velocity(self) -> WavelengthTable:
        """The group velocity used for photon time (given, or computed from the index)."""
        if self.group_velocity is not None:
            return self.group_velocity
        if self.refractive_index is None:
            return WavelengthTable.flat(SPEED_OF_LIGHT_MM_PER_NS)
        return group_velocity(self.refractive_index)


# ------------------------------------------------------------------------------------- surfaces


SURFACE_TABLES = ("detect", "absorb", "reflect_diffuse", "reflect_specular", "transmit")
#: How the remainder (1 - the tables' sum) and equal materials are treated; see :class:`Surface`.
SURFACE_MODELS = ("chroma", "dielectric_dielectric", "dielectric_metal")


@dataclass(frozen=True, eq=False)
class Surface:
    """Probabilities, by wavelength, of what a photon does on reaching a surface.

    They are drawn in the order absorb, detect, reflect_diffuse, reflect_specular, transmit
    (straight on, direction unchanged); the remaining probability (1 - their sum) depends on
    ``model``:

    * ``chroma``: Fresnel reflection/refraction between the two materials (Chroma's surfaces);
    * ``dielectric_dielectric`` (Geant4): Fresnel; and the surface does nothing at all between
      two volumes of the same material, as Geant4's boundary process skips those;
    * ``dielectric_metal`` (Geant4, also front-painted dielectrics): absorbed; the other side's
      material is never entered except by ``transmit``.
    """

    name: str
    detect: WavelengthTable = field(default_factory=lambda: WavelengthTable.flat(0.0))
    absorb: WavelengthTable = field(default_factory=lambda: WavelengthTable.flat(0.0))
    reflect_diffuse: WavelengthTable = field(default_factory=lambda: WavelengthTable.flat(0.0))
    reflect_specular: WavelengthTable = field(default_factory=lambda: WavelengthTable.flat(0.0))
    transmit: WavelengthTable = field(default_factory=lambda: WavelengthTable.flat(0.0))
    model: Literal["chroma", "dielectric_dielectric", "dielectric_metal"] = "chroma"

    def __post_init__(self) -> None:
        where = f"surface {self.name!r}"
        if not self.name or "/" in self.name:
            raise DetectorError(f"{where}: name must be non-empty and contain no '/'")
        if self.model not in SURFACE_MODELS:
            raise DetectorError(f"{where}: model must be one of {', '.join(SURFACE_MODELS)}, got {self.model!r}")
        for what in SURFACE_TABLES:
            getattr(self, what)._check_range(f"{where} {what}", 0.0, 1.0)
        grid = np.unique(np.concatenate([getattr(self, t).wavelength for t in SURFACE_TABLES]))
        total = sum(getattr(self, t)(grid) for t in SURFACE_TABLES)
        if np.any(total > 1.0 + 1e-9):
            raise DetectorError(f"{where}: detect + absorb + reflect_diffuse + reflect_specular + transmit "
                                "exceeds 1")


# ------------------------------------------------------------------------------------- channels


@dataclass(frozen=True, eq=False)
class Channels:
    """The PMT channels DETECTOR_INFO reports, indexed by channel id: positions (mm), types and
    (where known) the direction each PMT faces."""

    positions: F64
    channel_type: I32
    directions: F64

    def __post_init__(self) -> None:
        pos = np.array(self.positions, dtype=np.float64, copy=True).reshape(-1, 3)
        typ = np.array(self.channel_type, copy=True).reshape(-1)
        dirs = np.array(self.directions, dtype=np.float64, copy=True).reshape(-1, 3)
        if pos.shape[0] == 0:
            raise DetectorError("a detector needs at least one PMT channel")
        if typ.shape != (pos.shape[0],) or not np.issubdtype(typ.dtype, np.integer):
            raise DetectorError(f"channel types must be {pos.shape[0]} integers")
        if np.any(typ < -(2**31)) or np.any(typ >= 2**31):
            raise DetectorError("channel types must fit in int32")
        if dirs.shape != pos.shape:
            raise DetectorError(f"channel directions must be ({pos.shape[0]}, 3), got {dirs.shape}")
        if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(dirs))):
            raise DetectorError("channel positions and directions must be finite")
        typ = typ.astype(np.int32)
        for a in (pos, typ, dirs):
            a.flags.writeable = False
        object.__setattr__(self, "positions", pos)
        object.__setattr__(self, "channel_type", typ)
        object.__setattr__(self, "directions", dirs)

    def __len__(self) -> int:
        return int(self.positions.shape[0])


# ------------------------------------------------------------------------------------- detector


@dataclass(frozen=True, eq=False)
class Detector:
    """A complete detector: every engine input except the photons and the seed.

    ``provenance`` holds labels (source files and their sha256, import settings, volume names for
    display): like ``name`` it stays out of the fingerprint, which covers everything that affects
    the physics.
    """

    name: str
    #: By name; stored sorted by name, which is also their index order (see ``material_names``).
    materials: Mapping[str, Material]
    surfaces: Mapping[str, Surface]
    vessel: Vessel | None = None
    pmts: PMTArray | None = None
    #: Optional triangle-mesh form of an analytic detector (per-triangle tags).
    mesh: MeshGeometry | None = None
    #: Instanced triangle geometry (imported detectors).
    scene: Scene | None = None
    #: The channels of a scene detector (an analytic detector's are its PMTs: leave None).
    channels: Channels | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        mats = dict(self.materials)
        surfs = dict(self.surfaces)
        for kind, table in (("material", mats), ("surface", surfs)):
            for key, obj in table.items():
                if key != obj.name:
                    raise DetectorError(f"{kind} stored under {key!r} is named {obj.name!r}")
        object.__setattr__(self, "materials", {k: mats[k] for k in sorted(mats)})
        object.__setattr__(self, "surfaces", {k: surfs[k] for k in sorted(surfs)})
        object.__setattr__(self, "provenance", dict(self.provenance))
        if (self.vessel is None) != (self.pmts is None):
            raise DetectorError("an analytic detector needs both a vessel and PMTs")
        if self.vessel is None and self.scene is None:
            raise DetectorError("a detector needs a geometry: a vessel with PMTs, or a scene")
        if self.vessel is not None:
            self._check_analytic(mats, surfs)
        elif self.channels is None:
            raise DetectorError("a scene detector needs its channels (PMT positions and types)")
        n_ch = len(self.channel_table)
        for what, geo in (("mesh", self.mesh), ("scene", self.scene)):
            if geo is None:
                continue
            try:
                geo.check_indices(len(mats), len(surfs))
            except ValueError as exc:
                raise DetectorError(f"{what}: {exc}") from None
            if geo.n_channels > n_ch:
                raise DetectorError(f"{what} uses channel {geo.n_channels - 1} but the detector has {n_ch}")

    def _check_analytic(self, mats: Mapping[str, Material], surfs: Mapping[str, Surface]) -> None:
        from charon.engine.detector.analytic import check_pmt_placement

        v, pmts = self.vessel, self.pmts
        assert v is not None
        assert pmts is not None
        for what, name in (("inner_material", v.inner_material), ("outer_material", v.outer_material)):
            if name not in mats:
                raise DetectorError(f"vessel {what} {name!r} is not a defined material (defined: {sorted(mats)})")
            if mats[name].opaque:
                raise DetectorError(f"vessel {what} {name!r} has no refractive index")
        for what, sname in (("vessel surface", v.surface), ("PMT surface", pmts.surface)):
            if sname is not None and sname not in surfs:
                raise DetectorError(f"{what} {sname!r} is not a defined surface (defined: {sorted(surfs)})")
        check_pmt_placement(v, pmts)
        if self.channels is not None:
            raise DetectorError("an analytic detector's channels are its PMTs: give no separate channels")

    # -- public views -------------------------------------------------------------------------

    @functools.cached_property
    def channel_table(self) -> Channels:
        """Every channel's position, type and direction: ``channels``, or the analytic PMTs'."""
        if self.channels is not None:
            return self.channels
        assert self.pmts is not None
        return Channels(self.pmts.positions, self.pmts.channel_type, self.pmts.normals)

    @property
    def n_channels(self) -> int:
        return len(self.channel_table)

    @property
    def is_analytic(self) -> bool:
        return self.vessel is not None

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
        ch = self.channel_table
        pos = ch.positions.astype(np.float32)
        return DetectorInfo(np.ascontiguousarray(pos[:, 0]), np.ascontiguousarray(pos[:, 1]),
                            np.ascontiguousarray(pos[:, 2]), ch.channel_type.copy())

    def to_canonical(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        """The complete definition as (JSON-able dict, named arrays), the input of the fingerprint.

        ``name`` and ``provenance`` are labels and stay out; everything that affects the physics is in.
        """
        from charon.engine.detector.files import canonical_parts

        return canonical_parts(self)

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 over the canonical definition (geometry and every optical table)."""
        definition, arrays = self.to_canonical()
        return fingerprint_of(definition, arrays)

    @functools.cached_property
    def lookup(self) -> PMTLookup:
        """Exact hit-point -> channel lookup for points on the vessel wall (analytic detectors)."""
        from charon.engine.detector.analytic import PMTLookup

        if self.vessel is None or self.pmts is None:
            raise DetectorError("this detector has no analytic vessel")
        return PMTLookup.build(self.vessel, self.pmts)

    def photocathode_solid_angle(self) -> float:
        """Solid angle (sr) the photocathodes subtend from the origin (sphere vessel: exact)."""
        if self.vessel is None or self.pmts is None or self.vessel.shape != "sphere":
            raise DetectorError("photocathode_solid_angle is defined for sphere vessels only")
        cos_a = math.sqrt(1.0 - (self.pmts.radius / self.vessel.radius) ** 2)
        return len(self.pmts) * 2.0 * math.pi * (1.0 - cos_a)

    def coverage(self) -> float:
        """Fraction of the full solid angle covered by photocathodes, seen from the centre."""
        return self.photocathode_solid_angle() / (4.0 * math.pi)
