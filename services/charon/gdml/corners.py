"""Corner points of Geant4's trapezoids, in the order Geant4's own solids list them.

``G4Trap`` (and ``G4Para``, a trap with equal ends) is given by half-lengths and tilt angles; its
eight corners follow ``G4Trap::MakePlanes``. Reading needs them to check that the side faces are
planar (Geant4 rejects a trap that is not), tessellation to build the mesh.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from charon.gdml.model import F64


def trap_vertices(p: dict[str, Any]) -> F64:
    """G4Trap::MakePlanes corner order (0..3 at -dz: -x-y, +x-y, -x+y, +x+y; 4..7 at +dz)."""
    dz, dy1, dx1, dx2 = 0.5 * p["z"], 0.5 * p["y1"], 0.5 * p["x1"], 0.5 * p["x2"]
    dy2, dx3, dx4 = 0.5 * p["y2"], 0.5 * p["x3"], 0.5 * p["x4"]
    tt = math.tan(p["theta"])
    tcp, tsp = tt * math.cos(p["phi"]), tt * math.sin(p["phi"])
    ta1, ta2 = math.tan(p["alpha1"]), math.tan(p["alpha2"])
    return np.array([
        (-dz * tcp - dy1 * ta1 - dx1, -dz * tsp - dy1, -dz),
        (-dz * tcp - dy1 * ta1 + dx1, -dz * tsp - dy1, -dz),
        (-dz * tcp + dy1 * ta1 - dx2, -dz * tsp + dy1, -dz),
        (-dz * tcp + dy1 * ta1 + dx2, -dz * tsp + dy1, -dz),
        (dz * tcp - dy2 * ta2 - dx3, dz * tsp - dy2, dz),
        (dz * tcp - dy2 * ta2 + dx3, dz * tsp - dy2, dz),
        (dz * tcp + dy2 * ta2 - dx4, dz * tsp + dy2, dz),
        (dz * tcp + dy2 * ta2 + dx4, dz * tsp + dy2, dz),
    ])
