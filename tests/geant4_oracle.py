"""Geant4's own reading of a GDML file, as JSON, for comparing charon's reader with it.

Run as a separate process (``python tests/geant4_oracle.py request.json response.json``) so
Geant4's global stores, its data-set check and any abort stay out of the test process. The
request names a GDML file and, per solid, points to classify; the response holds what Geant4's
G4GDMLParser built: solid volumes (GetCubicVolume), Inside and safety distance for each point,
every placement's object rotation and translation, material property tables and the logical
border and skin surfaces. A request ``{"write": path}`` instead builds a small geometry in
Geant4, writes it with G4GDMLParser::Write and returns Geant4's own view of it. Needs geant4_pybind; GEANT4_DATA_DIR must point at a directory with
an (empty) G4ENSDFSTATE3.0/ENSDFSTATE.dat before the import (see geant4-baseline.md).
"""

from __future__ import annotations

import json
import sys
from typing import Any


def write_geometry(path: str) -> dict[str, Any]:
    """Build a small detector with Geant4's C++ classes and write it with G4GDMLParser::Write; the
    truth returned is Geant4's in-memory geometry, to compare with charon's reading of the file."""
    import geant4_pybind as g4  # imported here: only this child process may load Geant4

    keep: list[Any] = []

    def k(obj: Any) -> Any:  # every Geant4 object must stay referenced, or Geant4 crashes later
        keep.append(obj)
        return obj

    water = g4.G4NistManager.Instance().FindOrBuildMaterial("G4_WATER")
    mpt = k(g4.G4MaterialPropertiesTable())
    energies = k(g4.G4doubleVector([2.0 * g4.eV, 3.0 * g4.eV, 4.0 * g4.eV]))
    mpt.AddProperty("RINDEX", energies, k(g4.G4doubleVector([1.33, 1.34, 1.35])))
    mpt.AddProperty("ABSLENGTH", energies, k(g4.G4doubleVector([10 * g4.m, 20 * g4.m, 5 * g4.m])))
    water.SetMaterialPropertiesTable(mpt)
    air = g4.G4NistManager.Instance().FindOrBuildMaterial("G4_AIR")

    world_s = k(g4.G4Box("world", 2 * g4.m, 2 * g4.m, 2 * g4.m))
    tank_s = k(g4.G4Tubs("tank", 0, 1.5 * g4.m, 1.5 * g4.m, 0, 2 * 3.141592653589793))
    box = k(g4.G4Box("box", 10 * g4.cm, 4 * g4.cm, 2 * g4.cm))
    bar = k(g4.G4Tubs("bar", 0, 1 * g4.cm, 15 * g4.cm, 0, 2 * 3.141592653589793))
    rot = k(g4.G4RotationMatrix())
    rot.rotateX(0.4)
    rot.rotateZ(0.9)
    # the passive (rotMatrix, trans) constructor and the active G4Transform3D one
    passive = k(g4.G4UnionSolid("u_passive", box, bar, rot, g4.G4ThreeVector(3 * g4.cm, 1 * g4.cm, 0)))
    active = k(g4.G4SubtractionSolid("s_active", box, bar, k(g4.G4Transform3D(rot, g4.G4ThreeVector(0, 2 * g4.cm, 0)))))
    solids = {"u_passive": passive, "s_active": active}

    world_lv = k(g4.G4LogicalVolume(world_s, air, "world_lv"))
    tank_lv = k(g4.G4LogicalVolume(tank_s, water, "tank_lv"))
    lvs = {n: k(g4.G4LogicalVolume(s, water, n + "_lv")) for n, s in solids.items()}
    world_pv = k(g4.G4PVPlacement(None, g4.G4ThreeVector(), world_lv, "world_pv", None, False, 0))
    tank_pv = k(g4.G4PVPlacement(None, g4.G4ThreeVector(0, 0, 10 * g4.cm), tank_lv, "tank_pv", world_lv, False, 0))
    placed = []
    for i, (n, lv) in enumerate(lvs.items()):
        r = k(g4.G4RotationMatrix())
        r.rotateY(0.3 + i)
        r.rotateZ(-0.7 * i)
        placed.append(k(g4.G4PVPlacement(r, g4.G4ThreeVector(40 * g4.cm * (i + 1), -20 * g4.cm, 5 * g4.cm),
                                         lv, n + "_pv", tank_lv, False, i + 1)))
    surf = k(g4.G4OpticalSurface("mirror", g4.G4OpticalSurfaceModel.unified, g4.G4OpticalSurfaceFinish.ground,
                                 g4.G4SurfaceType.dielectric_metal, 0.2))
    smpt = k(g4.G4MaterialPropertiesTable())
    smpt.AddProperty("REFLECTIVITY", energies, k(g4.G4doubleVector([0.9, 0.8, 0.7])))
    surf.SetMaterialPropertiesTable(smpt)
    k(g4.G4LogicalSkinSurface("skin", lvs["s_active"], surf))
    k(g4.G4LogicalBorderSurface("border", placed[0], tank_pv, surf))
    g4.G4GDMLParser().Write(path, world_lv, True)
    del world_pv

    rng = __import__("random").Random(3)
    truth: dict[str, Any] = {"solids": {}, "physvols": []}
    for n, solid in solids.items():
        points, inside = [], []
        for _ in range(600):
            p = g4.G4ThreeVector(rng.uniform(-110, 110), rng.uniform(-50, 50), rng.uniform(-160, 160))
            where = solid.Inside(p)
            safety = solid.DistanceToOut(p) if where == g4.EInside.kInside else solid.DistanceToIn(p)
            if where != g4.EInside.kSurface and safety > 1.0:
                points.append([p.x, p.y, p.z])
                inside.append(where == g4.EInside.kInside)
        truth["solids"][n] = {"points": points, "inside": inside}
    for pv in [tank_pv, *placed]:
        r, t = pv.GetObjectRotationValue(), pv.GetObjectTranslation()
        truth["physvols"].append({"name": pv.GetName(), "translation": [t.x, t.y, t.z],
                                  "rotation": [[r.xx, r.xy, r.xz], [r.yx, r.yy, r.yz], [r.zx, r.zy, r.zz]]})
    truth["surface"] = {"model": "unified", "finish": "ground", "type": "dielectric_metal", "value": 0.2}
    return truth


