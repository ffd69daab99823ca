"""Geant4's own reading of a GDML file, as JSON, for comparing charon's reader with it.

Run as a separate process (``python tests/geant4_oracle.py request.json response.json``) so
Geant4's global stores, its data-set check and any abort stay out of the test process. The
request names a GDML file and, per solid, points to classify; the response holds what Geant4's
G4GDMLParser built: solid volumes (GetCubicVolume), Inside and safety distance for each point,
every placement's object rotation and translation, material property tables and the logical
border and skin surfaces. Needs geant4_pybind; GEANT4_DATA_DIR must point at a directory with
an (empty) G4ENSDFSTATE3.0/ENSDFSTATE.dat before the import (see geant4-baseline.md).
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main(request_path: str, response_path: str) -> None:
    import geant4_pybind as g4  # imported here: only this child process may load Geant4

    with open(request_path) as f:
        request = json.load(f)
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
