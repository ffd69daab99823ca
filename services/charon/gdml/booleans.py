"""Union, subtraction and intersection of closed meshes with manifold3d, and cleaning the result.

manifold3d's booleans are exact for exactly coincident faces (symbolic perturbation), so a polycone
whose top lies exactly on an ellipsoid's z = 0 cut fuses into one clean shell. Faces that are
coincident only up to rounding (1e-13 mm apart after a rotation or a chain of placements) are what
leaves zero-thickness sheets, sliver shells or two shells touching along an internal double face.
Three measures deal with that:

1. operand vertices are snapped to a 2^-30 mm (~1 nm) grid before the operation, so faces that
   should coincide mostly do exactly (values already on the grid, like 0 or 12.5, do not move);
2. after the operation, connected components thinner than ``SHEET_THICKNESS`` (2 |V| / A) are
   dropped: they are the zero-volume sheets coplanar faces leave behind (a cavity's wall is a
   component of negative volume and is kept);
3. a union whose result still has separate shells that touch (closer than ``TOUCH``) is redone
   with the second operand grown by ``2 * TOUCH`` along its vertex normals, which fuses them.
"""

from __future__ import annotations

import numpy as np
from manifold3d import Error, Manifold, Mesh64, OpType

from charon.gdml.mesh import EMPTY, F64, TriangleMesh

GRID = 2.0 ** -30          # mm; exact in binary, ~0.93 nm
SHEET_THICKNESS = 1e-9     # mm: a component thinner than this (2 V / A) is a coincidence artefact
TOUCH = 1e-7               # mm: shells closer than this after a union are meant to touch

_OPS = {"union": OpType.Add, "subtraction": OpType.Subtract, "intersection": OpType.Intersect}


class BooleanError(ValueError):
    """manifold3d refused an operand (not a closed, oriented 2-manifold)."""


def _snap(vertices: F64) -> F64:
    if vertices.size == 0 or float(np.abs(vertices).max()) >= 2.0 ** 22:
        return vertices
    return np.round(vertices / GRID) * GRID


def to_manifold(mesh: TriangleMesh) -> Manifold:
    if mesh.is_empty:
        return Manifold()
    m = Manifold(Mesh64(vert_properties=np.ascontiguousarray(_snap(mesh.vertices)),
                        tri_verts=np.ascontiguousarray(mesh.faces.astype(np.uint64))))
    status = m.status()
    if status != Error.NoError:
        raise BooleanError(f"operand is not a closed oriented manifold ({status.name})")
    return m


def from_manifold(m: Manifold) -> TriangleMesh:
    if m.is_empty():
        return EMPTY
    mesh = m.to_mesh64()
    v = np.asarray(mesh.vert_properties, dtype=np.float64)[:, :3]
    f = np.asarray(mesh.tri_verts, dtype=np.int64)
    return TriangleMesh(v, f.astype(np.int32))


def _clean(m: Manifold) -> list[Manifold]:
    """The connected components worth keeping (all of them unless some are coincidence sheets)."""
    if m.is_empty():
        return []
    kept = []
    for part in m.decompose():
        area = part.surface_area()
        # a cavity's wall comes out as its own component with negative volume: keep it unless thin
        if area > 0.0 and 2.0 * abs(part.volume()) / area >= SHEET_THICKNESS:
            kept.append(part)
    return kept


def _mesh(parts: list[Manifold]) -> TriangleMesh:
    """Concatenate components (Manifold.compose would drop a cavity's negative-volume wall)."""
    if not parts:
        return EMPTY
    meshes = [from_manifold(p) for p in parts]
    offsets = np.cumsum([0] + [m.vertices.shape[0] for m in meshes[:-1]])
    return TriangleMesh(np.vstack([m.vertices for m in meshes]),
                        np.vstack([m.faces + o for m, o in zip(meshes, offsets, strict=True)]))


def _grown(mesh: TriangleMesh, distance: float) -> TriangleMesh:
    """Vertices moved ``distance`` along their area-weighted normals (a tiny outward offset)."""
    v, f = mesh.vertices, mesh.faces
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    normals = np.zeros_like(v)
    for k in range(3):
        np.add.at(normals, f[:, k], n)
    length = np.linalg.norm(normals, axis=1)
    length[length == 0.0] = 1.0
    return TriangleMesh(v + distance * normals / length[:, None], f)


def _touching(parts: list[Manifold]) -> bool:
    for i in range(len(parts)):
        for j in range(i + 1, len(parts)):
            if parts[i].min_gap(parts[j], TOUCH) < TOUCH:
                return True
    return False


def boolean(kind: str, a: TriangleMesh, b: TriangleMesh) -> TriangleMesh:
    """``kind`` is union, subtraction or intersection; b is already in a's frame."""
    ma, mb = to_manifold(a), to_manifold(b)
    parts = _clean(Manifold.batch_boolean([ma, mb], _OPS[kind]))
    if kind == "union" and len(parts) > 1 and _touching(parts):
        mb = to_manifold(_grown(b, 2.0 * TOUCH))
        parts = _clean(Manifold.batch_boolean([ma, mb], OpType.Add))
    return _mesh(parts)


def union_all(meshes: list[TriangleMesh]) -> TriangleMesh:
    """multiUnion: the union of all nodes (already placed)."""
    manifolds = [to_manifold(m) for m in meshes if not m.is_empty]
    if not manifolds:
        return EMPTY
    return _mesh(_clean(Manifold.batch_boolean(manifolds, OpType.Add)))
