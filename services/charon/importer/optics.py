"""Geant4's optical properties (GDML materials and optical surfaces) as charon's optics tables.

Materials: RINDEX, ABSLENGTH, RAYLEIGH (or RAT's RSLENGTH), GROUPVEL, wavelength shifting (WLS*)
and RAT's scintillator re-emission (NUM_COMP, ABSLENGTH{i}, REEMISSION_PROB{i}, SCINTILLATION[_WLS]).
Energies arrive in MeV (Geant4's internal unit) and become wavelengths (nm).

Surfaces, following ``G4OpBoundaryProcess``: REFLECTIVITY R (default 1), EFFICIENCY E (default 0),
TRANSMITTANCE T (default 0). What is not reflected or transmitted is absorbed, and detected with
probability E:

* ``dielectric_metal``: reflect with R (polished: specular; ground: diffuse, or specular for the
  unified model's spike/lobe/backscatter constants and glisur's facets, approximated), else absorb
  or detect; never refract;
* ``dielectric_dielectric`` polished or ground: absorb/detect with 1 - R - T, transmit straight on
  with T, else Fresnel between the two materials (ground finishes approximated as polished);
  nothing at all between equal materials;
* front-painted dielectrics: reflect (polished: specular, ground: Lambertian) with R, else absorb
  or detect.

What charon does not model exactly is approximated and reported once, as a note.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from charon.engine.detector import HC_EV_NM, Material, Surface, WavelengthTable
from charon.engine.detector.model import group_velocity_points
from charon.errors import DetectorError

F64 = npt.NDArray[np.float64]
MEV_TO_EV = 1.0e6
@dataclass
class Notes:
    """Approximations and ignored properties, each reported once."""

    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        if line not in self.lines:
            self.lines.append(line)


def _table(prop: Any, what: str) -> WavelengthTable:
    """A GDML property (energies in MeV) as a wavelength table; a constant as a flat table."""
    value = np.asarray(prop.value, dtype=np.float64).reshape(-1)
    if prop.energy is None or (value.size == 1 and np.asarray(prop.energy).size <= 1):
        return WavelengthTable.flat(float(value[0]))
    try:
        return WavelengthTable.from_energy(np.asarray(prop.energy, dtype=np.float64) * MEV_TO_EV, value)
    except DetectorError as exc:
        raise DetectorError(f"{what}: {exc}") from None


def _combine(tables: list[WavelengthTable], fn: Callable[..., F64]) -> WavelengthTable:
    """A table on the union of the inputs' wavelength points: fn(values of each input there)."""
    grid = np.unique(np.concatenate([t.wavelength for t in tables]))
    return WavelengthTable(grid, fn(*[t(grid) for t in tables]))


def _inverse(lengths: list[WavelengthTable]) -> WavelengthTable:
    """1 / sum(1 / L_i): the mean free path of several competing processes."""
    def fn(*vals: F64) -> F64:
        with np.errstate(divide="ignore"):
            rate = sum((1.0 / np.asarray(v) for v in vals), np.zeros(1))
            return np.asarray(np.where(rate > 0, 1.0 / np.maximum(rate, 1e-300), np.inf))
    return _combine(lengths, fn)


def _spectrum_cdf(prop: Any, what: str) -> WavelengthTable:
    """A GDML emission spectrum (relative intensity per unit energy) as a CDF over wavelength.

    Geant4 integrates the spectrum over energy (trapezoids) and samples energy from that
    integral; the CDF over wavelength is 1 minus the energy CDF at hc/lambda.
    """
    e = np.asarray(prop.energy, dtype=np.float64).reshape(-1) * MEV_TO_EV
    v = np.asarray(prop.value, dtype=np.float64).reshape(-1)
    if e.size < 2 or np.any(v < 0) or not np.any(v > 0):
        raise DetectorError(f"{what}: an emission spectrum needs >= 2 points and non-negative values, "
                            "not all zero")
    order = np.argsort(e)
    e, v = e[order], v[order]
    fine = np.concatenate([np.linspace(a, b, 16, endpoint=False) for a, b in itertools.pairwise(e)]
                          + [e[-1:]])
    fv = np.interp(fine, e, v)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (fv[1:] + fv[:-1]) * np.diff(fine))])
    cdf_e = cum / cum[-1]
    wl = HC_EV_NM / fine[::-1]
    cdf = 1.0 - cdf_e[::-1]
    cdf[0], cdf[-1] = 0.0, 1.0
    keep = np.concatenate([[True], np.diff(wl) > 0])
    return WavelengthTable(wl[keep], np.maximum.accumulate(cdf[keep]))


