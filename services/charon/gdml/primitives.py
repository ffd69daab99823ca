"""One mesh builder per primitive solid kind, with Geant4's conventions for each.

Solids of revolution go through ``profiles`` + ``revolve``; the flat-faced ones (box, trd, trap,
para, arb8, tet, xtru, tessellated) are built from their corners exactly. Elliptical solids
(ellipsoid, eltube, elcone) are swept in a unit-radius frame and stretched in x and y; the sagitta
of a stretched circle is at most the largest semi-axis times that of the unit circle, so their
steps are chosen for the largest semi-axis. Every builder returns a closed mesh wound outward.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from manifold3d import triangulate

from charon.gdml.corners import trap_vertices
from charon.gdml.mesh import F64, I32, TriangleMesh, edge_defects, oriented, weld
from charon.gdml.profiles import (
    Profile,
    cone_profile,
    elcone_profile,
    ellipsoid_profile,
    hype_profile,
    is_full_turn,
    orb_profile,
    paraboloid_profile,
    polycone_profile,
    segments,
    sphere_profile,
    torus_profile,
    torusstack_profile,
    tube_profile,
)
from charon.gdml.revolve import revolve

TWO_PI = 2.0 * math.pi


class MeshBuildError(ValueError):
    """A solid whose parameters cannot be meshed; the message says why."""


def _sweep(profile: Profile, startphi: float, deltaphi: float, chord: float, xy_scale: float = 1.0) -> TriangleMesh:
    span = TWO_PI if is_full_turn(deltaphi) else deltaphi
    n = segments(profile.r_max * xy_scale, span, chord, doubly=profile.doubly_curved)
    return revolve(profile, startphi, deltaphi, n)


def _stretched(mesh: TriangleMesh, sx: float, sy: float) -> TriangleMesh:
    return TriangleMesh(mesh.vertices * np.array([sx, sy, 1.0]), mesh.faces)


def tube(p: dict[str, Any], chord: float) -> TriangleMesh:
    return _sweep(tube_profile(p["rmin"], p["rmax"], 0.5 * p["z"]), p["startphi"], p["deltaphi"], chord)


def cut_tube(p: dict[str, Any], chord: float) -> TriangleMesh:
    """G4CutTubs: a tube whose end planes pass through (0, 0, -+z/2) with normals low/high."""
    half = 0.5 * p["z"]
    mesh = tube(p, chord)
    v = mesh.vertices.copy()
    low, high = p["low_normal"], p["high_normal"]
    top, bottom = v[:, 2] == half, v[:, 2] == -half
    v[top, 2] = half - (high[0] * v[top, 0] + high[1] * v[top, 1]) / high[2]
    v[bottom, 2] = -half - (low[0] * v[bottom, 0] + low[1] * v[bottom, 1]) / low[2]
    return TriangleMesh(v, mesh.faces)


def cone(p: dict[str, Any], chord: float) -> TriangleMesh:
    return _sweep(cone_profile(p), p["startphi"], p["deltaphi"], chord)


def sphere(p: dict[str, Any], chord: float) -> TriangleMesh:
    return _sweep(sphere_profile(p, chord), p["startphi"], p["deltaphi"], chord)


def orb(p: dict[str, Any], chord: float) -> TriangleMesh:
    return _sweep(orb_profile(p["r"], chord), 0.0, TWO_PI, chord)


def torus(p: dict[str, Any], chord: float) -> TriangleMesh:
    return _sweep(torus_profile(p, chord), p["startphi"], p["deltaphi"], chord)


def ellipsoid(p: dict[str, Any], chord: float) -> TriangleMesh:
    big = max(p["ax"], p["by"], p["cz"])
    profile = ellipsoid_profile(p, chord)
    n = segments(big, TWO_PI, chord, doubly=True)
    return _stretched(revolve(profile, 0.0, TWO_PI, n), p["ax"], p["by"])


def eltube(p: dict[str, Any], chord: float) -> TriangleMesh:
    n = segments(max(p["dx"], p["dy"]), TWO_PI, chord, doubly=False)
    return _stretched(revolve(tube_profile(0.0, 1.0, p["dz"]), 0.0, TWO_PI, n), p["dx"], p["dy"])


def elcone(p: dict[str, Any], chord: float) -> TriangleMesh:
    profile = elcone_profile(p)
    n = segments(max(p["dx"], p["dy"]) * profile.r_max, TWO_PI, chord, doubly=False)
    return _stretched(revolve(profile, 0.0, TWO_PI, n), p["dx"], p["dy"])


def paraboloid(p: dict[str, Any], chord: float) -> TriangleMesh:
    return _sweep(paraboloid_profile(p, chord), 0.0, TWO_PI, chord)


def hype(p: dict[str, Any], chord: float) -> TriangleMesh:
    return _sweep(hype_profile(p, chord), 0.0, TWO_PI, chord)


def polycone(p: dict[str, Any], chord: float) -> TriangleMesh:
    deltaphi = p["deltaphi"]
    full = deltaphi <= 0.0 or is_full_turn(deltaphi)  # G4Polycone: <= 0 or >= 2 pi is a full turn
    return _sweep(polycone_profile(p), p["startphi"], TWO_PI if full else deltaphi, chord)


def polyhedra(p: dict[str, Any], _chord: float) -> TriangleMesh:
    """Exact: the sweep samples phi at the numsides + 1 corners."""
    deltaphi = p["deltaphi"]
    full = deltaphi <= 0.0 or is_full_turn(deltaphi)
    return revolve(polycone_profile(p), p["startphi"], TWO_PI if full else deltaphi, p["numsides"])


def torusstack_outer(p: dict[str, Any], chord: float) -> TriangleMesh:
    return _sweep(torusstack_profile(p, chord), 0.0, TWO_PI, chord)


# --- flat-faced solids ----------------------------------------------------------------------------------

def _closed(vertices: F64, faces: I32, what: str) -> TriangleMesh:
    v, f = weld(vertices, faces)
    if f.shape[0] < 4 or edge_defects(f):
        raise MeshBuildError(f"{what} does not form a closed surface")
    return oriented(v, f)


def hexahedron(bottom: F64, top: F64, chord: float, what: str) -> TriangleMesh:
    """Two 4-corner rings (same winding) joined by ruled sides. A twisted side (corners not
    coplanar, arb8) is split into layers so the two-triangle split stays within chord of it."""
    twist = 0.0
    for k in range(4):
        a, b, c, d = bottom[k], bottom[(k + 1) % 4], top[(k + 1) % 4], top[k]
        quad = np.array([a, b, c, d])
        normal = np.cross(quad - np.roll(quad, 1, axis=0), quad + np.roll(quad, 1, axis=0)).sum(axis=0)  # Newell
        length = float(np.linalg.norm(normal))
        if length > 0.0:
            # how far the two-triangle split is from the ruled (bilinear) side, at its centre
            twist = max(twist, abs(float(np.dot(normal / length, b + d - a - c))) / 4.0)
    scale = 1.0 + float(np.abs(np.vstack([bottom, top])).max())
    layers = max(1, math.ceil(twist / chord - 1e-12)) if twist > 1e-12 * scale else 1
    f = np.linspace(0.0, 1.0, layers + 1)[:, None, None]
    rings = (1.0 - f) * bottom[None] + f * top[None]  # (layers+1, 4, 3)
    vertices = rings.reshape(-1, 3)
    faces = [(0, 2, 1), (0, 3, 2)]
    last = 4 * layers
    faces += [(last, last + 1, last + 2), (last, last + 2, last + 3)]
    for layer in range(layers):
        base = 4 * layer
        for k in range(4):
            a, b = base + k, base + (k + 1) % 4
            c, d = b + 4, a + 4
            faces += [(a, b, c), (a, c, d)]
    return _closed(vertices, np.array(faces, dtype=np.int32), what)


def box(p: dict[str, Any], chord: float) -> TriangleMesh:
    x, y, z = 0.5 * p["x"], 0.5 * p["y"], 0.5 * p["z"]
    ring = np.array([(-x, -y), (x, -y), (x, y), (-x, y)])
    return hexahedron(np.column_stack([ring, np.full(4, -z)]), np.column_stack([ring, np.full(4, z)]), chord, "box")


def trd(p: dict[str, Any], chord: float) -> TriangleMesh:
    x1, x2, y1, y2, z = (0.5 * p[k] for k in ("x1", "x2", "y1", "y2", "z"))
    sign = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=np.float64)
    bottom = np.column_stack([sign * (x1, y1), np.full(4, -z)])
    top = np.column_stack([sign * (x2, y2), np.full(4, z)])
    return hexahedron(bottom, top, chord, "trd")


def _g4_box_order_to_rings(v: F64) -> tuple[F64, F64]:
    ring = [0, 1, 3, 2]
    return v[ring], v[[i + 4 for i in ring]]


def trap(p: dict[str, Any], chord: float) -> TriangleMesh:
    return hexahedron(*_g4_box_order_to_rings(trap_vertices(p)), chord, "trap")


def para(p: dict[str, Any], chord: float) -> TriangleMesh:
    q = {"z": p["z"], "theta": p["theta"], "phi": p["phi"], "y1": p["y"], "y2": p["y"],
         "x1": p["x"], "x2": p["x"], "x3": p["x"], "x4": p["x"], "alpha1": p["alpha"], "alpha2": p["alpha"]}
    return hexahedron(*_g4_box_order_to_rings(trap_vertices(q)), chord, "para")


def arb8(p: dict[str, Any], chord: float) -> TriangleMesh:
    v = np.asarray(p["vertices"], dtype=np.float64)
    dz = p["dz"]
    bottom = np.column_stack([v[:4], np.full(4, -dz)])
    top = np.column_stack([v[4:], np.full(4, dz)])
    return hexahedron(bottom, top, chord, "arb8")


def tet(p: dict[str, Any], _chord: float) -> TriangleMesh:
    v = np.asarray(p["vertices"], dtype=np.float64)
    return oriented(v, np.array([(0, 2, 1), (0, 1, 3), (1, 2, 3), (0, 3, 2)], dtype=np.int32))


def _polygon_ccw(points: F64) -> F64:
    x, y = points[:, 0], points[:, 1]
    area = 0.5 * (np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))
    if abs(area) <= 0.0:
        raise MeshBuildError("the polygon has zero area")
    return points if area > 0 else points[::-1].copy()


def xtru(p: dict[str, Any], _chord: float) -> TriangleMesh:
    """G4ExtrudedSolid: the polygon scaled and offset at each section, sides ruled between them."""
    poly = _polygon_ccw(np.asarray(p["vertices"], dtype=np.float64))
    k = poly.shape[0]
    rings = [np.column_stack([poly * s + (ox, oy), np.full(k, z)]) for z, ox, oy, s in p["sections"]]
    vertices = np.vstack(rings)
    cap = np.asarray(triangulate([np.ascontiguousarray(poly)], epsilon=-1), dtype=np.int64).reshape(-1, 3)
    faces = [cap[:, ::-1], cap + k * (len(rings) - 1)]
    i = np.arange(k)
    i1 = (i + 1) % k
    for s in range(len(rings) - 1):
        a, b = s * k + i, s * k + i1
        faces += [np.column_stack([a, b, b + k]), np.column_stack([a, b + k, a + k])]
    return _closed(vertices, np.vstack(faces).astype(np.int32), "xtru")


def tessellated(p: dict[str, Any], _chord: float) -> TriangleMesh:
    vertices = np.asarray(p["vertices"], dtype=np.float64)
    tris: list[tuple[int, int, int]] = []
    for facet in p["facets"]:
        tris.append((facet[0], facet[1], facet[2]))
        if len(facet) == 4:
            tris.append((facet[0], facet[2], facet[3]))
    faces = np.array(tris, dtype=np.int32)
    v, f = weld(vertices, faces)
    defects = edge_defects(f)
    if defects:
        scale = float(np.abs(vertices).max()) or 1.0
        v, f = weld(vertices, faces, 1e-9 * scale)
        defects = edge_defects(f)
    if defects:
        raise MeshBuildError(f"the facets do not form a closed, consistently wound surface "
                             f"({defects} edges are not shared by exactly two facets in opposite directions)")
    return oriented(v, f)


PRIMITIVES: dict[str, Callable[[dict[str, Any], float], TriangleMesh]] = {
    "box": box, "tube": tube, "cutTube": cut_tube, "cone": cone, "sphere": sphere, "orb": orb,
    "ellipsoid": ellipsoid, "eltube": eltube, "elcone": elcone, "paraboloid": paraboloid, "hype": hype,
    "torus": torus, "trd": trd, "trap": trap, "para": para, "arb8": arb8, "tet": tet,
    "polycone": polycone, "genericPolycone": polycone, "polyhedra": polyhedra,
    "genericPolyhedra": polyhedra, "xtru": xtru, "tessellated": tessellated,
}
