"""Instanced triangle geometry: the form an imported (GDML) detector takes in the engine.

A detector built in Geant4 is a tree of placed volumes. Flattened, it is a list of *instances*:
each the closed triangle mesh of one solid (a *shape*, in its own frame, stored once however often
it is placed) with a placement transform, the material inside and outside it, the optical surface
a photon meets leaving it (``surf_exit``) and entering it (``surf_enter``) as Geant4's precedence
rules resolve them for that placement, and the PMT channel it belongs to (or -1). Memory therefore
grows with distinct solids plus placements, not with triangles times PMTs.

Triangles are wound counter-clockwise seen from outside (outward normals); a transform may mirror
(negative determinant), and normals are carried through its inverse transpose, so they stay
outward. Material and surface indices refer to the detector's sorted name lists.

A shape may instead carry its tags per triangle (``tagged``): a triangle soup such as a Chroma-style
mesh, where every triangle has its own inner/outer material, surface (both directions) and
channel; its instances' tag columns are then unused.

A shape may also be *analytic* (``shape_kind`` > 0, parameters in ``shape_params``): a sphere or
spherical shell, an ellipsoid with z cuts, a full tube, a box. Engines then intersect the exact
surface (faster than any mesh, and without the mesh's chord error); the mesh is kept for bounds,
pictures and engines without the fast path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]

_INSTANCE_FIELDS = ("shape", "mat_in", "mat_out", "surf_exit", "surf_enter", "channel", "volume")

#: Analytic shape kinds and their parameters (``shape_params`` row, mm):
#:   1 ellipsoid  (a, b, c, zmin, zmax): x^2/a^2 + y^2/b^2 + z^2/c^2 <= 1, zmin <= z <= zmax
#:   2 sphere shell (r, rmin): rmin <= |x| <= r
#:   3 tube (rmax, rmin, half_z): rmin <= rho <= rmax, |z| <= half_z
#:   4 box (half_x, half_y, half_z)
SHAPE_MESH, SHAPE_ELLIPSOID, SHAPE_SHELL, SHAPE_TUBE, SHAPE_BOX = 0, 1, 2, 3, 4
SHAPE_PARAMS = 6


@dataclass(frozen=True, eq=False)
class Scene:
    """Shapes (concatenated local meshes) and their instances; see the module docstring."""

    vertices: F32            # (NV, 3) every shape's vertices, mm, shape frames
    triangles: I32           # (NT, 3) vertex indices local to the shape's own vertex block
    shape_vertex_start: I64  # (S + 1,) shape s owns vertices [start[s], start[s + 1])
    shape_triangle_start: I64  # (S + 1,)
    transform: F64           # (I, 3, 4) shape frame -> world: x_world = A @ x + b
    shape: I32               # (I,) shape of each instance
    mat_in: I32
    mat_out: I32
    surf_exit: I32           # surface met leaving the instance (-1: none)
    surf_enter: I32          # surface met entering it (-1: none)
    channel: I32             # PMT channel (-1: none)
    volume: I32              # index into volume_names (for display and diagnostics)
    volume_names: tuple[str, ...]
    shape_names: tuple[str, ...]
    #: Per-triangle tags of tagged shapes, (NT, 4): mat_in, mat_out, surface, channel; None when no
    #: shape is tagged. ``shape_tagged[s]`` says whether shape s uses them.
    triangle_tags: I32 | None = None
    shape_tagged: npt.NDArray[np.bool_] | None = None
    #: Per shape: 0 = mesh, else an analytic kind (see SHAPE_*) with its SHAPE_PARAMS parameters.
    shape_kind: I32 | None = None
    shape_params: F64 | None = None

    def __post_init__(self) -> None:
        v = np.ascontiguousarray(self.vertices, dtype=np.float32).reshape(-1, 3)
        t = np.ascontiguousarray(self.triangles, dtype=np.int32).reshape(-1, 3)
        vs = np.ascontiguousarray(self.shape_vertex_start, dtype=np.int64).reshape(-1)
        ts = np.ascontiguousarray(self.shape_triangle_start, dtype=np.int64).reshape(-1)
        xf = np.ascontiguousarray(self.transform, dtype=np.float64).reshape(-1, 3, 4)
        if not np.all(np.isfinite(v)) or not np.all(np.isfinite(xf)):
            raise ValueError("scene vertices and transforms must be finite")
        _check_shapes(v, t, vs, ts)
        n_shapes = vs.shape[0] - 1
        n_inst = xf.shape[0]
        for name in _INSTANCE_FIELDS:
            col = np.ascontiguousarray(getattr(self, name), dtype=np.int32).reshape(-1)
            if col.shape[0] != n_inst:
                raise ValueError(f"instance {name} must have {n_inst} entries, got {col.shape[0]}")
            col.flags.writeable = False
            object.__setattr__(self, name, col)
        if n_inst and (self.shape.min() < 0 or self.shape.max() >= n_shapes):
            raise ValueError(f"instance shape index out of range 0..{n_shapes - 1}")
        if n_inst and (self.volume.min() < 0 or self.volume.max() >= len(self.volume_names)):
            raise ValueError("instance volume index out of range of volume_names")
        if len(self.shape_names) != n_shapes:
            raise ValueError(f"{n_shapes} shapes but {len(self.shape_names)} shape names")
        if n_inst and np.any(np.abs(np.linalg.det(xf[:, :, :3])) < 1e-12):
            raise ValueError("an instance transform is singular")
        self._set_tags(t.shape[0], n_shapes)
        self._set_kinds(n_shapes)
        for a in (v, t, vs, ts, xf):
            a.flags.writeable = False
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "triangles", t)
        object.__setattr__(self, "shape_vertex_start", vs)
        object.__setattr__(self, "shape_triangle_start", ts)
        object.__setattr__(self, "transform", xf)
        object.__setattr__(self, "volume_names", tuple(self.volume_names))
        object.__setattr__(self, "shape_names", tuple(self.shape_names))

    def _set_tags(self, n_triangles: int, n_shapes: int) -> None:
        if (self.triangle_tags is None) != (self.shape_tagged is None):
            raise ValueError("triangle_tags and shape_tagged come together")
        if self.triangle_tags is None or self.shape_tagged is None:
            return
        tags = np.ascontiguousarray(self.triangle_tags, dtype=np.int32).reshape(-1, 4)
        tagged = np.ascontiguousarray(self.shape_tagged, dtype=np.bool_).reshape(-1)
        if tags.shape[0] != n_triangles or tagged.shape[0] != n_shapes:
            raise ValueError("triangle_tags needs one row per triangle, shape_tagged one entry per shape")
        tags.flags.writeable = False
        tagged.flags.writeable = False
        object.__setattr__(self, "triangle_tags", tags)
        object.__setattr__(self, "shape_tagged", tagged)

    def _set_kinds(self, n_shapes: int) -> None:
        kind = np.zeros(n_shapes, np.int32) if self.shape_kind is None else \
            np.ascontiguousarray(self.shape_kind, dtype=np.int32).reshape(-1)
        params = np.zeros((n_shapes, SHAPE_PARAMS)) if self.shape_params is None else \
            np.ascontiguousarray(self.shape_params, dtype=np.float64).reshape(-1, SHAPE_PARAMS)
        if kind.shape != (n_shapes,) or params.shape != (n_shapes, SHAPE_PARAMS):
            raise ValueError(f"shape_kind needs {n_shapes} entries and shape_params ({n_shapes}, {SHAPE_PARAMS})")
        if np.any((kind < SHAPE_MESH) | (kind > SHAPE_BOX)) or not np.all(np.isfinite(params)):
            raise ValueError("analytic shape kinds must be 0..4 with finite parameters")
        kind.flags.writeable = False
        params.flags.writeable = False
        object.__setattr__(self, "shape_kind", kind)
        object.__setattr__(self, "shape_params", params)

    # -- sizes --------------------------------------------------------------------------------

    @property
    def n_shapes(self) -> int:
        return int(self.shape_vertex_start.shape[0] - 1)

    @property
    def n_instances(self) -> int:
        return int(self.transform.shape[0])

    @property
    def n_triangles(self) -> int:
        """Triangles stored (each shape once)."""
        return int(self.triangles.shape[0])

    @property
    def n_placed_triangles(self) -> int:
        """Triangles a flattened copy would hold (every instance's shape)."""
        return int(np.diff(self.shape_triangle_start)[self.shape].sum())

    @property
    def n_channels(self) -> int:
        top = int(self.channel.max()) if self.channel.size else -1
        if self.triangle_tags is not None and self.triangle_tags.shape[0]:
            top = max(top, int(self.triangle_tags[:, 3].max()))
        return top + 1

    def tag_rows(self) -> npt.NDArray[np.int32]:
        """Per shape: the first row of its triangles in ``triangle_tags``, or -1 (instance tags)."""
        if self.shape_tagged is None:
            return np.full(self.n_shapes, -1, np.int32)
        return np.where(self.shape_tagged, self.shape_triangle_start[:-1], -1).astype(np.int32)

    def shape_mesh(self, s: int) -> tuple[F32, I32]:
        """The vertices and triangles of shape ``s`` (its own frame, local indices)."""
        v0, v1 = self.shape_vertex_start[s], self.shape_vertex_start[s + 1]
        t0, t1 = self.shape_triangle_start[s], self.shape_triangle_start[s + 1]
        return self.vertices[v0:v1], self.triangles[t0:t1]

    def world_bounds(self) -> tuple[F64, F64]:
        """(I, 3) lower and upper corners of every instance's world bounding box."""
        lo = np.zeros((self.n_instances, 3))
        hi = np.zeros((self.n_instances, 3))
        for s in range(self.n_shapes):
            rows = np.flatnonzero(self.shape == s)
            if rows.size == 0:
                continue
            v, _ = self.shape_mesh(s)
            if v.shape[0] == 0:
                lo[rows] = hi[rows] = self.transform[rows, :, 3]
                continue
            a = self.transform[rows, :, :3]
            b = self.transform[rows, :, 3]
            # Corners of the local box, transformed: bounds the transformed mesh.
            vlo, vhi = v.min(axis=0).astype(np.float64), v.max(axis=0).astype(np.float64)
            centre, half = 0.5 * (vlo + vhi), 0.5 * (vhi - vlo)
            c = np.einsum("nij,j->ni", a, centre) + b
            r = np.einsum("nij,j->ni", np.abs(a), half)
            lo[rows] = c - r
            hi[rows] = c + r
        return lo, hi

    def world_mesh(self, instances: Sequence[int] | None = None) -> tuple[F64, I32, I32]:
        """Flattened world-space triangles (vertices, triangles, instance of each triangle), for
        display and tests; the engine never flattens."""
        rows = range(self.n_instances) if instances is None else instances
        vs: list[F64] = []
        fs: list[I32] = []
        owner: list[I32] = []
        base = 0
        for i in rows:
            v, f = self.shape_mesh(int(self.shape[i]))
            a, b = self.transform[i, :, :3], self.transform[i, :, 3]
            w = v.astype(np.float64) @ a.T + b
            ff = f if np.linalg.det(a) > 0 else f[:, [0, 2, 1]]
            vs.append(w)
            fs.append(ff + base)
            owner.append(np.full(f.shape[0], i, np.int32))
            base += v.shape[0]
        if not vs:
            return np.zeros((0, 3)), np.zeros((0, 3), np.int32), np.zeros(0, np.int32)
        return np.concatenate(vs), np.concatenate(fs).astype(np.int32), np.concatenate(owner)

    def check_indices(self, n_materials: int, n_surfaces: int) -> None:
        """Raise ValueError unless every material/surface index exists in the detector."""
        if self.n_instances == 0:
            return
        top = max(int(self.mat_in.max()), int(self.mat_out.max()))
        if min(int(self.mat_in.min()), int(self.mat_out.min())) < 0 or top >= n_materials:
            raise ValueError(f"scene uses material {top} but the detector has {n_materials}")
        for name in ("surf_exit", "surf_enter"):
            a = getattr(self, name)
            if int(a.min()) < -1 or int(a.max()) >= n_surfaces:
                raise ValueError(f"scene {name} index out of range -1..{n_surfaces - 1}")
        if int(self.channel.min()) < -1:
            raise ValueError("scene channel indices must be >= -1")
        if self.triangle_tags is not None and self.triangle_tags.shape[0]:
            tags = self.triangle_tags
            if tags[:, :2].min() < 0 or tags[:, :2].max() >= n_materials:
                raise ValueError(f"scene triangle materials out of range 0..{n_materials - 1}")
            if tags[:, 2].min() < -1 or tags[:, 2].max() >= n_surfaces:
                raise ValueError(f"scene triangle surfaces out of range -1..{n_surfaces - 1}")
            if tags[:, 3].min() < -1:
                raise ValueError("scene triangle channels must be >= -1")

    def to_canonical(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        """(JSON-able header, named arrays) with fixed dtypes: the input of the fingerprint."""
        header = {"kind": "scene", "n_shapes": self.n_shapes, "n_instances": self.n_instances,
                  "volume_names": list(self.volume_names), "shape_names": list(self.shape_names)}
        arrays: dict[str, npt.NDArray[Any]] = {
            "vertices": self.vertices.astype("<f4"),
            "triangles": self.triangles.astype("<i4"),
            "shape_vertex_start": self.shape_vertex_start.astype("<i8"),
            "shape_triangle_start": self.shape_triangle_start.astype("<i8"),
            "transform": self.transform.astype("<f8"),
        }
        for name in _INSTANCE_FIELDS:
            arrays[name] = getattr(self, name).astype("<i4")
        if self.triangle_tags is not None and self.shape_tagged is not None:
            arrays["triangle_tags"] = self.triangle_tags.astype("<i4")
            arrays["shape_tagged"] = self.shape_tagged.astype("u1")
        assert self.shape_kind is not None
        assert self.shape_params is not None
        if np.any(self.shape_kind != SHAPE_MESH):
            arrays["shape_kind"] = self.shape_kind.astype("<i4")
            arrays["shape_params"] = self.shape_params.astype("<f8")
        return header, arrays

    @classmethod
    def from_canonical(cls, header: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> Scene:
        try:
            return cls(
                vertices=arrays["vertices"], triangles=arrays["triangles"],
                shape_vertex_start=arrays["shape_vertex_start"],
                shape_triangle_start=arrays["shape_triangle_start"], transform=arrays["transform"],
                shape=arrays["shape"], mat_in=arrays["mat_in"], mat_out=arrays["mat_out"],
                surf_exit=arrays["surf_exit"], surf_enter=arrays["surf_enter"], channel=arrays["channel"],
                volume=arrays["volume"],
                volume_names=tuple(str(n) for n in header["volume_names"]),
                shape_names=tuple(str(n) for n in header["shape_names"]),
                triangle_tags=arrays.get("triangle_tags"),
                shape_tagged=None if "shape_tagged" not in arrays else arrays["shape_tagged"].astype(bool),
                shape_kind=arrays.get("shape_kind"),
                shape_params=arrays.get("shape_params"),
            )
        except KeyError as exc:
            raise ValueError(f"scene lacks {exc.args[0]!r}") from None


def _check_shapes(v: F32, t: I32, vs: I64, ts: I64) -> None:
    n_shapes = vs.shape[0] - 1
    if n_shapes < 0 or ts.shape[0] != n_shapes + 1:
        raise ValueError("shape_vertex_start and shape_triangle_start need one entry per shape plus one")
    if vs[0] != 0 or ts[0] != 0 or vs[-1] != v.shape[0] or ts[-1] != t.shape[0] \
            or np.any(np.diff(vs) < 0) or np.any(np.diff(ts) < 0):
        raise ValueError("shape offsets must rise from 0 to the vertex and triangle counts")
    owner = np.repeat(np.arange(n_shapes), np.diff(ts))
    if t.size and (t.min() < 0 or np.any(t.max(axis=1) >= np.diff(vs)[owner])):
        raise ValueError("a triangle refers to a vertex outside its shape")


def analytic_shape(form: dict[str, Any] | None) -> tuple[int, tuple[float, ...]]:
    """(kind, parameters) of an exact solid description (``charon.gdml.analytic_form``), or mesh."""
    if form is None:
        return SHAPE_MESH, ()
    kind = form["kind"]
    if kind == "sphere":
        r, rmin = float(form["r"]), float(form.get("rmin", 0.0))
        return (SHAPE_ELLIPSOID, (r, r, r, -r, r)) if rmin <= 0 else (SHAPE_SHELL, (r, rmin))
    if kind == "ellipsoid":
        return SHAPE_ELLIPSOID, tuple(float(form[k]) for k in ("ax", "by", "cz", "zmin", "zmax"))
    if kind == "cylinder":
        return SHAPE_TUBE, (float(form["rmax"]), float(form["rmin"]), float(form["half_z"]))
    if kind == "box":
        return SHAPE_BOX, tuple(float(h) for h in form["half"])
    return SHAPE_MESH, ()


def scene_from_triangles(vertices: npt.ArrayLike, triangles: npt.ArrayLike, *, mat_in: npt.ArrayLike,
                         mat_out: npt.ArrayLike, surface: npt.ArrayLike, channel: npt.ArrayLike,
                         name: str = "mesh") -> Scene:
    """A scene of one tagged shape placed once: a triangle soup with per-triangle tags (the form of a
    :class:`charon.engine.mesh.MeshGeometry`)."""
    v = np.asarray(vertices, np.float32).reshape(-1, 3)
    f = np.asarray(triangles, np.int32).reshape(-1, 3)
    tags = np.stack([np.asarray(a, np.int32).reshape(-1) for a in (mat_in, mat_out, surface, channel)], axis=1)
    eye = np.hstack([np.eye(3), np.zeros((3, 1))])[None]
    none = np.full(1, -1, np.int32)
    zero = np.zeros(1, np.int32)
    return Scene(v, f, np.array([0, v.shape[0]]), np.array([0, f.shape[0]]), eye, zero, zero, zero, none, none,
                 none, zero, volume_names=(name,), shape_names=(name,), triangle_tags=tags,
                 shape_tagged=np.array([True]))