@dataclass
class _Bulk:
    """A material's absorption and re-emission as its GDML properties combine them."""

    absorption: WavelengthTable | None = None
    reemit_prob: WavelengthTable = field(default_factory=lambda: WavelengthTable.flat(0.0))
    reemit_cdf: WavelengthTable | None = None
    reemit_tau: float = 0.0
    profile: str = "exponential"
    redshift: bool = False


class _MaterialReader:
    """One GDML material's properties, read into wavelength tables."""

    def __init__(self, m: Any, notes: Notes) -> None:
        self.props: Mapping[str, Any] = m.properties
        self.name = m.name
        self.where = f"material {m.name!r} (line {m.line})"
        self.notes = notes

    def get(self, key: str) -> WavelengthTable | None:
        p = self.props.get(key)
        return None if p is None else _table(p, f"{self.where} {key}")

    def group_velocity(self, rindex: WavelengthTable | None) -> WavelengthTable | None:
        given = self.get("GROUPVEL")
        p = self.props.get("RINDEX")
        if rindex is None or given is not None or p is None or p.energy is None:
            return given if rindex is not None else None
        # As Geant4 does on reading RINDEX: from the original points, not a resampled table.
        order = np.argsort(np.asarray(p.energy, np.float64))
        e, v = group_velocity_points(np.asarray(p.energy, np.float64)[order] * MEV_TO_EV,
                                     np.asarray(p.value, np.float64).reshape(-1)[order])
        return WavelengthTable.from_energy(e, v)

    def rayleigh(self, rindex: WavelengthTable | None) -> WavelengthTable | None:
        rayleigh = self.get("RAYLEIGH")
        if rayleigh is None:
            rayleigh = self.get("RSLENGTH")
        elif "RSLENGTH" in self.props:
            self.notes.add(f"{self.where}: both RAYLEIGH and RSLENGTH given; RAYLEIGH is used")
        if rayleigh is None and self.name == "Water" and rindex is not None:
            self.notes.add(f"{self.where}: Geant4 computes Rayleigh scattering for a material named 'Water' "
                           "without a RAYLEIGH table; charon does not scatter in it (add a RAYLEIGH table to match)")
        return rayleigh

    def wls(self, bulk: _Bulk) -> None:
        """Wavelength shifting: a competing absorption that re-emits (Geant4's G4OpWLS)."""
        wls = self.get("WLSABSLENGTH")
        if wls is None:
            return
        if "WLSCOMPONENT" not in self.props:
            raise DetectorError(f"{self.where}: WLSABSLENGTH without WLSCOMPONENT (the re-emission spectrum)")
        total = _inverse([t for t in (bulk.absorption, wls) if t is not None])
        bulk.reemit_prob = _combine([total, wls], lambda tot, w: np.clip(np.asarray(tot) / np.asarray(w), 0.0, 1.0))
        bulk.absorption = total
        bulk.reemit_cdf = _spectrum_cdf(self.props["WLSCOMPONENT"], f"{self.where} WLSCOMPONENT")
        tau = self.props.get("WLSTIMECONSTANT")
        bulk.reemit_tau = float(np.asarray(tau.value).reshape(-1)[0]) if tau is not None else 0.0
        bulk.profile, bulk.redshift = "delta", True
        self.notes.add(f"{self.where}: wavelength shifting with Geant4's default 'delta' time profile (a fixed "
                       "delay of WLSTIMECONSTANT)")
        if "WLSMEANNUMBERPHOTONS" in self.props:
            self.notes.add(f"{self.where}: WLSMEANNUMBERPHOTONS is approximated as one re-emitted photon")

    def rat_components(self, bulk: _Bulk) -> None:
        """RAT's scintillator model (GLG4Scint): per-component absorption and re-emission."""
        n_comp_prop = self.props.get("NUM_COMP")
        if n_comp_prop is None:
            return
        n_comp = round(float(np.asarray(n_comp_prop.value).reshape(-1)[0]))
        comps = [(self.get(f"ABSLENGTH{i}"), self.get(f"REEMISSION_PROB{i}")) for i in range(n_comp)]
        lengths = [c[0] for c in comps if c[0] is not None]
        if not lengths:
            return
        spectrum = self.props.get("SCINTILLATION_WLS") or self.props.get("SCINTILLATION")
        if spectrum is None and any(c[1] is not None for c in comps):
            raise DetectorError(f"{self.where}: REEMISSION_PROB without a SCINTILLATION spectrum")
        total = _inverse([t for t in (bulk.absorption, *lengths) if t is not None])
        pieces = [t for length, prob in comps if length is not None and prob is not None for t in (length, prob)]
        if pieces:
            def fn(tot: F64, *vals: F64) -> F64:
                acc = sum((np.asarray(vals[k + 1]) / np.asarray(vals[k]) for k in range(0, len(vals), 2)),
                          np.zeros_like(np.asarray(tot)))
                return np.asarray(np.clip(np.asarray(tot) * acc, 0.0, 1.0))
            bulk.reemit_prob = _combine([total, *pieces], fn)
            assert spectrum is not None
            bulk.reemit_cdf = _spectrum_cdf(spectrum, f"{self.where} SCINTILLATION")
            self.notes.add(f"{self.where}: RAT's re-emission (REEMITWAVEFORM) is approximated as prompt")
        bulk.absorption = total

    def report_unmodelled(self) -> None:
        for key in self.props:
            if key.startswith(("MIEHG", "WLSABSLENGTH2", "WLSCOMPONENT2")):
                self.notes.add(f"{self.where}: {key} is not simulated (Mie scattering and a second WLS are not "
                               "modelled)")