def main(request_path: str, response_path: str) -> None:
    import geant4_pybind as g4  # imported here: only this child process may load Geant4

    with open(request_path) as f:
        request = json.load(f)
    if "write" in request:
        with open(response_path, "w") as f:
            json.dump(write_geometry(request["write"]), f)
        return
    parser = g4.G4GDMLParser()
    parser.Read(request["gdml"], False)
    world = parser.GetWorldVolume()
    keep: list[Any] = [parser, world]

    solids: dict[str, Any] = {}
    store = g4.G4SolidStore.GetInstance()
    for name, points in request["points"].items():
        solid = store.GetSolid(name, False, False)
        keep.append(solid)
        inside, safety = [], []
        for x, y, z in points:
            p = g4.G4ThreeVector(x, y, z)
            where = solid.Inside(p)
            inside.append(int(where))
            if where == g4.EInside.kInside:
                safety.append(solid.DistanceToOut(p))
            elif where == g4.EInside.kOutside:
                safety.append(solid.DistanceToIn(p))
            else:
                safety.append(0.0)
        entry: dict[str, Any] = {"inside": inside, "safety": safety}
        if request.get("volumes", True):
            entry["volume"] = solid.GetCubicVolume()
        solids[name] = entry

    physvols = []

    def walk(lv: Any) -> None:
        for i in range(lv.GetNoDaughters()):
            pv = lv.GetDaughter(i)
            keep.append(pv)
            r = pv.GetObjectRotationValue()
            t = pv.GetObjectTranslation()
            physvols.append({
                "name": pv.GetName(), "mother": lv.GetName(), "volume": pv.GetLogicalVolume().GetName(),
                "copynumber": pv.GetCopyNo(), "translation": [t.x, t.y, t.z],
                "rotation": [[r.xx, r.xy, r.xz], [r.yx, r.yy, r.yz], [r.zx, r.zy, r.zz]]})
            walk(pv.GetLogicalVolume())

    walk(world.GetLogicalVolume())

    materials: dict[str, Any] = {}
    for name, props in request.get("materials", {}).items():
        table = g4.G4Material.GetMaterial(name).GetMaterialPropertiesTable()
        out = {}
        for prop in props:
            vec = table.GetProperty(prop)
            if vec is not None:
                out[prop] = [[vec.Energy(i), vec[i]] for i in range(vec.GetVectorLength())]
            else:
                out[prop] = table.GetConstProperty(prop)
        materials[name] = out

    borders = [[s.GetName(), pv1.GetName(), pv2.GetName(), s.GetSurfaceProperty().GetName()]
               for (pv1, pv2), s in g4.G4LogicalBorderSurface.GetSurfaceTable().items()]
    skins = [[s.GetName(), lv.GetName(), s.GetSurfaceProperty().GetName()]
             for lv, s in g4.G4LogicalSkinSurface.GetSurfaceTable().items()]
    with open(response_path, "w") as f:
        json.dump({"solids": solids, "physvols": physvols, "materials": materials, "borders": borders,
                   "skins": skins}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
