"""Solids to triangle meshes: the public entry point ``tessellate`` and its per-document cache.

``tessellate(doc, name, chord_mm)`` returns the solid's closed mesh in its own frame, wound
outward, within ``chord_mm`` of the true surface (see ``charon.gdml.profiles`` for the policy).
Primitives are built directly (``primitives``), booleans, multi-unions and torus-stack ``<inner>``
subtractions go through manifold3d (``booleans``), scaled and reflected solids transform their
constituent's mesh. Meshes are cached per document by (solid, chord), so a solid used by many
volumes, or as an operand of many booleans, is meshed once; cached arrays are read-only.

A boolean may legitimately come out empty or paper-thin (RAT's 1e-7 mm central-gap tube is a
primitive that thin); those are returned as they are, and ``is_degenerate`` lets the caller
decide. ``analytic_form`` describes the few solids a ray tracer can intersect exactly.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import numpy as np

from charon.gdml.booleans import BooleanError, boolean, union_all
from charon.gdml.errors import GdmlError
from charon.gdml.mesh import EMPTY, TriangleMesh, transformed
from charon.gdml.model import GdmlDocument, Solid
from charon.gdml.primitives import PRIMITIVES, MeshBuildError, torusstack_outer
from charon.gdml.profiles import ProfileError, is_full_turn

_CACHE: weakref.WeakKeyDictionary[GdmlDocument, dict[tuple[str, float], TriangleMesh]] = (
    weakref.WeakKeyDictionary())


def tessellate(doc: GdmlDocument, solid: str, chord_mm: float = 0.5) -> TriangleMesh:
    """The closed, outward-wound mesh of ``doc.solids[solid]`` with sagitta <= ``chord_mm``."""
    if not (chord_mm > 0.0 and math.isfinite(chord_mm)):
        raise ValueError(f"chord_mm must be a positive number, got {chord_mm!r}")
    if solid not in doc.solids:
        raise GdmlError(f"solid '{solid}' is not defined in this document", path=doc.path)
    cache = _CACHE.setdefault(doc, {})
    return _mesh(doc, doc.solids[solid], float(chord_mm), cache)


def _mesh(doc: GdmlDocument, solid: Solid, chord: float, cache: dict[tuple[str, float], TriangleMesh]) -> TriangleMesh:
    key = (solid.name, chord)
    found = cache.get(key)
    if found is None:
        try:
            found = _build(doc, solid, chord, cache)
        except (MeshBuildError, ProfileError, BooleanError) as exc:
            raise GdmlError(f"cannot tessellate: {exc}", path=doc.path, line=solid.line,
                            tag=f'{solid.kind} name="{solid.name}"') from None
        cache[key] = found
    return found


def _operand(doc: GdmlDocument, name: str, chord: float, cache: dict[tuple[str, float], TriangleMesh]) -> TriangleMesh:
    return _mesh(doc, doc.solids[name], chord, cache)


def _build(doc: GdmlDocument, solid: Solid, chord: float, cache: dict[tuple[str, float], TriangleMesh]) -> TriangleMesh:
    p: dict[str, Any] = dict(solid.params)
    kind = solid.kind
    if kind in PRIMITIVES:
        return PRIMITIVES[kind](p, chord)
    if kind == "torusstack":
        outer = torusstack_outer(p, chord)
        inner: Solid | None = p["inner"]
        if inner is None:
            return outer
        return boolean("subtraction", outer, _build(doc, inner, chord, cache))
    if kind in ("union", "subtraction", "intersection"):
        first = transformed(_operand(doc, p["first"], chord, cache), p["firsttransform"])
        second = transformed(_operand(doc, p["second"], chord, cache), p["transform"])
        if first.is_empty or second.is_empty:
            return {"union": second if first.is_empty else first, "subtraction": first,
                    "intersection": EMPTY}[kind]
        return boolean(kind, first, second)
    if kind == "multiUnion":
        return union_all([transformed(_operand(doc, s, chord, cache), t) for s, t in p["nodes"]])
    if kind == "scaledSolid":
        scale = np.asarray(p["scale"], dtype=np.float64)
        inner_chord = chord / float(np.abs(scale).max())
        m = np.eye(4)
        m[:3, :3] = np.diag(scale)
        return transformed(_operand(doc, p["solid"], inner_chord, cache), m)
    if kind == "reflectedSolid":
        t = p["transform"]
        stretch = float(np.linalg.norm(t[:3, :3], ord=2))
        return transformed(_operand(doc, p["solid"], chord / stretch, cache), t)
    raise MeshBuildError(f"no tessellation for solid kind '{kind}'")  # pragma: no cover - reader refuses it


def is_degenerate(mesh: TriangleMesh, min_thickness_mm: float = 1e-3) -> bool:
    """Empty, or thinner on average (2 V / A) than ``min_thickness_mm``: RAT's 1e-7 mm central
    gap, or a boolean whose result is a sheet. A caller usually leaves such volumes out."""
    if mesh.is_empty:
        return True
    area = mesh.area()
    return area <= 0.0 or 2.0 * mesh.volume() / area < min_thickness_mm


def analytic_form(doc: GdmlDocument, solid: str) -> dict[str, Any] | None:
    """An exact description for a ray tracer's fast path, or None.

    Covers a full sphere/orb (``{"kind": "sphere", "r"}``), a full shell
    (``{"kind": "sphere", "r", "rmin"}``), an ellipsoid (``{"kind": "ellipsoid", "ax", "by",
    "cz", "zmin", "zmax"}``, effective cuts), a full-turn tube (``{"kind": "cylinder", "rmin",
    "rmax", "half_z"}``) and a box (``{"kind": "box", "half": (x, y, z)}``), all centred on the
    solid's origin, lengths in mm.
    """
    s = doc.solids.get(solid)
    if s is None:
        return None
    p = s.params
    if s.kind == "orb":
        return {"kind": "sphere", "r": p["r"], "rmin": 0.0}
    if s.kind == "sphere" and is_full_turn(p["deltaphi"]) and p["starttheta"] == 0.0 \
            and p["starttheta"] + p["deltatheta"] >= math.pi:
        return {"kind": "sphere", "r": p["rmax"], "rmin": p["rmin"]}
    if s.kind == "ellipsoid":
        return {"kind": "ellipsoid", "ax": p["ax"], "by": p["by"], "cz": p["cz"],
                "zmin": p["cut_bottom"], "zmax": p["cut_top"]}
    if s.kind == "tube" and is_full_turn(p["deltaphi"]):
        return {"kind": "cylinder", "rmin": p["rmin"], "rmax": p["rmax"], "half_z": 0.5 * p["z"]}
    if s.kind == "box":
        return {"kind": "box", "half": (0.5 * p["x"], 0.5 * p["y"], 0.5 * p["z"])}
    return None