def material_from_gdml(m: Any, notes: Notes) -> Material:
    """A GDML material (``charon.gdml`` model) as a charon material; photon-generation properties
    (scintillation yields, time constants) are the client's business and are not read."""
    reader = _MaterialReader(m, notes)
    rindex = reader.get("RINDEX")
    bulk = _Bulk(absorption=reader.get("ABSLENGTH"))
    reader.wls(bulk)
    reader.rat_components(bulk)
    reader.report_unmodelled()
    return Material(
        name=_name(m.name),
        refractive_index=rindex,
        absorption_length=bulk.absorption or WavelengthTable.flat(np.inf),
        scattering_length=reader.rayleigh(rindex) or WavelengthTable.flat(np.inf),
        reemission_prob=bulk.reemit_prob,
        reemission_cdf=bulk.reemit_cdf,
        reemission_time_ns=bulk.reemit_tau,
        group_velocity=reader.group_velocity(rindex),
        reemission_profile=bulk.profile,  # type: ignore[arg-type]
        reemission_redshift=bulk.redshift,
    )


_FINISHES = ("polished", "ground", "polishedfrontpainted", "groundfrontpainted", "polishedbackpainted",
             "groundbackpainted")


def _check_surface(s: Any, where: str) -> None:
    if s.type not in ("dielectric_metal", "dielectric_dielectric"):
        raise DetectorError(f"{where}: surface type {s.type!r} is not supported (allowed: dielectric_metal, "
                            "dielectric_dielectric)")
    if s.model not in ("glisur", "unified"):
        raise DetectorError(f"{where}: surface model {s.model!r} is not supported (allowed: glisur, unified)")
    if s.finish not in _FINISHES:
        raise DetectorError(f"{where}: finish {s.finish!r} is not supported (allowed: {', '.join(_FINISHES)})")
    if ("REALRINDEX" in s.properties or "IMAGINARYRINDEX" in s.properties) and "REFLECTIVITY" not in s.properties:
        raise DetectorError(f"{where}: a complex refractive index (REALRINDEX/IMAGINARYRINDEX) is not "
                            "supported; give REFLECTIVITY instead")


