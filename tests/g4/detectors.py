"""The test detectors, constructed in Geant4: one function per detector, plus their shared parts.

Each function takes a ``Kit`` (which keeps every Geant4 object alive) and keyword parameters and
returns a ``Geometry``: the world volumes, the PMT placements (global position of the placed volume
whose translation is the PMTINFO position, and the direction of its local +z) and a JSON-able
``meta`` describing dimensions, materials, surfaces and the physics one can check analytically.
The same function serves both the GDML writer (``tests.g4.build``) and the in-memory geometry of
``tests.g4.simulate --build`` (which proves the GDML round trip).

Conventions common to all detectors (lengths mm, times ns, wavelengths nm):

- world: ``G4_AIR`` box WITHOUT optical properties, so a photon leaving the detector is killed
  (NoRINDEX); inside it a ``hall`` (also G4_AIR, no properties) holds the detector, so that no
  border surface ever names the world's physical volume (GDML has no physvol for the world).
- a ``tank`` of ``steel`` (Fe, no optical properties) holds the liquid; the tank wall surface is a
  skin on the tank's logical volume (``tank_wall``), which Geant4 applies where photons leave the
  liquid (the liquid itself carries no skin, so its daughters' boundaries stay Fresnel).
- photocathodes are ``dielectric_metal`` surfaces (REFLECTIVITY 0 unless said, EFFICIENCY = QE);
  the volume behind each photocathode is the one ``simulate`` makes sensitive.
- materials are built by hand and never named ``Water`` (G4OpRayleigh would then invent a Rayleigh
  length for a material without a RAYLEIGH table).
- Geant4's GDML writer appends ``0x<address>`` to every name (unique names); the names below are
  those before the suffix (Geant4's reader strips everything from the first ``0x``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.g4 import tables
from tests.g4.kit import Kit, Vec3
from tests.g4.tables import Table, flat

TWO_PI = 2.0 * math.pi


@dataclass
class Geometry:
    world_lv: Any
    world_pv: Any
    pmt_positions: list[Vec3]
    pmt_directions: list[Vec3]
    meta: dict[str, Any]
    pmt_types: list[int] = field(default_factory=list)


# ------------------------------------------------------------------------------ shared parts


def fibonacci_sphere(n: int) -> list[Vec3]:
    """n unit vectors on a Fibonacci lattice (z from near +1 to near -1)."""
    golden = math.pi * (3.0 - math.sqrt(5.0))
    out = []
    for i in range(n):
        z = 1.0 - (2.0 * i + 1.0) / n
        r = math.sqrt(max(0.0, 1.0 - z * z))
        out.append((r * math.cos(golden * i), r * math.sin(golden * i), z))
    return out


def min_spacing(points: list[Vec3], cell_mm: float | None = None) -> float:
    """Smallest distance between two points, found on a hash grid of ``cell_mm`` (O(n)).

    Pairs farther apart than ``cell_mm`` are not compared, so the result is exact whenever it is
    below ``cell_mm`` and ``cell_mm`` otherwise. Default cell: 1.5 x the mean spacing of n points
    spread over the sphere through the farthest one.
    """
    if len(points) < 2:
        return math.inf
    if cell_mm is None:
        radius = max(math.sqrt(x * x + y * y + z * z) for x, y, z in points)
        cell_mm = 1.5 * radius * math.sqrt(4.0 * math.pi / len(points))
    grid: dict[tuple[int, int, int], list[int]] = {}
    for i, p in enumerate(points):
        grid.setdefault((int(p[0] // cell_mm), int(p[1] // cell_mm), int(p[2] // cell_mm)), []).append(i)
    best = cell_mm
    for (cx, cy, cz), members in grid.items():
        near = [j for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)
                for j in grid.get((cx + dx, cy + dy, cz + dz), ())]
        for i in members:
            for j in near:
                if j > i:
                    best = min(best, math.dist(points[i], points[j]))
    return best


def toward(origin: Vec3, target: Vec3 = (0.0, 0.0, 0.0)) -> Vec3:
    d = [t - o for o, t in zip(origin, target, strict=True)]
    n = math.sqrt(sum(x * x for x in d))
    return (d[0] / n, d[1] / n, d[2] / n)


def table_or_flat(value: float | Table) -> Table:
    return flat(value) if isinstance(value, int | float) else value


def liquid(kit: Kit, name: str, rindex: float | Table, abslength_mm: float | Table,
           rayleigh_mm: float | Table, density: float = 1.0, atoms: dict[str, int] | None = None,
           extra: dict[str, Table | float] | None = None) -> Any:
    """A liquid with RINDEX and optional ABSLENGTH / RAYLEIGH (a length of 0 leaves the process out)."""
    props: dict[str, Table | float] = {"RINDEX": table_or_flat(rindex)}
    if not (isinstance(abslength_mm, int | float) and abslength_mm <= 0):
        props["ABSLENGTH"] = table_or_flat(abslength_mm)
    if not (isinstance(rayleigh_mm, int | float) and rayleigh_mm <= 0):
        props["RAYLEIGH"] = table_or_flat(rayleigh_mm)
    props.update(extra or {})
    return kit.material(name, density, atoms or {"H": 2, "O": 1}, props)


def glass(kit: Kit, rindex: float = 1.49, name: str = "glass") -> Any:
    return kit.material(name, 2.23, {"Si": 1, "O": 2}, {"RINDEX": flat(rindex)})


def vacuum(kit: Kit) -> Any:
    """'Vacuum' with RINDEX 1.0 (a very thin hydrogen gas: it must have a properties table)."""
    return kit.material("vacuum", 1e-20, {"H": 1}, {"RINDEX": flat(1.0)})


def steel(kit: Kit) -> Any:
    return kit.material("steel", 7.87, {"Fe": 1})


def frame(kit: Kit, half_mm: float) -> tuple[Any, Any, Any, Any]:
    """world (half_mm + 100) ⊃ hall (half_mm): world_lv, world_pv, hall_lv, hall_pv."""
    world_lv, world_pv = kit.world(half_mm + 100.0)
    hall_s = kit.solid("G4Box", "hall", half_mm, half_mm, half_mm)
    hall_lv = kit.logical(hall_s, kit.nist("G4_AIR"), "hall")
    hall_pv = kit.place(hall_lv, "hall", world_lv)
    return world_lv, world_pv, hall_lv, hall_pv


def wall_surface(kit: Kit, reflectivity: float, finish: str = "polished", name: str = "tank_wall") -> Any:
    """The tank wall: dielectric_metal, REFLECTIVITY ``reflectivity`` (0 = black absorber), EFFICIENCY 0."""
    return kit.optical_surface(name, "dielectric_metal", finish,
                               {"REFLECTIVITY": flat(reflectivity), "EFFICIENCY": flat(0.0)})


def photocathode(kit: Kit, qe: float | Table, name: str = "photocathode") -> Any:
    return kit.optical_surface(name, "dielectric_metal", "polished",
                               {"REFLECTIVITY": flat(0.0), "EFFICIENCY": table_or_flat(qe)})


def absorption_factor(path_mm: float, *lengths_mm: float) -> float:
    """exp(-path Σ 1/L) over the given attenuation lengths (0 = process off)."""
    inv = sum(1.0 / length for length in lengths_mm if length > 0)
    return math.exp(-path_mm * inv)


# Bulb PMT of detectors (a) and (c): glass = dome + neck, inner vacuum = smaller dome + neck.
BULB: dict[str, Any] = {
    "dome_semi_axes_mm": [100.0, 100.0, 65.0],  # G4Ellipsoid, z cut [0, 65]: the front half
    "neck_radius_mm": 40.0, "neck_z_mm": [-100.0, 10.0],  # G4Tubs, overlapping the dome by 10 mm
    "glass_thickness_mm": 5.0,
    "inner_dome_semi_axes_mm": [95.0, 95.0, 60.0], "inner_neck_radius_mm": 35.0,
    "inner_neck_z_mm": [-95.0, 5.0],
}


def bulb_pmt(kit: Kit, glass_mat: Any, vacuum_mat: Any) -> tuple[Any, Any]:
    """The bulb PMT: ``pmt_glass`` LV (union) holding ``pmt_inner`` (vacuum union) at its origin.

    Local frame: the dome's equator at z = 0, the dome (front) towards +z, the neck behind.
    Returns (glass_lv, inner_pv); the caller places glass_lv and adds one border surface
    photocathode glass_pv -> inner_pv per placement.
    """
    a, b, c = BULB["dome_semi_axes_mm"]
    dome = kit.solid("G4Ellipsoid", "pmt_dome", a, b, c, 0.0, c)
    z0, z1 = BULB["neck_z_mm"]
    neck = kit.solid("G4Tubs", "pmt_neck", 0.0, BULB["neck_radius_mm"], (z1 - z0) / 2, 0.0, TWO_PI)
    bulb = kit.union("pmt_glass", dome, neck, (0.0, 0.0, (z0 + z1) / 2))
    glass_lv = kit.logical(bulb, glass_mat, "pmt_glass")
    ia, ib, ic = BULB["inner_dome_semi_axes_mm"]
    idome = kit.solid("G4Ellipsoid", "pmt_inner_dome", ia, ib, ic, 0.0, ic)
    iz0, iz1 = BULB["inner_neck_z_mm"]
    ineck = kit.solid("G4Tubs", "pmt_inner_neck", 0.0, BULB["inner_neck_radius_mm"], (iz1 - iz0) / 2,
                      0.0, TWO_PI)
    inner = kit.union("pmt_inner", idome, ineck, (0.0, 0.0, (iz0 + iz1) / 2))
    inner_lv = kit.logical(inner, vacuum_mat, "pmt_inner")
    inner_pv = kit.place(inner_lv, "pmt_inner", glass_lv)
    return glass_lv, inner_pv


def cylinder_pmt_layout(radius: float, half_height: float, n_rings: int, per_ring: int,
                        per_cap: int) -> list[Vec3]:
    """Bulb centres: ``n_rings`` staggered rings of ``per_ring`` on the barrel (150 mm inside the
    wall), ``per_cap`` on each end cap (150 mm inside, at 40 % of the radius)."""
    out: list[Vec3] = []
    rho = radius - 150.0
    span = half_height - 300.0
    for k in range(n_rings):
        z = -span + (2 * k + 1) * span / n_rings if n_rings > 1 else 0.0
        for j in range(per_ring):
            phi = TWO_PI * j / per_ring + (math.pi / per_ring if k % 2 else 0.0)
            out.append((rho * math.cos(phi), rho * math.sin(phi), z))
    for zc in (half_height - 150.0, -(half_height - 150.0)):
        for j in range(per_cap):
            phi = TWO_PI * j / per_cap + math.pi / 4
            out.append((0.4 * radius * math.cos(phi), 0.4 * radius * math.sin(phi), zc))
    return out


def finish(kit: Kit, world_lv: Any, world_pv: Any, positions: list[Vec3], directions: list[Vec3],
           meta: dict[str, Any]) -> Geometry:
    meta["materials"] = kit.materials
    meta["optical_surfaces"] = kit.surfaces
    meta["logical_surfaces"] = kit.attachments
    meta["n_pmts"] = len(positions)
    return Geometry(world_lv, world_pv, positions, directions, meta, [1] * len(positions))


# ------------------------------------------------------------------------------ (a) and (c)


def _cylinder(kit: Kit, *, detector: str, radius_mm: float, half_height_mm: float, n_rings: int,
              per_ring: int, per_cap: int, water_props: dict[str, Any], qe: float | Table,
              glass_rindex: float, wall_reflectivity: float, wall_finish: str,
              wls: dict[str, Any] | None, params: dict[str, Any]) -> Geometry:
    half = max(radius_mm, half_height_mm) + 200.0
    world_lv, world_pv, hall_lv, _ = frame(kit, half)
    water = liquid(kit, "water", **water_props)
    glass_mat = glass(kit, glass_rindex)
    vac = vacuum(kit)
    tank_s = kit.solid("G4Tubs", "tank", 0.0, radius_mm + 10.0, half_height_mm + 10.0, 0.0, TWO_PI)
    tank_lv = kit.logical(tank_s, steel(kit), "tank")
    kit.place(tank_lv, "tank", hall_lv)
    kit.skin("tank_wall", tank_lv, wall_surface(kit, wall_reflectivity, wall_finish))
    water_s = kit.solid("G4Tubs", "water", 0.0, radius_mm, half_height_mm, 0.0, TWO_PI)
    water_lv = kit.logical(water_s, water, "water")
    kit.place(water_lv, "water", tank_lv)

    glass_lv, inner_pv = bulb_pmt(kit, glass_mat, vac)
    cathode = photocathode(kit, qe)
    positions = cylinder_pmt_layout(radius_mm, half_height_mm, n_rings, per_ring, per_cap)
    directions = [toward(p) for p in positions]
    for k, (p, d) in enumerate(zip(positions, directions, strict=True)):
        pv = kit.place(glass_lv, f"pmt_{k}", water_lv, p, d, copy=k)
        kit.border(f"photocathode_{k}", pv, inner_pv, cathode, record=k == 0)
    kit.attachments[-1]["name"] = "photocathode_<k>"
    kit.attachments[-1]["from"] = "pmt_<k> (each bulb placement)"

    wls_meta = None
    if wls:
        wls_meta = _wls_plate(kit, water_lv, **wls)

    a, _, c = BULB["dome_semi_axes_mm"]
    omegas = [tables.spheroid_solid_angle(math.dist(p, (0.0, 0.0, 0.0)), a, c) for p in positions]
    frac = sum(omegas) / (4.0 * math.pi)
    meta: dict[str, Any] = {
        "detector": detector, "params": params,
        "volumes": {
            "world": "G4_AIR box (no optical properties)", "hall": "G4_AIR box inside the world",
            "tank": {"solid": "G4Tubs", "radius_mm": radius_mm + 10.0, "half_height_mm": half_height_mm + 10.0,
                     "material": "steel", "skin_surface": "tank_wall"},
            "water": {"solid": "G4Tubs", "radius_mm": radius_mm, "half_height_mm": half_height_mm,
                      "material": "water", "mother": "tank"},
        },
        "pmt": {
            "model": "bulb", "placed_volume": "pmt_glass (LV), placements pmt_<k>, mother water",
            "placement_origin": "dome equator centre; local +z (the dome) towards the tank centre",
            "glass": BULB, "glass_material": "glass", "inner_volume": "pmt_inner (vacuum)",
            "photocathode": "border surfaces photocathode_<k>: pmt_<k> -> pmt_inner, one per placement",
            "sensitive_volume": "pmt_inner",
        },
        "expected": {
            "source": "isotropic point at the tank centre",
            "dome_solid_angle_fraction": frac,
            "dome_solid_angle_per_pmt_sr": omegas,
            "note": "detected fraction ≈ QE x dome_solid_angle_fraction x Fresnel transmission into the "
                    "glass (0.3 % loss at normal incidence, more towards the dome's rim) x "
                    "exp(-path (1/ABSLENGTH + 1/RAYLEIGH)) over about |p| - 65 mm of water, for the "
                    "photons reaching a PMT unscattered; Rayleigh-scattered and reflected photons add "
                    "a little on top",
        },
    }
    if wls_meta:
        meta["wls"] = wls_meta
    return finish(kit, world_lv, world_pv, positions, directions, meta)


def water_cylinder(kit: Kit, *, radius_mm: float = 1500.0, half_height_mm: float = 1500.0,
                   n_rings: int = 4, per_ring: int = 10, per_cap: int = 4, rindex: float = 1.33,
                   abslength_mm: float = 20_000.0, rayleigh_mm: float = 30_000.0, qe: float = 0.25,
                   glass_rindex: float = 1.49, wall_reflectivity: float = 0.0,
                   wall_finish: str = "polished") -> Geometry:
    """(a) A cylindrical water tank with bulb PMTs on the barrel and the end caps, facing its centre.

    - world G4_AIR ⊃ hall G4_AIR ⊃ ``tank`` (steel G4Tubs, radius/half-height +10 mm, skin
      ``tank_wall``: dielectric_metal polished, REFLECTIVITY ``wall_reflectivity`` (0: black),
      EFFICIENCY 0) ⊃ ``water`` (G4Tubs radius 1500, half-height 1500; H2O 1.0 g/cm3, RINDEX 1.33,
      ABSLENGTH 20 m, RAYLEIGH 30 m, flat over 200-800 nm; 0 turns a process off).
    - 48 PMTs (default): 4 staggered rings of 10 on the barrel at radius R-150 and z = ±900, ±300;
      4 on each cap at z = ±(H-150), radius 0.4 R; each is the bulb ``pmt_glass`` (G4UnionSolid:
      G4Ellipsoid dome 100x100x65 cut to z ≥ 0 + G4Tubs neck r 40, z -100..10; glass RINDEX 1.49)
      placed as ``pmt_<k>`` in the water with local +z towards the tank centre; inside it
      ``pmt_inner`` (vacuum RINDEX 1.0: dome 95x95x60 + neck r 35, z -95..5).
    - photocathode: border surfaces ``photocathode_<k>`` pmt_<k> → pmt_inner, dielectric_metal,
      polished, REFLECTIVITY 0, EFFICIENCY ``qe`` (0.25): the glass/vacuum boundary absorbs every
      photon and detects a fraction QE. PMTINFO position = the placement of pmt_<k>.
    - expected: from the centre each dome subtends Ω = 2π(1 - √(D²-c²)/√(D²-c²+a²)) (meta).
    """
    params = {k: v for k, v in locals().items() if k != "kit"}
    water_props = {"rindex": rindex, "abslength_mm": abslength_mm, "rayleigh_mm": rayleigh_mm}
    return _cylinder(kit, detector="water_cylinder", radius_mm=radius_mm, half_height_mm=half_height_mm,
                     n_rings=n_rings, per_ring=per_ring, per_cap=per_cap, water_props=water_props, qe=qe,
                     glass_rindex=glass_rindex, wall_reflectivity=wall_reflectivity, wall_finish=wall_finish,
                     wls=None, params=params)


WLS_DEFAULT = {"radius_mm": 600.0, "thickness_mm": 2.0, "z_mm": -500.0, "time_constant_ns": 2.0}


def _wls_plate(kit: Kit, mother_lv: Any, radius_mm: float, thickness_mm: float, z_mm: float,
               time_constant_ns: float) -> dict[str, Any]:
    """A horizontal WLS disk ``wls_plate`` (acrylic-like, RINDEX 1.49) in the water at z = z_mm."""
    props: dict[str, Table | float] = {
        "RINDEX": flat(1.49),
        "WLSABSLENGTH": tables.sampled(tables.wls_abslength_mm),
        "WLSCOMPONENT": tables.sampled(tables.wls_emission),
        "WLSTIMECONSTANT": time_constant_ns,
        "WLSMEANNUMBERPHOTONS": 1.0,
    }
    mat = kit.material("wls", 1.19, {"C": 5, "H": 8, "O": 2}, props)
    solid = kit.solid("G4Tubs", "wls_plate", 0.0, radius_mm, thickness_mm / 2, 0.0, TWO_PI)
    lv = kit.logical(solid, mat, "wls_plate")
    kit.place(lv, "wls_plate", mother_lv, (0.0, 0.0, z_mm))
    return {"volume": "wls_plate", "solid": "G4Tubs", "radius_mm": radius_mm, "thickness_mm": thickness_mm,
            "centre_mm": [0.0, 0.0, z_mm], "material": "wls", "WLSTIMECONSTANT_ns": time_constant_ns,
            "WLSMEANNUMBERPHOTONS": 1.0,
            "wls_time_profile": "exponential",
            "note": "Geant4's default WLS time profile is 'delta'; tests.g4.simulate sets "
                    "/process/optical/wls/setTimeProfile exponential (not stored in GDML)"}


def dispersive(kit: Kit, *, radius_mm: float = 1500.0, half_height_mm: float = 1500.0, n_rings: int = 4,
               per_ring: int = 10, per_cap: int = 4, wall_reflectivity: float = 0.0,
               wls: bool = False) -> Geometry:
    """(c) The tank of (a) with wavelength-dependent optics (tables on 300-650 nm, every 10 nm).

    - water RINDEX: Cauchy n = A + B/λ², 1.36 at 300 nm → 1.33 at 650 nm (group velocity lower
      than c/n: Geant4 computes GROUPVEL from RINDEX); ABSLENGTH: 2 m at 300 nm, 40 m at 440 nm,
      3 m at 650 nm (log-linear between anchors in ``tables``); RAYLEIGH ∝ λ⁴, 10 m at 300 nm.
    - photocathode EFFICIENCY: bialkali-like, 0.05 at 300 nm, peak 0.28 at 390 nm, 0.02 at 650 nm.
    - everything else (tank, bulbs, names, channel order) as ``water_cylinder``.
    - ``wls=True`` adds ``wls_plate``: a G4Tubs disk r 600, 2 mm thick at z = -500 (material
      ``wls``: RINDEX 1.49, WLSABSLENGTH 0.5 mm below 380 nm rising to 10 m above 420 nm,
      WLSCOMPONENT Gaussian 450 nm sigma 20 nm, WLSTIMECONSTANT 2 ns, exponential time profile).
    """
    params = {k: v for k, v in locals().items() if k != "kit"}
    water_props = {"rindex": tables.sampled(tables.water_rindex),
                   "abslength_mm": tables.sampled(tables.water_abslength_mm),
                   "rayleigh_mm": tables.sampled(tables.water_rayleigh_mm)}
    geo = _cylinder(kit, detector="dispersive", radius_mm=radius_mm, half_height_mm=half_height_mm,
                    n_rings=n_rings, per_ring=per_ring, per_cap=per_cap, water_props=water_props,
                    qe=tables.sampled(tables.bialkali_qe), glass_rindex=1.49,
                    wall_reflectivity=wall_reflectivity, wall_finish="polished",
                    wls=dict(WLS_DEFAULT) if wls else None, params=params)
    geo.meta["expected"]["note"] += "; wavelength-dependent: evaluate QE and attenuation at each λ"
    return geo


# ------------------------------------------------------------------------------ (b)


def acrylic_vessel(kit: Kit, *, tank_radius_mm: float = 3000.0, vessel_radius_mm: float = 1500.0,
                   vessel_thickness_mm: float = 50.0, target: str = "lab", target_rindex: float = 1.50,
                   acrylic_rindex: float = 1.49, water_rindex: float = 1.33, n_pmts: int = 60,
                   pmt_distance_mm: float = 2500.0, pmt_radius_mm: float = 100.0, qe: float = 0.25,
                   water_abslength_mm: float = 30_000.0, water_rayleigh_mm: float = 0.0,
                   target_abslength_mm: float = 15_000.0, target_rayleigh_mm: float = 0.0,
                   acrylic_abslength_mm: float = 5_000.0) -> Geometry:
    """(b) An acrylic spherical vessel of liquid in a water sphere, disk PMTs in the water.

    - world ⊃ hall ⊃ ``tank`` (steel G4Orb 3010, skin ``tank_wall`` black) ⊃ ``water`` (G4Orb 3000,
      RINDEX 1.33, ABSLENGTH 30 m) ⊃ ``vessel`` (G4Orb 1500, ``acrylic`` RINDEX 1.49, ABSLENGTH 5 m)
      ⊃ ``target`` (G4Orb 1450: a 50 mm acrylic shell; ``lab`` C18H30 0.86 g/cm3 RINDEX 1.50,
      ABSLENGTH 15 m, or ``target="water"``: the same water material as outside).
    - 60 PMTs (default) on a Fibonacci sphere: disks ``pmt`` (G4Tubs r 100, 10 mm thick, water)
      centred 2500 mm from the centre, axis (local +z) towards it, placed as ``pmt_<k>`` in the
      water; the photocathode is the skin ``photocathode`` on the ``pmt`` LV (dielectric_metal,
      REFLECTIVITY 0, EFFICIENCY ``qe``). PMTINFO position = the disk centre.
    - expected (meta): photons from the centre cross both acrylic faces at normal incidence:
      T = (1 - R(n_target, n_acr))(1 - R(n_acr, n_water)), R = ((n1-n2)/(n1+n2))²; a disk's
      front face (at 2495 mm) subtends 2π(1 - d/√(d²+r²)).
    """
    params = {k: v for k, v in locals().items() if k != "kit"}
    world_lv, world_pv, hall_lv, _ = frame(kit, tank_radius_mm + 200.0)
    water = liquid(kit, "water", water_rindex, water_abslength_mm, water_rayleigh_mm)
    acrylic = liquid(kit, "acrylic", acrylic_rindex, acrylic_abslength_mm, 0.0, density=1.19,
                     atoms={"C": 5, "H": 8, "O": 2})
    if target == "lab":
        target_mat = liquid(kit, "lab", target_rindex, target_abslength_mm, target_rayleigh_mm,
                            density=0.86, atoms={"C": 18, "H": 30})
    elif target == "water":
        target_mat, target_rindex = water, water_rindex
        target_abslength_mm, target_rayleigh_mm = water_abslength_mm, water_rayleigh_mm
    else:
        raise ValueError(f"target must be 'lab' or 'water', not {target!r}")
    tank_lv = kit.logical(kit.solid("G4Orb", "tank", tank_radius_mm + 10.0), steel(kit), "tank")
    kit.place(tank_lv, "tank", hall_lv)
    kit.skin("tank_wall", tank_lv, wall_surface(kit, 0.0))
    water_lv = kit.logical(kit.solid("G4Orb", "water", tank_radius_mm), water, "water")
    kit.place(water_lv, "water", tank_lv)
    vessel_lv = kit.logical(kit.solid("G4Orb", "vessel", vessel_radius_mm), acrylic, "vessel")
    kit.place(vessel_lv, "vessel", water_lv)
    inner_r = vessel_radius_mm - vessel_thickness_mm
    target_lv = kit.logical(kit.solid("G4Orb", "target", inner_r), target_mat, "target")
    kit.place(target_lv, "target", vessel_lv)

    half_t = 5.0
    pmt_lv = kit.logical(kit.solid("G4Tubs", "pmt", 0.0, pmt_radius_mm, half_t, 0.0, TWO_PI), water, "pmt")
    kit.skin("photocathode", pmt_lv, photocathode(kit, qe))
    positions = [(pmt_distance_mm * x, pmt_distance_mm * y, pmt_distance_mm * z)
                 for x, y, z in fibonacci_sphere(n_pmts)]
    spacing = min_spacing(positions) if n_pmts > 1 else math.inf
    if spacing < 2 * pmt_radius_mm + 1.0:
        raise ValueError(f"PMTs overlap: spacing {spacing:.1f} mm < 2 r")
    directions = [toward(p) for p in positions]
    for k, (p, d) in enumerate(zip(positions, directions, strict=True)):
        kit.place(pmt_lv, f"pmt_{k}", water_lv, p, d, copy=k)

    r1 = tables.fresnel_normal(target_rindex, acrylic_rindex)
    r2 = tables.fresnel_normal(acrylic_rindex, water_rindex)
    d_face = pmt_distance_mm - half_t
    omega = tables.disk_solid_angle(d_face, pmt_radius_mm)
    atten = (absorption_factor(inner_r, target_abslength_mm, target_rayleigh_mm)
             * absorption_factor(vessel_thickness_mm, acrylic_abslength_mm)
             * absorption_factor(d_face - vessel_radius_mm, water_abslength_mm, water_rayleigh_mm))
    meta: dict[str, Any] = {
        "detector": "acrylic_vessel", "params": params,
        "volumes": {
            "tank": {"solid": "G4Orb", "radius_mm": tank_radius_mm + 10.0, "material": "steel",
                     "skin_surface": "tank_wall"},
            "water": {"solid": "G4Orb", "radius_mm": tank_radius_mm, "material": "water"},
            "vessel": {"solid": "G4Orb", "radius_mm": vessel_radius_mm, "material": "acrylic", "mother": "water"},
            "target": {"solid": "G4Orb", "radius_mm": inner_r, "material": target_mat.GetName(),
                       "mother": "vessel"},
        },
        "pmt": {"model": "disk", "placed_volume": "pmt (LV), placements pmt_<k>, mother water",
                "solid": {"G4Tubs_radius_mm": pmt_radius_mm, "thickness_mm": 2 * half_t},
                "photocathode": "skin surface photocathode on the pmt LV", "sensitive_volume": "pmt",
                "centre_distance_mm": pmt_distance_mm, "min_spacing_mm": spacing},
        "expected": {
            "source": "isotropic point at the centre (inside the target)",
            "fresnel_target_acrylic_normal": r1, "fresnel_acrylic_water_normal": r2,
            "transmission_normal": (1 - r1) * (1 - r2),
            "disk_solid_angle_sr": omega, "solid_angle_fraction": n_pmts * omega / (4 * math.pi),
            "attenuation_factor_radial": atten,
            "detected_fraction_first_pass": qe * (1 - r1) * (1 - r2) * atten * n_pmts * omega / (4 * math.pi),
            "note": "first pass only: Fresnel-reflected photons (0.3 %) cross the vessel again and can be "
                    "detected later; photons hitting a disk's rim are also detected",
        },
    }
    return finish(kit, world_lv, world_pv, positions, directions, meta)


# ------------------------------------------------------------------------------ (d)


def reflector(kit: Kit, *, half_mm: float = 1000.0, mirror_reflectivity: float = 0.9,
              diffuse_reflectivity: float = 0.8, sheet_reflectivity: float = 0.95, sheet_z_mm: float = 500.0,
              pmt_z_mm: float = 800.0, pmt_pitch_mm: float = 300.0, pmt_grid: int = 5,
              pmt_radius_mm: float = 80.0, qe: float = 0.25, rindex: float = 1.33,
              abslength_mm: float = 20_000.0, rayleigh_mm: float = 0.0) -> Geometry:
    """(d) PMTs looking down at a polished mirror (x < 0) and a diffuse reflector (x > 0).

    - world ⊃ hall ⊃ ``tank`` (steel box, half 1010, skin ``tank_wall`` black) ⊃ ``water`` (box half
      1000; RINDEX 1.33, ABSLENGTH 20 m, no Rayleigh).
    - ``mirror`` (G4_Al box 980 x 1980 x 10 at x = -500, top face z = -990): skin ``mirror_surface``
      dielectric_metal polished, REFLECTIVITY 0.9 (specular).
    - ``diffuser`` (same box at x = +500): skin ``diffuse_surface`` dielectric_metal ground, unified,
      sigma_alpha 0, no lobe/spike/backscatter constants, REFLECTIVITY 0.8: Lambertian reflection.
    - ``sheet`` (acrylic box 1980 x 1980 x 10 at z = 500, RINDEX 1.49): border surface
      ``sheet_surface`` water → sheet, dielectric_dielectric polished unified, REFLECTIVITY 0.95:
      each crossing from the water into the sheet (either way up) absorbs 5 % at the surface,
      the rest sees Fresnel; sheet → water has no surface (plain Fresnel).
    - 25 PMTs: disks ``pmt`` (G4Tubs r 80, 10 mm) on a 5 x 5 grid of pitch 300 at z = 800 facing
      -z (``pmt_<k>``, k = i·5 + j for x = (i-2)·300, y = (j-2)·300), skin ``photocathode`` QE 0.25.
    - suggested source (meta): point at (0, 0, 0) emitting into the lower hemisphere, so no photon
      reaches a PMT without a reflection; PMTs at x < 0 see the mirror image of the source at
      z = -1980 (analytic fraction in meta), those at x > 0 the Lambertian glow.
    """
    params = {k: v for k, v in locals().items() if k != "kit"}
    world_lv, world_pv, hall_lv, _ = frame(kit, half_mm + 200.0)
    water = liquid(kit, "water", rindex, abslength_mm, rayleigh_mm)
    acrylic = liquid(kit, "acrylic", 1.49, 0.0, 0.0, density=1.19, atoms={"C": 5, "H": 8, "O": 2})
    aluminium = kit.material("aluminium", 2.70, {"Al": 1})
    tank_lv = kit.logical(kit.solid("G4Box", "tank", half_mm + 10, half_mm + 10, half_mm + 10), steel(kit), "tank")
    kit.place(tank_lv, "tank", hall_lv)
    kit.skin("tank_wall", tank_lv, wall_surface(kit, 0.0))
    water_lv = kit.logical(kit.solid("G4Box", "water", half_mm, half_mm, half_mm), water, "water")
    water_pv = kit.place(water_lv, "water", tank_lv)

    plate_half = (half_mm / 2 - 10.0, half_mm - 10.0, 5.0)
    plate_z = -half_mm + 5.0
    mirror_top = plate_z + 5.0
    mirror_lv = kit.logical(kit.solid("G4Box", "mirror", *plate_half), aluminium, "mirror")
    kit.place(mirror_lv, "mirror", water_lv, (-half_mm / 2, 0.0, plate_z))
    kit.skin("mirror_surface", mirror_lv, kit.optical_surface(
        "mirror_surface", "dielectric_metal", "polished", {"REFLECTIVITY": flat(mirror_reflectivity)}))
    diffuser_lv = kit.logical(kit.solid("G4Box", "diffuser", *plate_half), aluminium, "diffuser")
    kit.place(diffuser_lv, "diffuser", water_lv, (half_mm / 2, 0.0, plate_z))
    kit.skin("diffuse_surface", diffuser_lv, kit.optical_surface(
        "diffuse_surface", "dielectric_metal", "ground",
        {"REFLECTIVITY": flat(diffuse_reflectivity), "SPECULARLOBECONSTANT": flat(0.0),
         "SPECULARSPIKECONSTANT": flat(0.0), "BACKSCATTERCONSTANT": flat(0.0)}))
    sheet_lv = kit.logical(kit.solid("G4Box", "sheet", half_mm - 10.0, half_mm - 10.0, 5.0), acrylic, "sheet")
    sheet_pv = kit.place(sheet_lv, "sheet", water_lv, (0.0, 0.0, sheet_z_mm))
    kit.border("sheet_surface", water_pv, sheet_pv, kit.optical_surface(
        "sheet_surface", "dielectric_dielectric", "polished", {"REFLECTIVITY": flat(sheet_reflectivity)}))

    half_t = 5.0
    pmt_lv = kit.logical(kit.solid("G4Tubs", "pmt", 0.0, pmt_radius_mm, half_t, 0.0, TWO_PI), water, "pmt")
    kit.skin("photocathode", pmt_lv, photocathode(kit, qe))
    positions: list[Vec3] = []
    mid = (pmt_grid - 1) / 2
    for i in range(pmt_grid):
        for j in range(pmt_grid):
            positions.append(((i - mid) * pmt_pitch_mm, (j - mid) * pmt_pitch_mm, pmt_z_mm))
    directions: list[Vec3] = [(0.0, 0.0, -1.0)] * len(positions)
    for k, (p, d) in enumerate(zip(positions, directions, strict=True)):
        kit.place(pmt_lv, f"pmt_{k}", water_lv, p, d, copy=k)

    expected = reflector_expectation(
        positions, face_z=pmt_z_mm - half_t, pmt_radius=pmt_radius_mm, plate_top=mirror_top,
        plate_half=plate_half, qe=qe, mirror_r=mirror_reflectivity, diffuse_r=diffuse_reflectivity,
        sheet=sheet_reflectivity * (1 - tables.fresnel_normal(rindex, 1.49)) / (1 + tables.fresnel_normal(rindex, 1.49)),
        lengths=(abslength_mm, rayleigh_mm), half_mm=half_mm)
    meta: dict[str, Any] = {
        "detector": "reflector", "params": params,
        "volumes": {
            "tank": {"solid": "G4Box", "half_mm": half_mm + 10, "material": "steel", "skin_surface": "tank_wall"},
            "water": {"solid": "G4Box", "half_mm": half_mm, "material": "water"},
            "mirror": {"solid": "G4Box", "half_mm": list(plate_half), "centre_mm": [-half_mm / 2, 0.0, plate_z],
                       "material": "aluminium", "skin_surface": "mirror_surface", "top_face_z_mm": mirror_top},
            "diffuser": {"solid": "G4Box", "half_mm": list(plate_half), "centre_mm": [half_mm / 2, 0.0, plate_z],
                         "material": "aluminium", "skin_surface": "diffuse_surface"},
            "sheet": {"solid": "G4Box", "half_mm": [half_mm - 10, half_mm - 10, 5.0],
                      "centre_mm": [0.0, 0.0, sheet_z_mm], "material": "acrylic",
                      "border_surface": "sheet_surface (water -> sheet)"},
        },
        "pmt": {"model": "disk", "placed_volume": "pmt (LV), placements pmt_<k>, mother water",
                "solid": {"G4Tubs_radius_mm": pmt_radius_mm, "thickness_mm": 2 * half_t},
                "photocathode": "skin surface photocathode on the pmt LV", "sensitive_volume": "pmt",
                "facing": "-z"},
        "expected": {
            "source": "point at (0, 0, 0), isotropic in the lower hemisphere (dir_z < 0)",
            **expected,
            "note": "fractions of the photons EMITTED INTO THE LOWER HEMISPHERE detected by each PMT "
                    "after exactly one reflection: via the mirror (image source at z = 2 x top face; "
                    "0 where the image ray misses the mirror) and via the Lambertian diffuser "
                    "(numerical integral over its face, 5 mm cells); small-disk approximation, one "
                    "upward sheet crossing (0.95 x slab transmission (1-R)/(1+R), normal incidence), "
                    "bulk attenuation along the path. Light reflected more than once (a few %) "
                    "is not included",
        },
    }
    return finish(kit, world_lv, world_pv, positions, directions, meta)


def reflector_expectation(positions: list[Vec3], *, face_z: float, pmt_radius: float, plate_top: float,
                          plate_half: tuple[float, float, float], qe: float, mirror_r: float, diffuse_r: float,
                          sheet: float, lengths: tuple[float, float], half_mm: float) -> dict[str, Any]:
    """Single-reflection detected fractions per PMT for the lower-hemisphere point source at 0."""
    import numpy as np

    inv_l = sum(1.0 / x for x in lengths if x > 0)
    area = math.pi * pmt_radius**2
    # A source emitting uniformly into 2π sr: intensity 1/(2π) per sr per emitted photon.
    intensity = 1.0 / (2.0 * math.pi)
    image_z = 2.0 * plate_top
    mirror, diffuse = [], []
    cell = 5.0
    xs = np.arange(half_mm / 2 - plate_half[0] + cell / 2, half_mm / 2 + plate_half[0], cell)
    ys = np.arange(-plate_half[1] + cell / 2, plate_half[1], cell)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    r1 = np.sqrt(gx**2 + gy**2 + plate_top**2)
    irradiance = intensity * (-plate_top) / r1**3  # photons per mm² per emitted photon
    for x, y, _ in positions:
        dz = face_z - image_z
        r = math.sqrt(x * x + y * y + dz * dz)
        t = (plate_top - image_z) / dz
        hx, hy = x * t, y * t
        on_mirror = (-half_mm / 2 - plate_half[0] < hx < -half_mm / 2 + plate_half[0]) and abs(hy) < plate_half[1]
        mirror.append(qe * mirror_r * sheet * intensity * area * (dz / r) / r**2 * math.exp(-r * inv_l)
                      if on_mirror else 0.0)
        dx, dy, h = x - gx, y - gy, face_z - plate_top
        r2 = np.sqrt(dx**2 + dy**2 + h**2)
        cos2 = (h / r2) ** 2  # Lambertian emission angle = PMT incidence angle (parallel planes)
        flux = diffuse_r * irradiance / math.pi * cos2 * area / r2**2 * np.exp(-(r1 + r2) * inv_l)
        diffuse.append(float(qe * sheet * flux.sum() * cell * cell))
    return {"per_pmt_fraction_via_mirror": mirror, "per_pmt_fraction_via_diffuser": diffuse,
            "fraction_via_mirror": sum(mirror), "fraction_via_diffuser": sum(diffuse)}


# ------------------------------------------------------------------------------ (e)

RAT_PMT: dict[str, dict[str, Any]] = {
    "envelope": {"solid": "G4Tubs", "z_mm": [-190.0, 190.0], "rmax_mm": 130.0, "material": "water",
                 "polycone_z_mm": [-190.0, 100.0]},
    "body": {"solid": "G4UnionSolid: G4Ellipsoid 127x127x90 (uncut) + G4Polycone neck",
             "ellipsoid_mm": [127.0, 127.0, 90.0],
             "neck_z_mm": [-180.0, -110.0, -40.0, 0.0], "neck_rmax_mm": [42.0, 42.0, 110.0, 110.0],
             "material": "glass"},
    "inner1": {"solid": "G4Ellipsoid 122x122x85 cut to z ≥ 0 (front vacuum)"},
    "inner2": {"solid": "G4UnionSolid: G4Ellipsoid 122x122x85 cut to z ≤ 0 + G4Polycone",
               "neck_z_mm": [-175.0, -110.0, -40.0, -1.0], "neck_rmax_mm": [37.0, 37.0, 105.0, 105.0]},
}


def rat_like(kit: Kit, *, n_pmts: int = 240, pmt_radius_mm: float = 9000.0, tank_radius_mm: float = 9500.0,
             shell: tuple[float, float] = (8780.0, 9250.0), rindex: float = 1.33,
             abslength_mm: float = 50_000.0, rayleigh_mm: float = 80_000.0, qe: float = 0.25,
             mirror_reflectivity: float = 0.9, container: bool = True, envelope: str = "tube") -> Geometry:
    """(e) A RAT-like water sphere with ``n_pmts`` RAT-style PMTs on a Fibonacci sphere (scale tests).

    - world ⊃ hall ⊃ ``tank`` (steel G4Orb 9510, skin ``tank_wall`` black) ⊃ ``water`` (G4Orb 9500;
      RINDEX 1.33, ABSLENGTH 50 m, RAYLEIGH 80 m) ⊃ ``pmt_shell`` (water G4Sphere 8780-9250: the
      PMTs' container, as Geant4 navigates much faster than with thousands of daughters directly in
      the water; ``container=False`` places them in the water) ⊃ n x ``pmt_<k>``.
    - the PMT, as RAT builds it, with logical volumes SHARED by all placements: ``pmt_envelope``
      (G4Tubs of water, z -190..190, r 130; ``envelope="polycone"``: G4Polycone z -190..100, whose
      extent Geant4 computes far more slowly when voxelising 10 000 of them: 13 s against a few)
      placed at the PMTINFO position with local +z
      towards the centre (PMT equator 9000 mm from it) ⊃ ``pmt_body`` (glass RINDEX 1.49:
      G4Ellipsoid 127x127x90 + G4Polycone neck) ⊃ ``pmt_inner1`` (front vacuum, ellipsoid cut to
      z ≥ 0) and ``pmt_inner2`` (back vacuum, ellipsoid z ≤ 0 + polycone), siblings inside the body.
    - surfaces: ``photocathode`` border pmt_body → pmt_inner1 (dielectric_metal polished,
      REFLECTIVITY 0, EFFICIENCY ``qe``) and ``pmt_mirror`` border pmt_body → pmt_inner2
      (dielectric_metal polished, REFLECTIVITY 0.9): one of each, since pmt_body is a single
      physical volume inside the shared envelope.
    - 10 000 PMTs at 9000 mm: minimum spacing 278 mm > 260 mm envelope diameter (checked).
    """
    params = {k: v for k, v in locals().items() if k != "kit"}
    params["shell"] = list(shell)
    world_lv, world_pv, hall_lv, _ = frame(kit, tank_radius_mm + 200.0)
    water = liquid(kit, "water", rindex, abslength_mm, rayleigh_mm)
    glass_mat = glass(kit)
    vac = vacuum(kit)
    tank_lv = kit.logical(kit.solid("G4Orb", "tank", tank_radius_mm + 10.0), steel(kit), "tank")
    kit.place(tank_lv, "tank", hall_lv)
    kit.skin("tank_wall", tank_lv, wall_surface(kit, 0.0))
    water_lv = kit.logical(kit.solid("G4Orb", "water", tank_radius_mm), water, "water")
    kit.place(water_lv, "water", tank_lv)
    mother_lv = water_lv
    if container:
        shell_s = kit.solid("G4Sphere", "pmt_shell", shell[0], shell[1], 0.0, TWO_PI, 0.0, math.pi)
        mother_lv = kit.logical(shell_s, water, "pmt_shell")
        kit.place(mother_lv, "pmt_shell", water_lv)

    g4 = kit.g4
    env = dict(RAT_PMT["envelope"])
    if envelope == "tube":
        z0, z1 = env["z_mm"]
        env_s = kit.solid("G4Tubs", "pmt_envelope", 0.0, env["rmax_mm"], (z1 - z0) / 2, 0.0, TWO_PI)
    elif envelope == "polycone":
        env.update(solid="G4Polycone", z_mm=env["polycone_z_mm"])
        env_s = kit.polycone("pmt_envelope", env["z_mm"], [0.0, 0.0], [env["rmax_mm"]] * 2)
    else:
        raise ValueError(f"envelope must be 'tube' or 'polycone', not {envelope!r}")
    env.pop("polycone_z_mm")
    env_lv = kit.logical(env_s, water, "pmt_envelope")
    body = RAT_PMT["body"]
    ea, eb, ec = body["ellipsoid_mm"]
    b_ell = kit.solid("G4Ellipsoid", "pmt_body_bulb", ea, eb, ec, 0.0, 0.0)
    b_neck = kit.polycone("pmt_body_neck", body["neck_z_mm"], [0.0] * 4, body["neck_rmax_mm"])
    body_lv = kit.logical(kit.union("pmt_body", b_ell, b_neck, (0.0, 0.0, 0.0)), glass_mat, "pmt_body")
    body_pv = kit.place(body_lv, "pmt_body", env_lv)
    t = 5.0
    i1 = kit.solid("G4Ellipsoid", "pmt_inner1", ea - t, eb - t, ec - t, 0.0, ec - t)
    inner1_lv = kit.logical(i1, vac, "pmt_inner1")
    inner1_pv = kit.place(inner1_lv, "pmt_inner1", body_lv)
    i2_ell = kit.solid("G4Ellipsoid", "pmt_inner2_bulb", ea - t, eb - t, ec - t, -(ec - t), 0.0)
    in2 = RAT_PMT["inner2"]
    i2_neck = kit.polycone("pmt_inner2_neck", in2["neck_z_mm"], [0.0] * 4, in2["neck_rmax_mm"])
    inner2_lv = kit.logical(kit.union("pmt_inner2", i2_ell, i2_neck, (0.0, 0.0, 0.0)), vac, "pmt_inner2")
    inner2_pv = kit.place(inner2_lv, "pmt_inner2", body_lv)
    kit.border("photocathode", body_pv, inner1_pv, photocathode(kit, qe))
    kit.border("pmt_mirror", body_pv, inner2_pv, kit.optical_surface(
        "pmt_mirror", "dielectric_metal", "polished", {"REFLECTIVITY": flat(mirror_reflectivity)}))

    positions = [(pmt_radius_mm * x, pmt_radius_mm * y, pmt_radius_mm * z) for x, y, z in fibonacci_sphere(n_pmts)]
    spacing = min_spacing(positions) if n_pmts > 1 else math.inf
    front = pmt_radius_mm - env["z_mm"][1]
    if spacing * front / pmt_radius_mm < 2 * env["rmax_mm"] + 1.0:
        raise ValueError(f"{n_pmts} PMTs do not fit at {pmt_radius_mm} mm: spacing {spacing:.1f} mm")
    back_corner = math.hypot(pmt_radius_mm - env["z_mm"][0], env["rmax_mm"])
    if container and not (shell[0] < front and back_corner < shell[1]):
        raise ValueError("the PMT envelopes do not fit in the container shell")
    directions = [toward(p) for p in positions]
    for k, (p, d) in enumerate(zip(positions, directions, strict=True)):
        kit.place(env_lv, f"pmt_{k}", mother_lv, p, d, copy=k, check=False)
    del g4

    omega = tables.spheroid_solid_angle(pmt_radius_mm, ea, ec)
    meta: dict[str, Any] = {
        "detector": "rat_like", "params": params,
        "volumes": {
            "tank": {"solid": "G4Orb", "radius_mm": tank_radius_mm + 10.0, "material": "steel",
                     "skin_surface": "tank_wall"},
            "water": {"solid": "G4Orb", "radius_mm": tank_radius_mm, "material": "water"},
            "pmt_shell": ({"solid": "G4Sphere", "rmin_mm": shell[0], "rmax_mm": shell[1], "material": "water",
                           "mother": "water"} if container else None),
        },
        "pmt": {"model": "rat_like", **RAT_PMT, "envelope": env, "glass_thickness_mm": t,
                "placed_volume": "pmt_envelope (LV, shared), placements pmt_<k>",
                "photocathode": "border surface photocathode: pmt_body -> pmt_inner1",
                "mirror": "border surface pmt_mirror: pmt_body -> pmt_inner2",
                "sensitive_volume": "pmt_inner1", "equator_distance_mm": pmt_radius_mm,
                "min_spacing_mm": spacing},
        "expected": {
            "source": "isotropic point at the centre",
            "bulb_solid_angle_sr": omega, "solid_angle_fraction": n_pmts * omega / (4 * math.pi),
            "attenuation_factor": absorption_factor(pmt_radius_mm - ec, abslength_mm, rayleigh_mm),
            "note": "the front ellipsoid (a 127, c 90) sets the silhouette from the centre; unscattered "
                    "detected fraction ≈ QE x solid_angle_fraction x attenuation_factor (absorption "
                    "and Rayleigh) x Fresnel transmission (0.997 at normal incidence); "
                    "Rayleigh-scattered photons are still detected sometimes and add about 10 % at "
                    "the defaults",
        },
    }
    return finish(kit, world_lv, world_pv, positions, directions, meta)


# ------------------------------------------------------------------------------ exact test cases


def sphere_wall(kit: Kit, *, radius_mm: float = 1000.0, rindex: float = 1.33, efficiency: float = 1.0,
                abslength_mm: float = 0.0, rayleigh_mm: float = 0.0) -> Geometry:
    """A water sphere whose whole wall detects: the exact case (harness self-test).

    - world ⊃ hall ⊃ ``wall`` (steel G4Orb radius+10, skin ``detector_wall``: dielectric_metal
      polished, REFLECTIVITY 0, EFFICIENCY ``efficiency``) ⊃ ``water`` (G4Orb 1000, RINDEX 1.33,
      no absorption or scattering by default).
    - PMTINFO: one channel at (0, 0, 0), the placement of ``wall`` (the sensitive volume).
    - expected: from the centre every photon reaches the wall at t = R n / c (flat RINDEX: group
      velocity c/n) and a fraction ``efficiency`` is detected.
    """
    params = {k: v for k, v in locals().items() if k != "kit"}
    world_lv, world_pv, hall_lv, _ = frame(kit, radius_mm + 200.0)
    water = liquid(kit, "water", rindex, abslength_mm, rayleigh_mm)
    wall_lv = kit.logical(kit.solid("G4Orb", "wall", radius_mm + 10.0), steel(kit), "wall")
    kit.place(wall_lv, "wall", hall_lv)
    kit.skin("detector_wall", wall_lv, kit.optical_surface(
        "detector_wall", "dielectric_metal", "polished",
        {"REFLECTIVITY": flat(0.0), "EFFICIENCY": flat(efficiency)}))
    water_lv = kit.logical(kit.solid("G4Orb", "water", radius_mm), water, "water")
    kit.place(water_lv, "water", wall_lv)
    meta: dict[str, Any] = {
        "detector": "sphere_wall", "params": params,
        "pmt": {"model": "wall", "placed_volume": "wall", "sensitive_volume": "wall"},
        "expected": {"source": "isotropic point at the centre", "hit_time_ns": radius_mm * rindex / tables.C_MM_PER_NS,
                     "detected_fraction": efficiency * absorption_factor(radius_mm, abslength_mm, rayleigh_mm)},
    }
    return finish(kit, world_lv, world_pv, [(0.0, 0.0, 0.0)], [(0.0, 0.0, 1.0)], meta)


def slab_stack(kit: Kit, *, water_rindex: float = 1.33, layers: list[list[Any]] | None = None,
               half_width_mm: float = 500.0, water_depth_mm: float = 500.0) -> Geometry:
    """Flat layers after a water slab, then a fully detecting plate: Fresnel self-test geometry.

    - world ⊃ hall ⊃ ``box`` (steel, skin ``black`` dielectric_metal REFLECTIVITY 0 EFFICIENCY 0)
      ⊃ ``water`` (G4Box, z from -500 to 0, RINDEX 1.33, no absorption) followed along +z by
      ``layers`` = [[name, rindex, thickness_mm], ...] (default glass 1.49 x 10 mm, vacuum 1.0 x
      490 mm), each a G4Box touching the previous one, then ``detector`` (steel plate, 10 mm, skin
      ``detector_surface`` dielectric_metal REFLECTIVITY 0 EFFICIENCY 1).
    - photons started in the water towards +z are either transmitted through every layer (and
      detected) or reflected back (absorbed by the box): detected fraction = transmittance.
    - PMTINFO: one channel, the ``detector`` placement (its centre).
    - expected (meta, normal incidence): incoherent multiple reflections, layer by layer,
      T_total from the 2 x 2 intensity transfer of each interface.
    """
    if layers is None:
        layers = [["glass", 1.49, 10.0], ["vacuum", 1.0, 490.0]]
    params = {k: v for k, v in locals().items() if k != "kit"}
    total = water_depth_mm + sum(float(t) for _, _, t in layers) + 10.0
    half_box = max(half_width_mm, total) + 20.0
    world_lv, world_pv, hall_lv, _ = frame(kit, half_box + 50.0)
    box_lv = kit.logical(kit.solid("G4Box", "box", half_box, half_box, half_box), steel(kit), "box")
    kit.place(box_lv, "box", hall_lv)
    kit.skin("black", box_lv, kit.optical_surface(
        "black", "dielectric_metal", "polished", {"REFLECTIVITY": flat(0.0), "EFFICIENCY": flat(0.0)}))
    z = -water_depth_mm
    z_start = z
    slabs: list[tuple[str, float, float]] = [("water", water_rindex, water_depth_mm)]
    slabs += [(str(n), float(r), float(t)) for n, r, t in layers]
    volumes = {}
    for name, n, thick in slabs:
        if name == "water":
            mat = liquid(kit, name, n, 0.0, 0.0)
        elif n == 1.0:  # a vacuum layer: thin hydrogen with RINDEX 1
            mat = kit.material(name, 1e-20, {"H": 1}, {"RINDEX": flat(n)})
        else:
            mat = kit.material(name, 2.23, {"Si": 1, "O": 2}, {"RINDEX": flat(n)})
        lv = kit.logical(kit.solid("G4Box", name, half_width_mm, half_width_mm, thick / 2), mat, name)
        kit.place(lv, name, box_lv, (0.0, 0.0, z + thick / 2))
        volumes[name] = {"rindex": n, "z_mm": [z, z + thick]}
        z += thick
    det_lv = kit.logical(kit.solid("G4Box", "detector", half_width_mm, half_width_mm, 5.0), steel(kit), "detector")
    det_pos = (0.0, 0.0, z + 5.0)
    kit.place(det_lv, "detector", box_lv, det_pos)
    kit.skin("detector_surface", det_lv, kit.optical_surface(
        "detector_surface", "dielectric_metal", "polished", {"REFLECTIVITY": flat(0.0), "EFFICIENCY": flat(1.0)}))
    meta: dict[str, Any] = {
        "detector": "slab_stack", "params": params, "layers": volumes, "water_start_z_mm": z_start,
        "detector_face_z_mm": z,
        "pmt": {"model": "plate", "placed_volume": "detector", "sensitive_volume": "detector"},
        "expected": {"transmittance_normal": stack_transmittance([n for _, n, _ in slabs])},
    }
    return finish(kit, world_lv, world_pv, [det_pos], [(0.0, 0.0, -1.0)], meta)


def stack_transmittance(indices: list[float]) -> float:
    """Incoherent normal-incidence transmittance of a stack n0 | n1 | ... | n_k (last = exit medium).

    Intensities add (no interference: Geant4 tracks photons, not waves). Two interfaces with
    (T1, R1) and (T2, R2) combine to T = T1 T2 / (1 - R1' R2) with R1' the reflectance of the first
    seen from inside (equal to R1 at normal incidence); fold the interfaces one by one.
    """
    t_acc, r_back = 1.0, 0.0  # transmittance so far, reflectance of the stack so far seen from inside
    for n1, n2 in itertools.pairwise(indices):
        r = tables.fresnel_normal(n1, n2)
        t_acc, r_back = t_acc * (1 - r) / (1 - r_back * r), r + (1 - r) ** 2 * r_back / (1 - r_back * r)
    return t_acc


DETECTORS: dict[str, Callable[..., Geometry]] = {
    "water_cylinder": water_cylinder,
    "acrylic_vessel": acrylic_vessel,
    "dispersive": dispersive,
    "reflector": reflector,
    "rat_like": rat_like,
    "sphere_wall": sphere_wall,
    "slab_stack": slab_stack,
}


def construct(kit: Kit, name: str, params: dict[str, Any]) -> Geometry:
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
    return DETECTORS[name](kit, **params)
