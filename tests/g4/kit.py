"""Building Geant4 objects from Python without the segfaults: every object created stays referenced.

geant4-pybind hands ownership of solids, volumes, placements, surfaces and property tables to
Geant4's stores, but the Python wrapper still frees an object it no longer references, and Geant4
then crashes later (while navigating or writing GDML). ``Kit`` creates everything through ``keep``,
so the objects live as long as the kit, and wraps the few idioms the detectors repeat: property
tables from wavelength tables, materials, optical surfaces and oriented placements.

Import only inside a process prepared by ``tests.g4.offline`` (geant4_pybind is imported here).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.g4.tables import HC_EV_NM, Table

Vec3 = tuple[float, float, float]


class Kit:
    """A Geant4 construction context that keeps every object it makes alive."""

    def __init__(self, check_overlaps: bool = False) -> None:
        import geant4_pybind as g4

        self.g4: Any = g4
        self.check_overlaps = check_overlaps
        self._kept: list[Any] = []
        self._elements: dict[str, Any] = {}
        # What was built, JSON-able, for meta.json: materials with their tables, surfaces and where
        # they are attached.
        self.materials: dict[str, dict[str, Any]] = {}
        self.surfaces: dict[str, dict[str, Any]] = {}
        self.attachments: list[dict[str, Any]] = []
        self.overlaps: list[str] = []

    def keep(self, obj: Any) -> Any:
        self._kept.append(obj)
        return obj

    # ------------------------------------------------------------------ properties and materials

    def vector(self, values: Sequence[float]) -> Any:
        return self.keep(self.g4.G4doubleVector([float(v) for v in values]))

    def properties(self, props: Mapping[str, Table | float]) -> Any:
        """A G4MaterialPropertiesTable: a table per key, or a float for a constant property.

        Tables are (wavelengths_nm, values); energies are hc/λ, sorted ascending as Geant4 requires.
        Lengths are given in mm and times in ns (Geant4's internal units, so no conversion).
        """
        g4 = self.g4
        mpt = self.keep(g4.G4MaterialPropertiesTable())
        for key, value in props.items():
            if isinstance(value, int | float):
                mpt.AddConstProperty(key, float(value))
                continue
            wl, val = value
            pairs = sorted((HC_EV_NM / w * g4.eV, v) for w, v in zip(wl, val, strict=True))
            mpt.AddProperty(key, self.vector([e for e, _ in pairs]), self.vector([v for _, v in pairs]))
        return mpt

    def element(self, symbol: str) -> Any:
        if symbol not in self._elements:
            self._elements[symbol] = self.g4.G4NistManager.Instance().FindOrBuildElement(symbol)
        return self._elements[symbol]

    def material(self, name: str, density_g_cm3: float, atoms: Mapping[str, int],
                 props: Mapping[str, Table | float] | None = None) -> Any:
        """A material built by hand from elements (by number of atoms), with optional optical properties.

        Never name a material exactly ``Water``: G4OpRayleigh then computes a Rayleigh length of its
        own for it when the table has no RAYLEIGH entry.
        """
        g4 = self.g4
        mat = self.keep(g4.G4Material(name, density_g_cm3 * g4.g / g4.cm3, len(atoms)))
        for symbol, n in atoms.items():
            mat.AddElement(self.element(symbol), int(n))
        if props:
            mat.SetMaterialPropertiesTable(self.properties(props))
        self.materials[name] = {"density_g_cm3": density_g_cm3, "atoms": dict(atoms),
                                "properties": describe(props or {})}
        return mat

    def nist(self, name: str) -> Any:
        return self.g4.G4NistManager.Instance().FindOrBuildMaterial(name)

    # ------------------------------------------------------------------ surfaces

    def optical_surface(self, name: str, kind: str, finish: str, props: Mapping[str, Table | float],
                        model: str = "unified", sigma_alpha: float = 0.0) -> Any:
        """``kind`` dielectric_metal / dielectric_dielectric, ``finish`` polished / ground / ..."""
        g4 = self.g4
        surf = self.keep(g4.G4OpticalSurface(name, getattr(g4, model), getattr(g4, finish), getattr(g4, kind)))
        if sigma_alpha:
            surf.SetSigmaAlpha(sigma_alpha)
        surf.SetMaterialPropertiesTable(self.properties(props))
        self.surfaces[name] = {"type": kind, "finish": finish, "model": model, "sigma_alpha": sigma_alpha,
                               "properties": describe(props)}
        return surf

    def skin(self, name: str, logical: Any, surface: Any) -> Any:
        self.attachments.append({"kind": "skin", "name": name, "surface": surface.GetName(),
                                 "logical_volume": logical.GetName()})
        return self.keep(self.g4.G4LogicalSkinSurface(name, logical, surface))

    def border(self, name: str, pv_from: Any, pv_to: Any, surface: Any, record: bool = True) -> Any:
        """A border surface for photons going from ``pv_from`` into ``pv_to`` (one direction only)."""
        if record:
            self.attachments.append({"kind": "border", "name": name, "surface": surface.GetName(),
                                     "from": pv_from.GetName(), "to": pv_to.GetName()})
        return self.keep(self.g4.G4LogicalBorderSurface(name, pv_from, pv_to, surface))

    # ------------------------------------------------------------------ volumes

    def solid(self, cls: str, *args: Any) -> Any:
        return self.keep(getattr(self.g4, cls)(*args))

    def polycone(self, name: str, z_mm: Sequence[float], rmin_mm: Sequence[float],
                 rmax_mm: Sequence[float]) -> Any:
        """A full-φ G4Polycone from z planes.

        geant4-pybind 0.1.3 binds G4Polycone's array arguments as pointers to ONE double, so a
        polycone of more than one plane cannot be constructed from Python. Geant4's own GDML reader
        can: the solid is read from a two-volume GDML snippet and taken from the G4SolidStore.
        """
        if not len(z_mm) == len(rmin_mm) == len(rmax_mm) >= 2:
            raise ValueError("a polycone needs at least two z planes, with rmin and rmax for each")
        planes = "".join(f'<zplane z="{z!r}" rmin="{a!r}" rmax="{b!r}"/>'
                         for z, a, b in zip(map(float, z_mm), map(float, rmin_mm), map(float, rmax_mm),
                                            strict=True))
        holder = f"{name}__snippet_world"
        text = ('<?xml version="1.0" encoding="UTF-8"?>\n<gdml><solids>'
                f'<polycone name="{name}" startphi="0" deltaphi="360" aunit="deg" lunit="mm">{planes}</polycone>'
                f'<box name="{holder}" x="1" y="1" z="1" lunit="mm"/></solids><structure>'
                f'<volume name="{holder}"><materialref ref="G4_Galactic"/><solidref ref="{holder}"/></volume>'
                f'</structure><setup name="Default" version="1.0"><world ref="{holder}"/></setup></gdml>\n')
        with tempfile.TemporaryDirectory(prefix="g4polycone-") as tmp:
            path = Path(tmp) / "polycone.gdml"
            path.write_text(text)
            parser = self.keep(self.g4.G4GDMLParser())
            parser.Read(str(path), False)
        solid = self.g4.G4SolidStore.GetInstance().GetSolid(name, True, True)
        if solid is None or solid.GetEntityType() != "G4Polycone":
            raise RuntimeError(f"polycone {name!r} was not read back")
        return self.keep(solid)

    def logical(self, solid: Any, material: Any, name: str) -> Any:
        return self.keep(self.g4.G4LogicalVolume(solid, material, name))

    def union(self, name: str, first: Any, second: Any, offset: Vec3) -> Any:
        return self.keep(self.g4.G4UnionSolid(name, first, second, None, self.three(offset)))

    def three(self, v: Sequence[float]) -> Any:
        return self.keep(self.g4.G4ThreeVector(float(v[0]), float(v[1]), float(v[2])))

    def world(self, half_mm: float) -> tuple[Any, Any]:
        """A G4_AIR box WITHOUT optical properties: a photon reaching it is killed (NoRINDEX)."""
        solid = self.solid("G4Box", "world", half_mm, half_mm, half_mm)
        lv = self.logical(solid, self.nist("G4_AIR"), "world")
        pv = self.keep(self.g4.G4PVPlacement(None, self.g4.G4ThreeVector(), lv, "world", None, False, 0))
        return lv, pv

    def place(self, logical: Any, name: str, mother: Any, position: Sequence[float] = (0.0, 0.0, 0.0),
              axis: Sequence[float] | None = None, copy: int = 0, check: bool | None = None) -> Any:
        """Place ``logical`` in ``mother`` at ``position`` (mm) with its local +z along ``axis``.

        The rotation is rotateY(θ) then rotateZ(φ) of the axis' polar angles, passed as an active
        G4Transform3D, so the daughter's local +z points along ``axis`` in the mother's frame.
        """
        g4 = self.g4
        pos = g4.G4ThreeVector(float(position[0]), float(position[1]), float(position[2]))
        chk = self.check_overlaps if check is None else check
        if axis is None:
            pv = g4.G4PVPlacement(None, pos, logical, name, mother, False, copy, False)
            self.keep(pos)
            return self._checked(self.keep(pv), chk)
        x, y, z = (float(a) for a in axis)
        norm = math.sqrt(x * x + y * y + z * z)
        rot = self.keep(g4.G4RotationMatrix())
        rot.rotateY(math.acos(max(-1.0, min(1.0, z / norm))))
        rot.rotateZ(math.atan2(y, x))
        transform = self.keep(g4.G4Transform3D(rot, pos))
        self.keep(pos)
        pv = self.keep(g4.G4PVPlacement(transform, logical, name, mother, False, copy, False))
        return self._checked(pv, chk)

    def _checked(self, pv: Any, check: bool) -> Any:
        """Geant4's overlap check (1000 surface points, no tolerance); overlapping names are kept."""
        if check and pv.CheckOverlaps(1000, 0.0, False):
            self.overlaps.append(pv.GetName())
        return pv


def describe(props: Mapping[str, Table | float]) -> dict[str, Any]:
    """Property tables as JSON: a constant as a number, a table as {wavelength_nm, value} lists."""
    out: dict[str, Any] = {}
    for key, value in props.items():
        if isinstance(value, int | float):
            out[key] = float(value)
        elif len(set(value[1])) == 1:
            out[key] = float(value[1][0])
        else:
            out[key] = {"wavelength_nm": [float(w) for w in value[0]], "value": [float(v) for v in value[1]]}
    return out
