"""Triangle-mesh detector geometry: the general form every Warp mesh kernel traces.

A detector that is not built from the analytic primitives (or one that should be traced the way
Chroma traces it) is a soup of triangles. Each triangle carries the material on its inner side (the
side its counter-clockwise normal points away from), the material on its outer side, an optional
optical surface and the solid it belongs to; a solid -> channel map turns "photon detected on a
triangle of solid s" into a PMT channel, exactly as Chroma's ``solid_id_to_channel_index`` does.

This module builds such meshes (icosphere and cylinder vessels with PMT photocathode caps that
follow triangle edges, so a hit's channel is exact), reads STL files (ASCII and binary) and gives
the canonical form used in the detector fingerprint. It is pure numpy.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from charon.errors import DetectorError

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]

#: Triangles in one fan-tessellated PMT cap (segments of its rim).
DEFAULT_CAP_SEGMENTS = 12


class MeshError(DetectorError, ValueError):
    """A mesh or mesh file that cannot be used; the message names what is wrong."""


@dataclass(frozen=True, eq=False)
class MeshGeometry:
    """Triangles with per-triangle materials, surface and solid, plus the solid -> channel map.

    ``mat_inner``/``mat_outer`` index the detector's material list, ``surface`` its surface list
    (-1 = none: Fresnel between the two materials), ``solid`` indexes ``solid_channel`` whose
    entries are PMT channels or -1 for passive solids.
    """

    vertices: F32
    triangles: I32
    mat_inner: I32
    mat_outer: I32
    surface: I32
    solid: I32
    solid_channel: I32

    def __post_init__(self) -> None:
        v = np.ascontiguousarray(self.vertices, dtype=np.float32)
        t = np.ascontiguousarray(self.triangles, dtype=np.int32)
        if v.ndim != 2 or v.shape[1] != 3:
            raise MeshError(f"vertices must have shape (nv, 3), got {v.shape}")
        if t.ndim != 2 or t.shape[1] != 3:
            raise MeshError(f"triangles must have shape (nt, 3), got {t.shape}")
        if not np.all(np.isfinite(v)):
            raise MeshError("vertices contain NaN or infinity")
        if t.size and (t.min() < 0 or t.max() >= v.shape[0]):
            raise MeshError(f"triangle vertex index out of range 0..{v.shape[0] - 1}")
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "triangles", t)
        nt = t.shape[0]
        for name in ("mat_inner", "mat_outer", "surface", "solid"):
            a = np.ascontiguousarray(getattr(self, name), dtype=np.int32).reshape(-1)
            if a.shape[0] != nt:
                raise MeshError(f"{name} must have one entry per triangle ({nt}), got {a.shape[0]}")
            object.__setattr__(self, name, a)
        sc = np.ascontiguousarray(self.solid_channel, dtype=np.int32).reshape(-1)
        object.__setattr__(self, "solid_channel", sc)
        if nt and (self.solid.min() < 0 or self.solid.max() >= sc.shape[0]):
            raise MeshError(f"solid index out of range 0..{sc.shape[0] - 1}")
        if nt and (self.mat_inner.min() < 0 or self.mat_outer.min() < 0):
            raise MeshError("material indices must be >= 0")
        if nt and self.surface.min() < -1:
            raise MeshError("surface indices must be >= -1")

    @property
    def n_triangles(self) -> int:
        return int(self.triangles.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.solid_channel.max()) + 1 if self.solid_channel.size else 0

    def triangle_channel(self) -> I32:
        """Channel of each triangle's solid (-1 for passive solids)."""
        return self.solid_channel[self.solid]

    def check_indices(self, n_materials: int, n_surfaces: int) -> None:
        """Raise :class:`MeshError` unless every material/surface index exists in the detector."""
        if self.n_triangles == 0:
            return
        top = max(int(self.mat_inner.max()), int(self.mat_outer.max()))
        if top >= n_materials:
            raise MeshError(f"mesh uses material {top} but the detector has {n_materials}")
        if int(self.surface.max()) >= n_surfaces:
            raise MeshError(f"mesh uses surface {int(self.surface.max())} but the detector has {n_surfaces}")

    def to_canonical(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        """(JSON-able header, named arrays) with fixed dtypes: the input of ``fingerprint_of``."""
        header = {"kind": "mesh", "n_vertices": int(self.vertices.shape[0]),
                  "n_triangles": self.n_triangles, "n_solids": int(self.solid_channel.shape[0])}
        arrays: dict[str, npt.NDArray[Any]] = {
            "mesh.vertices": self.vertices.astype("<f4"),
            "mesh.triangles": self.triangles.astype("<i4"),
            "mesh.mat_inner": self.mat_inner.astype("<i4"),
            "mesh.mat_outer": self.mat_outer.astype("<i4"),
            "mesh.surface": self.surface.astype("<i4"),
            "mesh.solid": self.solid.astype("<i4"),
            "mesh.solid_channel": self.solid_channel.astype("<i4"),
        }
        return header, arrays

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        """The arrays to store in a detector file (``from_arrays`` reads them back)."""
        return self.to_canonical()[1]

    @classmethod
    def from_arrays(cls, arrays: dict[str, npt.NDArray[Any]]) -> MeshGeometry:
        try:
            return cls(*(np.asarray(arrays[f"mesh.{k}"]) for k in _FIELDS))
        except KeyError as exc:
            raise MeshError(f"detector file lacks mesh array {exc.args[0]!r}") from None

    @staticmethod
    def concatenate(parts: Sequence[MeshGeometry], solid_channel: npt.ArrayLike) -> MeshGeometry:
        """Join meshes whose ``solid`` indices already refer to one shared ``solid_channel``."""
        offsets = np.cumsum([0] + [p.vertices.shape[0] for p in parts[:-1]])
        return MeshGeometry(
            np.concatenate([p.vertices for p in parts]),
            np.concatenate([p.triangles + o for p, o in zip(parts, offsets, strict=True)]),
            np.concatenate([p.mat_inner for p in parts]),
            np.concatenate([p.mat_outer for p in parts]),
            np.concatenate([p.surface for p in parts]),
            np.concatenate([p.solid for p in parts]),
            np.asarray(solid_channel, np.int32),
        )


_FIELDS = ("vertices", "triangles", "mat_inner", "mat_outer", "surface", "solid", "solid_channel")


def _tagged(vertices: npt.ArrayLike, triangles: npt.ArrayLike, *, inner: int, outer: int,
            surface: int, solid: int | npt.ArrayLike, solid_channel: npt.ArrayLike) -> MeshGeometry:
    t = np.asarray(triangles, np.int32).reshape(-1, 3)
    n = t.shape[0]
    return MeshGeometry(np.asarray(vertices, np.float32), t, np.full(n, inner, np.int32),
                        np.full(n, outer, np.int32), np.full(n, surface, np.int32),
                        np.broadcast_to(np.asarray(solid, np.int32), (n,)).copy(),
                        np.asarray(solid_channel, np.int32))


# --------------------------------------------------------------------------------------------
# Primitive tessellations (float64, outward counter-clockwise winding)


def icosphere(level: int) -> tuple[F64, I32]:
    """Unit icosphere: 20 * 4**level triangles, outward winding."""
    if not 0 <= level <= 8:
        raise MeshError(f"icosphere level must be 0..8, got {level}")
    g = (1.0 + math.sqrt(5.0)) / 2.0
    v = np.array([[-1, g, 0], [1, g, 0], [-1, -g, 0], [1, -g, 0], [0, -1, g], [0, 1, g],
                  [0, -1, -g], [0, 1, -g], [g, 0, -1], [g, 0, 1], [-g, 0, -1], [-g, 0, 1]], float)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
                  [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
                  [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]], np.int64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    for _ in range(level):
        edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
        edges.sort(axis=1)
        uniq, inv = np.unique(edges, axis=0, return_inverse=True)
        mid = v[uniq[:, 0]] + v[uniq[:, 1]]
        mid /= np.linalg.norm(mid, axis=1, keepdims=True)
        m = inv.reshape(3, -1) + v.shape[0]
        a, b, c = f[:, 0], f[:, 1], f[:, 2]
        ab, bc, ca = m[0], m[1], m[2]
        f = np.concatenate([np.stack([a, ab, ca], 1), np.stack([b, bc, ab], 1),
                            np.stack([c, ca, bc], 1), np.stack([ab, bc, ca], 1)])
        v = np.concatenate([v, mid])
    return v, f.astype(np.int32)


def _orient_outward(v: F64, f: I32) -> I32:
    """Flip triangles whose normal points towards the origin (convex shapes centred on it)."""
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    n = np.cross(b - a, c - a)
    flip = np.einsum("ij,ij->i", n, (a + b + c) / 3.0) < 0
    out = f.copy()
    out[flip] = out[flip][:, [0, 2, 1]]
    return out


def sphere_wall(radius: float, level: int = 5) -> tuple[F64, I32]:
    """Icosphere circumscribing the sphere: every facet lies at distance >= ``radius``.

    Circumscribing keeps PMT caps placed exactly on the ideal sphere in front of the wall.
    """
    v, f = icosphere(level)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    n = np.cross(b - a, c - a)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    d_min = float(np.min(np.einsum("ij,ij->i", n, a)))
    return v * (radius / d_min) * (1.0 + 1e-6), f


def cylinder_wall(radius: float, half_height: float, segments: int = 256,
                  rings: int | None = None, end_offset: float = 0.0) -> tuple[F64, I32]:
    """Closed cylinder about z: barrel circumscribing ``radius``, flat ends at +-(half_height + end_offset)."""
    if segments < 3:
        raise MeshError("cylinder needs >= 3 segments")
    r = radius / math.cos(math.pi / segments) * (1.0 + 1e-6)
    h = half_height + end_offset
    if rings is None:
        rings = max(1, round(2 * h / (2 * math.pi * r / segments)))
    phi = 2 * math.pi * np.arange(segments) / segments
    zs = np.linspace(-h, h, rings + 1)
    ring = np.stack([r * np.cos(phi), r * np.sin(phi)], 1)
    barrel = np.concatenate([np.column_stack([ring, np.full(segments, z)]) for z in zs])
    tris = []
    for k in range(rings):
        i0 = k * segments + np.arange(segments)
        i1 = k * segments + (np.arange(segments) + 1) % segments
        j0, j1 = i0 + segments, i1 + segments
        tris += [np.stack([i0, i1, j1], 1), np.stack([i0, j1, j0], 1)]
    nb = barrel.shape[0]
    centres = np.array([[0, 0, -h], [0, 0, h]], float)
    bottom = np.arange(segments)
    top = rings * segments + np.arange(segments)
    nxt = (np.arange(segments) + 1) % segments
    tris.append(np.stack([np.full(segments, nb), bottom[nxt], bottom], 1))
    tris.append(np.stack([np.full(segments, nb + 1), top, top[nxt]], 1))
    v = np.concatenate([barrel, centres])
    return v, _orient_outward(v, np.concatenate(tris).astype(np.int32))


def _tangent_frame(normal: F64) -> tuple[F64, F64]:
    """Two unit vectors orthogonal to each row of ``normal`` (and to each other)."""
    helper = np.where(np.abs(normal[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])
    e1 = np.cross(helper, normal)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(normal, e1)
    return e1, e2


def _equal_area_scale(segments: int) -> float:
    """Rim radius factor giving an inscribed ``segments``-gon the area of its circle."""
    a = 2 * math.pi / segments
    return math.sqrt(a / math.sin(a))


def sphere_caps(radius: float, centres: npt.ArrayLike, cap_radius: npt.ArrayLike,
                segments: int = DEFAULT_CAP_SEGMENTS) -> tuple[F64, I32, I32]:
    """Fan-tessellated spherical caps on a sphere of ``radius`` about the origin.

    ``centres`` (P, 3) are projected onto the sphere; ``cap_radius`` is each cap's aperture: the
    distance of its rim from the axis through its centre (sin alpha = cap_radius / radius). The
    rim polygon has the area of the ideal cap. Returns vertices, triangles and, per triangle, the
    cap index.
    """
    c = np.asarray(centres, float).reshape(-1, 3)
    u = c / np.linalg.norm(c, axis=1, keepdims=True)
    rc = np.broadcast_to(np.asarray(cap_radius, float), (u.shape[0],))
    if np.any(rc <= 0) or np.any(rc >= radius):
        raise MeshError("cap radii must be in (0, sphere radius)")
    alpha = np.arcsin(rc / radius) * _equal_area_scale(segments)
    e1, e2 = _tangent_frame(u)
    phi = 2 * np.pi * np.arange(segments) / segments
    dirs = (np.cos(alpha)[:, None, None] * u[:, None, :]
            + np.sin(alpha)[:, None, None] * (np.cos(phi)[None, :, None] * e1[:, None, :]
                                              + np.sin(phi)[None, :, None] * e2[:, None, :]))
    verts = np.concatenate([u[:, None, :], dirs], axis=1) * radius  # (P, 1 + S, 3)
    return _fans(verts, segments, outward=u)


def flat_disks(centres: npt.ArrayLike, normals: npt.ArrayLike, disk_radius: npt.ArrayLike,
               segments: int = DEFAULT_CAP_SEGMENTS) -> tuple[F64, I32, I32]:
    """Fan-tessellated flat disks (equal area); triangles wound so their normal is ``normals``."""
    c = np.asarray(centres, float).reshape(-1, 3)
    n = np.asarray(normals, float).reshape(-1, 3)
    n = n / np.linalg.norm(n, axis=1, keepdims=True)
    r = np.broadcast_to(np.asarray(disk_radius, float), (c.shape[0],)) * _equal_area_scale(segments)
    e1, e2 = _tangent_frame(n)
    phi = 2 * np.pi * np.arange(segments) / segments
    rim = c[:, None, :] + r[:, None, None] * (np.cos(phi)[None, :, None] * e1[:, None, :]
                                              + np.sin(phi)[None, :, None] * e2[:, None, :])
    return _fans(np.concatenate([c[:, None, :], rim], axis=1), segments, outward=n)


def cylinder_patches(radius: float, centres: npt.ArrayLike, patch_radius: npt.ArrayLike,
                     segments: int = DEFAULT_CAP_SEGMENTS) -> tuple[F64, I32, I32]:
    """Barrel patches of a cylinder about z: wall points within ``patch_radius`` of each PMT's radial axis."""
    c = np.asarray(centres, float).reshape(-1, 3)
    phi0 = np.arctan2(c[:, 1], c[:, 0])
    r = np.broadcast_to(np.asarray(patch_radius, float), (c.shape[0],)) * _equal_area_scale(segments)
    ang = 2 * np.pi * np.arange(segments) / segments
    s = np.concatenate([np.zeros((c.shape[0], 1)), r[:, None] * np.cos(ang)[None, :]], 1)
    dz = np.concatenate([np.zeros((c.shape[0], 1)), r[:, None] * np.sin(ang)[None, :]], 1)
    phi = phi0[:, None] + np.arcsin(np.clip(s / radius, -1.0, 1.0))
    verts = np.stack([radius * np.cos(phi), radius * np.sin(phi), c[:, 2:3] + dz], axis=2)
    outward = np.stack([np.cos(phi0), np.sin(phi0), np.zeros_like(phi0)], 1)
    return _fans(verts, segments, outward=outward)


def _fans(verts: F64, segments: int, outward: F64) -> tuple[F64, I32, I32]:
    p = verts.shape[0]
    per = segments + 1
    base = (np.arange(p) * per)[:, None]
    k = np.arange(segments)
    tri = np.stack([np.zeros(segments, int) + base, 1 + k + base, 1 + (k + 1) % segments + base], axis=2)
    tri = tri.reshape(-1, 3)
    v = verts.reshape(-1, 3)
    owner = np.repeat(np.arange(p), segments).astype(np.int32)
    a, b, cc = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    nrm = np.cross(b - a, cc - a)
    flip = np.einsum("ij,ij->i", nrm, outward[owner]) < 0
    tri[flip] = tri[flip][:, [0, 2, 1]]
    return v, tri.astype(np.int32), owner


# --------------------------------------------------------------------------------------------
# Parametric detectors


def sphere_vessel_mesh(radius: float, pmt_centres: npt.ArrayLike, pmt_radius: npt.ArrayLike, *,
                    inner: int, outer: int, wall_surface: int, pmt_surface: int | npt.ArrayLike,
                    pmt_material_behind: int | None = None, level: int = 5,
                    segments: int = DEFAULT_CAP_SEGMENTS) -> MeshGeometry:
    """Sphere vessel (icosphere wall, solid 0) with one cap solid per PMT (solids 1..P -> channels 0..P-1).

    Caps lie on the ideal sphere, inside the circumscribing wall, both sides ``inner`` material
    (``pmt_material_behind`` for the outer side if given); the wall separates ``inner`` from ``outer``.
    """
    wv, wf = sphere_wall(radius, level)
    cv, cf, owner = sphere_caps(radius, pmt_centres, pmt_radius, segments)
    return _vessel_with_pmts(wv, wf, cv, cf, owner, inner=inner, outer=outer, wall_surface=wall_surface,
                             pmt_surface=pmt_surface, behind=pmt_material_behind)


def cylinder_vessel_mesh(radius: float, half_height: float, pmt_centres: npt.ArrayLike,
                      pmt_radius: npt.ArrayLike, *, inner: int, outer: int, wall_surface: int,
                      pmt_surface: int | npt.ArrayLike, pmt_material_behind: int | None = None,
                      segments: int = DEFAULT_CAP_SEGMENTS, wall_segments: int = 256) -> MeshGeometry:
    """Cylinder vessel about z with PMTs on the barrel (bent disks) and the end caps (flat disks).

    A PMT whose centre has ``|z| >= half_height - 1e-3 * radius`` is an end-cap disk, else a barrel
    patch. The wall sits slightly outside the ideal surface (circumscribing barrel, ends offset by
    a small fraction of the radius) so the PMTs are always in front of it.
    """
    c = np.asarray(pmt_centres, float).reshape(-1, 3)
    r = np.broadcast_to(np.asarray(pmt_radius, float), (c.shape[0],))
    wv, wf = cylinder_wall(radius, half_height, wall_segments, end_offset=1e-4 * radius)
    on_end = np.abs(c[:, 2]) >= half_height - 1e-3 * radius
    parts_v, parts_f, parts_o = [], [], []
    count = 0
    idx_end, idx_bar = np.nonzero(on_end)[0], np.nonzero(~on_end)[0]
    for idx, kind in ((idx_end, "end"), (idx_bar, "barrel")):
        if idx.size == 0:
            continue
        if kind == "end":
            cc = c[idx].copy()
            cc[:, 2] = np.sign(cc[:, 2]) * half_height
            normal = np.zeros_like(cc)
            normal[:, 2] = np.sign(cc[:, 2])
            v, f, o = flat_disks(cc, normal, r[idx], segments)
        else:
            v, f, o = cylinder_patches(radius, c[idx], r[idx], segments)
        parts_v.append(v)
        parts_f.append(f + count)
        parts_o.append(idx[o])
        count += v.shape[0]
    cv = np.concatenate(parts_v) if parts_v else np.zeros((0, 3))
    cf = np.concatenate(parts_f) if parts_f else np.zeros((0, 3), np.int32)
    owner = np.concatenate(parts_o).astype(np.int32) if parts_o else np.zeros(0, np.int32)
    return _vessel_with_pmts(wv, wf, cv, cf, owner, inner=inner, outer=outer, wall_surface=wall_surface,
                             pmt_surface=pmt_surface, behind=pmt_material_behind, n_pmts=c.shape[0])


def _vessel_with_pmts(wv: F64, wf: I32, cv: F64, cf: I32, owner: I32, *, inner: int, outer: int,
                      wall_surface: int, pmt_surface: int | npt.ArrayLike, behind: int | None,
                      n_pmts: int | None = None) -> MeshGeometry:
    p = int(owner.max()) + 1 if owner.size else 0
    p = max(p, n_pmts or 0)
    solid_channel = np.concatenate([[-1], np.arange(p)]).astype(np.int32)
    wall = _tagged(wv, wf, inner=inner, outer=outer, surface=wall_surface, solid=0,
                   solid_channel=solid_channel)
    psurf = np.broadcast_to(np.asarray(pmt_surface, np.int32), (p,))
    n = cf.shape[0]
    caps = MeshGeometry(cv.astype(np.float32), cf, np.full(n, inner, np.int32),
                        np.full(n, inner if behind is None else behind, np.int32), psurf[owner],
                        owner + 1, solid_channel)
    return MeshGeometry.concatenate([wall, caps], solid_channel)


# --------------------------------------------------------------------------------------------
# STL


def read_stl(path: str | Path) -> tuple[F32, I32]:
    """Read an ASCII or binary STL file: (unique vertices, triangles). Winding is kept as stored."""
    data = Path(path).read_bytes()
    if len(data) >= 84:
        (n,) = struct.unpack_from("<I", data, 80)
        if 84 + 50 * n == len(data):
            rec = np.frombuffer(data, dtype=np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)),
                                                      ("a", "<u2")]), count=n, offset=84)
            return _weld(rec["v"].reshape(-1, 3).astype(np.float32))
    text = data.decode("ascii", errors="replace")
    if not text.lstrip().lower().startswith("solid"):
        raise MeshError(f"{path}: neither binary STL (size mismatch) nor ASCII STL (no 'solid' header)")
    coords: list[list[float]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if parts and parts[0].lower() == "vertex":
            if len(parts) != 4:
                raise MeshError(f"{path}:{lineno}: 'vertex' needs 3 numbers")
            try:
                coords.append([float(x) for x in parts[1:]])
            except ValueError:
                raise MeshError(f"{path}:{lineno}: bad vertex coordinate") from None
    if len(coords) % 3:
        raise MeshError(f"{path}: vertex count {len(coords)} is not a multiple of 3")
    if not coords:
        raise MeshError(f"{path}: no facets")
    return _weld(np.asarray(coords, np.float32))


def write_stl(path: str | Path, vertices: npt.ArrayLike, triangles: npt.ArrayLike, *, ascii: bool = False) -> None:
    """Write a mesh as STL (binary by default)."""
    v = np.asarray(vertices, np.float32)
    t = np.asarray(triangles, np.int64)
    tri = v[t]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)
    if ascii:
        lines = ["solid charon"]
        for nn, tt in zip(n, tri, strict=True):
            lines.append(f"facet normal {nn[0]:e} {nn[1]:e} {nn[2]:e}\n outer loop")
            lines += [f"  vertex {p[0]:.9e} {p[1]:.9e} {p[2]:.9e}" for p in tt]
            lines.append(" endloop\nendfacet")
        lines.append("endsolid charon\n")
        Path(path).write_text("\n".join(lines))
        return
    rec = np.zeros(t.shape[0], dtype=np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")]))
    rec["n"] = n
    rec["v"] = tri
    Path(path).write_bytes(b"charon binary stl".ljust(80, b"\0") + struct.pack("<I", t.shape[0]) + rec.tobytes())


def _weld(corners: F32) -> tuple[F32, I32]:
    uniq, inv = np.unique(corners, axis=0, return_inverse=True)
    return uniq.astype(np.float32), inv.reshape(-1, 3).astype(np.int32)


def stl_solid(path: str | Path, *, inner: int, outer: int, surface: int = -1, solid: int = 0,
              solid_channel: npt.ArrayLike = (-1,), scale: float = 1.0) -> MeshGeometry:
    """One STL file as a single solid with uniform materials (``scale`` converts its unit to mm)."""
    v, f = read_stl(path)
    return _tagged(v * np.float32(scale), f, inner=inner, outer=outer, surface=surface, solid=solid,
                   solid_channel=solid_channel)
