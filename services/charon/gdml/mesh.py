"""A closed triangle mesh and the few exact operations tessellation needs on it.

``TriangleMesh`` is what ``tessellate`` returns: float64 vertices, int32 triangles wound
counter-clockwise seen from outside (outward normals), in the solid's own frame. The helpers here
(volume, area, edge check, vertex welding, transforms) are plain numpy so the tests can check every
mesh the same way the tessellator does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]


@dataclass(frozen=True, eq=False)
class TriangleMesh:
    """vertices (n, 3) float64 mm; faces (m, 3) int32, counter-clockwise seen from outside."""

    vertices: F64
    faces: I32

    def __post_init__(self) -> None:
        v = np.ascontiguousarray(self.vertices, dtype=np.float64).reshape(-1, 3)
        f = np.ascontiguousarray(self.faces, dtype=np.int32).reshape(-1, 3)
        v.flags.writeable = False
        f.flags.writeable = False
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "faces", f)

    @property
    def is_empty(self) -> bool:
        return bool(self.faces.shape[0] == 0)

    def volume(self) -> float:
        """Signed volume (positive for outward winding), by the divergence theorem."""
        if self.is_empty:
            return 0.0
        a, b, c = (self.vertices[self.faces[:, k]] for k in range(3))
        return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)

    def area(self) -> float:
        if self.is_empty:
            return 0.0
        a, b, c = (self.vertices[self.faces[:, k]] for k in range(3))
        return float(0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1).sum())

    def bounds(self) -> tuple[F64, F64]:
        if self.vertices.shape[0] == 0:
            return np.zeros(3), np.zeros(3)
        return self.vertices.min(axis=0), self.vertices.max(axis=0)


EMPTY = TriangleMesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int32))


def edge_defects(faces: I32) -> int:
    """How many directed edges break 'closed and consistently wound': every edge (a, b) must appear
    exactly once, and its reverse (b, a) exactly once. 0 for a closed, oriented 2-manifold."""
    if faces.shape[0] == 0:
        return 0
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).astype(np.int64)
    n = int(e.max()) + 1
    key = e[:, 0] * n + e[:, 1]
    rkey = e[:, 1] * n + e[:, 0]
    uniq, counts = np.unique(key, return_counts=True)
    duplicated = int((counts > 1).sum())
    unmatched = int((~np.isin(rkey, uniq)).sum())
    return duplicated + unmatched


def is_closed(mesh: TriangleMesh) -> bool:
    """Every edge shared by exactly two triangles, traversed in opposite directions."""
    return edge_defects(mesh.faces) == 0


def weld(vertices: F64, faces: I32, tolerance: float = 0.0) -> tuple[F64, I32]:
    """Merge vertices closer than ``tolerance`` (exactly equal for 0), drop faces that collapse."""
    if vertices.shape[0] == 0:
        return vertices.reshape(0, 3), faces.reshape(0, 3).astype(np.int32)
    keys = np.round(vertices / tolerance) if tolerance > 0.0 else vertices
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    new_faces = inverse[faces]
    keep = ((new_faces[:, 0] != new_faces[:, 1]) & (new_faces[:, 1] != new_faces[:, 2])
            & (new_faces[:, 0] != new_faces[:, 2]))
    return vertices[first], new_faces[keep].astype(np.int32)


def compact(vertices: F64, faces: I32) -> tuple[F64, I32]:
    """Drop vertices no face uses."""
    used = np.unique(faces)
    remap = np.full(vertices.shape[0], -1, dtype=np.int64)
    remap[used] = np.arange(used.shape[0])
    return vertices[used], remap[faces].astype(np.int32)


def transformed(mesh: TriangleMesh, matrix: F64) -> TriangleMesh:
    """The mesh moved by a 4x4 object transform; a reflection (det < 0) keeps the winding outward."""
    if np.array_equal(matrix, np.eye(4)):
        return mesh
    v = mesh.vertices @ matrix[:3, :3].T + matrix[:3, 3]
    f = mesh.faces
    if np.linalg.det(matrix[:3, :3]) < 0.0:
        f = f[:, ::-1]
    return TriangleMesh(v, f)


def oriented(vertices: F64, faces: I32) -> TriangleMesh:
    """Flip the whole mesh if its signed volume is negative (an inside-out construction)."""
    mesh = TriangleMesh(vertices, faces)
    if mesh.volume() < 0.0:
        mesh = TriangleMesh(vertices, faces[:, ::-1])
    return mesh
