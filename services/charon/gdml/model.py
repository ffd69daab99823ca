"""What a GDML file describes, as frozen values: the model the detector importer consumes.

Units are Geant4's internal ones (mm, rad, MeV) unless a field name says otherwise
(``density_g_cm3``). Names are as written in the file (Geant4 writers append ``0x...`` pointer
suffixes; ``strip_pointer_suffix`` removes them for display), except materials, elements and
isotopes, which Geant4 keys by the stripped name and references by the stripped name too.
Mappings keep document order. Nothing here refers back to XML; every record carries the line of
the element it came from, for messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


def strip_pointer_suffix(name: str) -> str:
    """``G4GDMLRead::StripName``: everything from the first ``0x`` on is a pointer suffix."""
    idx = name.find("0x")
    return name if idx < 0 else name[:idx]


@dataclass(frozen=True, eq=False)
class Property:
    """One material or optical-surface property table (``<property name ref>``).

    ``energy`` holds photon energies in MeV exactly as the matrix's first column gives them (not
    sorted); ``value`` the second column as stored (GDML matrices are in Geant4 internal units
    already: lengths in mm, energies in MeV; nothing is rescaled). A constant property (a
    one-column matrix, a ``<constant>``, or ``<constproperty>``) has ``energy`` None and a
    one-element ``value``.
    """

    name: str
    energy: F64 | None
    value: F64
    line: int
    matrix: str | None = None  # the referenced <matrix>/<constant> name, None for <constproperty>


@dataclass(frozen=True)
class Isotope:
    name: str
    line: int
    Z: int
    N: int
    atom_g_mole: float | None


@dataclass(frozen=True)
class Component:
    """One ``<fraction n ref>`` (mass fraction) or ``<composite n ref>`` (atom count) of a mixture."""

    kind: str  # "fraction" | "composite"
    ref: str   # stripped name of an element, isotope or material (or a NIST name Geant4 would build)
    amount: float


@dataclass(frozen=True)
class Element:
    name: str
    line: int
    formula: str | None
    Z: float | None
    atom_g_mole: float | None
    components: tuple[Component, ...] = ()  # isotope fractions


@dataclass(frozen=True)
class Material:
    """A ``<material>``; optical physics needs only ``properties``, the rest is kept as data.

    ``nist`` is True for a ``G4_...`` name that the file references without defining it (Geant4
    builds it from its NIST database; it has no optical properties).
    """

    name: str
    line: int
    density_g_cm3: float | None
    properties: Mapping[str, Property]
    state: str | None = None          # solid | liquid | gas
    Z: float | None = None            # a single-element material given by Z and <atom>
    atom_g_mole: float | None = None
    temperature_kelvin: float | None = None
    pressure_pascal: float | None = None
    mee_ev: float | None = None       # mean excitation energy
    components: tuple[Component, ...] = ()
    nist: bool = False


@dataclass(frozen=True)
class DichroicData:
    """RAT's ``<dichroic_data>`` inside an ``<opticalsurface>``: a 2-D table data[x, y]."""

    x: F64
    y: F64
    data: F64  # shape (len(x), len(y))
    line: int


@dataclass(frozen=True)
class OpticalSurface:
    """An ``<opticalsurface>``; model/finish/type are Geant4 enum names (integers are mapped)."""

    name: str
    line: int
    model: str   # glisur | unified | LUT | DAVIS | dichroic
    finish: str  # polished | ground | ... | the LUT finishes, as G4OpticalSurfaceFinish names them
    type: str    # dielectric_metal | dielectric_dielectric | dielectric_LUT | dielectric_LUTDAVIS |
                 # dielectric_dichroic | firsov | x_ray | coated
    value: float  # sigma_alpha (unified) or polish (glisur), as written
    properties: Mapping[str, Property]
    dichroic: DichroicData | None = None


@dataclass(frozen=True)
class SkinSurface:
    name: str
    surface: str  # optical surface name
    volume: str   # logical volume name
    line: int


@dataclass(frozen=True)
class BorderSurface:
    """An ordered pair of physvol names as written; Geant4 resolves each to the first physvol of
    that name in creation (document) order, see ``GdmlDocument.physvols``."""

    name: str
    surface: str
    pv1: str
    pv2: str
    line: int


@dataclass(frozen=True, eq=False)
class Solid:
    """One solid element; ``params`` hold evaluated values in mm / rad (see ``charon.gdml.read_solids``
    for the keys of each kind). Lengths keep GDML's meaning: box/tube/cone/trd/trap/para ``z``
    (and box x, y ...) are FULL lengths as GDML writes them, eltube/arb8 ``dz`` half-lengths."""

    kind: str
    name: str
    line: int
    params: Mapping[str, Any]


@dataclass(frozen=True, eq=False)
class Placement:
    """One ``<physvol>``: daughter frame -> mother frame as a 4x4 object transform (det < 0 for a
    reflection). ``mother`` is the logical volume or assembly holding it."""

    name: str
    volume: str
    copynumber: int
    transform: F64
    line: int
    mother: str = ""


@dataclass(frozen=True)
class LogicalVolume:
    name: str
    material: str  # key into GdmlDocument.materials (stripped name)
    solid: str
    daughters: tuple[Placement, ...]
    auxiliary: tuple[tuple[str, str], ...]
    line: int


@dataclass(frozen=True)
class Assembly:
    name: str
    daughters: tuple[Placement, ...]
    line: int


@dataclass(frozen=True, eq=False)
class GdmlDocument:
    """A whole GDML file, cross-references checked.

    ``physvols`` maps each physvol name to its first placement in document order (the one
    Geant4's ``G4PhysicalVolumeStore`` returns for a border surface); physvols inside assemblies are
    not in it, since Geant4 renames them when the assembly is imprinted.
    """

    path: str
    materials: Mapping[str, Material]
    optical_surfaces: Mapping[str, OpticalSurface]
    skin_surfaces: tuple[SkinSurface, ...]
    border_surfaces: tuple[BorderSurface, ...]
    solids: Mapping[str, Solid]
    volumes: Mapping[str, LogicalVolume]
    assemblies: Mapping[str, Assembly]
    world: str
    physvols: Mapping[str, Placement] = field(default_factory=dict)
    elements: Mapping[str, Element] = field(default_factory=dict)
    isotopes: Mapping[str, Isotope] = field(default_factory=dict)
    setups: Mapping[str, str] = field(default_factory=dict)  # setup name -> world volume
    userinfo: tuple[tuple[str, str], ...] = ()