def _metal_reflection(s: Any, where: str, reflectivity: F64, grid: F64, notes: Notes) -> tuple[F64, F64]:
    """(specular, diffuse) reflection probabilities of a metal: polished reflects specularly; ground
    diffusely (the unified model's Lambertian default), or specularly for its spike/lobe/backscatter
    constants; glisur's ground facets are approximated as polished."""
    if not s.finish.startswith("ground"):
        return reflectivity, np.zeros_like(grid)
    if s.model != "unified":
        notes.add(f"{where}: glisur 'ground' facets (polish {s.value:g}) are approximated as polished")
        return reflectivity, np.zeros_like(grid)
    ss, sl, bs = (_table(s.properties[k], f"{where} {k}")(grid) if k in s.properties else np.zeros_like(grid)
                  for k in ("SPECULARSPIKECONSTANT", "SPECULARLOBECONSTANT", "BACKSCATTERCONSTANT"))
    if np.any(sl > 0) or np.any(bs > 0):
        notes.add(f"{where}: the unified model's specular lobe and backscatter are approximated as specular "
                  "reflection")
    specular_part = np.clip(ss + sl + bs, 0.0, 1.0)
    return reflectivity * specular_part, reflectivity * (1.0 - specular_part)


def surface_from_gdml(s: Any, notes: Notes) -> Surface:
    """A GDML ``opticalsurface`` as a charon surface (see the module docstring for the mapping)."""
    where = f"optical surface {s.name!r} (line {s.line})"
    _check_surface(s, where)
    props: Mapping[str, Any] = s.properties

    def table(key: str, default: float) -> WavelengthTable:
        p = props.get(key)
        return WavelengthTable.flat(default) if p is None else _table(p, f"{where} {key}")

    r, e, t = table("REFLECTIVITY", 1.0), table("EFFICIENCY", 0.0), table("TRANSMITTANCE", 0.0)
    grid = np.unique(np.concatenate([r.wavelength, e.wavelength, t.wavelength]))
    rv, ev, tv = np.clip(r(grid), 0.0, 1.0), np.clip(e(grid), 0.0, 1.0), np.clip(t(grid), 0.0, 1.0)
    tv = np.minimum(tv, 1.0 - rv)
    lost = 1.0 - rv - tv

    def w(values: F64) -> WavelengthTable:
        return WavelengthTable(grid, np.clip(values, 0.0, 1.0))

    common = {"detect": w(lost * ev), "absorb": w(lost * (1.0 - ev)), "transmit": w(tv)}
    if s.type == "dielectric_metal":
        if s.finish.endswith("painted"):
            notes.add(f"{where}: a painted finish on a metal surface is treated as unpainted")
        spec, diff = _metal_reflection(s, where, rv, grid, notes)
        return Surface(_name(s.name), reflect_diffuse=w(diff), reflect_specular=w(spec), model="dielectric_metal",
                       **common)
    if s.finish in ("polishedfrontpainted", "groundfrontpainted"):
        # Reflect or absorb: the far side is never refracted into, as on a metal.
        ground = s.finish == "groundfrontpainted"
        zero = np.zeros_like(grid)
        return Surface(_name(s.name), reflect_diffuse=w(rv if ground else zero),
                       reflect_specular=w(zero if ground else rv), model="dielectric_metal", **common)
    if s.finish.endswith("backpainted"):
        notes.add(f"{where}: '{s.finish}' (paint behind a thin gap) is approximated as a polished dielectric "
                  "boundary")
    elif s.finish.startswith("ground"):
        notes.add(f"{where}: a ground dielectric's microfacets are approximated as a polished boundary")
    # Dielectric: R is the chance of reaching the Fresnel boundary at all.
    return Surface(_name(s.name), model="dielectric_dielectric", **common)


def _name(gdml_name: str) -> str:
    """A detector-model name: GDML names may hold '/' (not allowed in detector files)."""
    return gdml_name.replace("/", "|") or "unnamed"
