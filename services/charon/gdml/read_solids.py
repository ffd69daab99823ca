"""``<solids>``: every solid element into a ``Solid`` of evaluated parameters, and optical surfaces.

Values follow ``G4GDMLReadSolids``: attributes are expressions, lengths are multiplied by
``lunit`` (default mm) and angles by ``aunit`` (default rad), and a missing attribute is 0 as in
Geant4. The parameters are then checked the way each Geant4 solid's constructor checks them, so a
solid Geant4 would reject is an error here, at read time, with the element's line.

``Solid.params`` by kind (lengths in mm, angles in rad; "full" = GDML's full length, which
Geant4 halves):

======================  ===================================================================
box                     x y z (full)
tube                    rmin rmax z (full) startphi deltaphi
cutTube                 tube's + lowX lowY lowZ highX highY highZ (cut-plane normals)
cone                    rmin1 rmax1 rmin2 rmax2 z (full) startphi deltaphi
sphere                  rmin rmax startphi deltaphi starttheta deltatheta
orb                     r
ellipsoid               ax by cz zcut1 zcut2 (as written, 0 if absent); cut_bottom cut_top
                        (effective cuts per G4Ellipsoid: both 0 means uncut)
eltube                  dx dy dz (semi-axes, half length)
elcone                  dx dy (dimensionless slopes) zmax zcut
paraboloid              rlo rhi dz (half length)
hype                    rmin rmax inst outst z (full)
torus                   rmin rmax rtor startphi deltaphi
trd                     x1 x2 y1 y2 z (full)
trap                    z theta phi y1 x1 x2 alpha1 y2 x3 x4 alpha2 (lengths full)
para                    x y z (full) alpha theta phi
arb8                    dz (half); vertices ((x, y) * 8): 4 at -dz then 4 at +dz
tet                     vertices ((x, y, z) * 4)
polycone                startphi deltaphi; zplanes ((z, rmin, rmax), ...)
genericPolycone         startphi deltaphi; rzpoints ((r, z), ...)
polyhedra               startphi deltaphi numsides; zplanes ((z, rmin, rmax), ...) (radii to
                        the flat sides, as Geant4)
genericPolyhedra        startphi deltaphi numsides; rzpoints ((r, z), ...) (corner radii)
xtru                    vertices ((x, y), ...); sections ((z, x_offset, y_offset, scale), ...)
tessellated             vertices (n, 3) array; facets ((i, j, k) or (i, j, k, l), ...), RELATIVE
                        facets resolved to absolute vertices
torusstack              edges ((z, rho), ...) n+1; origins ((z, rho), ...) n; inner: Solid | None
                        (RAT's GLG4TorusStack: segment i between edges i and i+1 is an arc
                        about origin i, or a line where the two edges have equal rho)
union subtraction       first second (solid names); position (3,), rotation (3, 3) and
intersection            transform (4, 4) of the second solid; firstposition firstrotation
                        firsttransform of the first; rotations are OBJECT rotations R (not
                        inverted, unlike physvols: Geant4 builds G4Transform3D(R, pos))
multiUnion              nodes ((solid name, 4x4 transform), ...)
scaledSolid             solid; scale (3,)
reflectedSolid          solid; transform (4, 4): the object transform, i.e. the inverse of the
                        G4Transform3D(R, d) * G4Scale3D(s) that G4ReflectedSolid stores
======================  ===================================================================
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from charon.gdml.context import ReadContext
from charon.gdml.corners import trap_vertices
from charon.gdml.model import DichroicData, OpticalSurface, Property, Solid
from charon.gdml.profiles import ProfileError, polycone_profile, torusstack_profile
from charon.gdml.read_define import read_define
from charon.gdml.read_materials import read_property
from charon.gdml.transforms import solid_transform
from charon.gdml.xmltree import Node

TWO_PI = 2.0 * math.pi

# kind -> (length attributes, angle attributes, dimensionless attributes)
_SIMPLE: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "box": (("x", "y", "z"), (), ()),
    "tube": (("rmin", "rmax", "z"), ("startphi", "deltaphi"), ()),
    "cutTube": (("rmin", "rmax", "z"), ("startphi", "deltaphi"),
                ("lowX", "lowY", "lowZ", "highX", "highY", "highZ")),
    "cone": (("rmin1", "rmax1", "rmin2", "rmax2", "z"), ("startphi", "deltaphi"), ()),
    "sphere": (("rmin", "rmax"), ("startphi", "deltaphi", "starttheta", "deltatheta"), ()),
    "orb": (("r",), (), ()),
    "ellipsoid": (("ax", "by", "cz", "zcut1", "zcut2"), (), ()),
    "eltube": (("dx", "dy", "dz"), (), ()),
    "elcone": (("zmax", "zcut"), (), ("dx", "dy")),
    "paraboloid": (("rlo", "rhi", "dz"), (), ()),
    "hype": (("rmin", "rmax", "z"), ("inst", "outst"), ()),
    "torus": (("rmin", "rmax", "rtor"), ("startphi", "deltaphi"), ()),
    "trd": (("x1", "x2", "y1", "y2", "z"), (), ()),
    "trap": (("z", "y1", "x1", "x2", "y2", "x3", "x4"), ("theta", "phi", "alpha1", "alpha2"), ()),
    "para": (("x", "y", "z"), ("alpha", "theta", "phi"), ()),
    "arb8": (("dz", *(f"v{i}{c}" for i in range(1, 9) for c in "xy")), (), ()),
}

_UNSUPPORTED = {
    "twistedbox": "twisted solids are not supported",
    "twistedtrap": "twisted solids are not supported",
    "twistedtrd": "twisted solids are not supported",
    "twistedtubs": "twisted solids are not supported",
}

SOLID_KINDS = frozenset(_SIMPLE) | frozenset((
    "polycone", "genericPolycone", "polyhedra", "genericPolyhedra", "xtru", "tessellated", "tet",
    "torusstack", "union", "subtraction", "intersection", "multiUnion", "scaledSolid", "reflectedSolid"))

OPTICAL_MODELS = ("glisur", "unified", "LUT", "DAVIS", "dichroic")
OPTICAL_FINISHES = (
    "polished", "polishedfrontpainted", "polishedbackpainted", "ground", "groundfrontpainted",
    "groundbackpainted", "polishedlumirrorair", "polishedlumirrorglue", "polishedair",
    "polishedteflonair", "polishedtioair", "polishedtyvekair", "polishedvm2000air",
    "polishedvm2000glue", "etchedlumirrorair", "etchedlumirrorglue", "etchedair", "etchedteflonair",
    "etchedtioair", "etchedtyvekair", "etchedvm2000air", "etchedvm2000glue", "groundlumirrorair",
    "groundlumirrorglue", "groundair", "groundteflonair", "groundtioair", "groundtyvekair",
    "groundvm2000air", "groundvm2000glue", "Rough_LUT", "RoughTeflon_LUT", "RoughESR_LUT",
    "RoughESRGrease_LUT", "Polished_LUT", "PolishedTeflon_LUT", "PolishedESR_LUT",
    "PolishedESRGrease_LUT", "Detector_LUT")
SURFACE_TYPES = ("dielectric_metal", "dielectric_dielectric", "dielectric_LUT", "dielectric_LUTDAVIS",
                 "dielectric_dichroic", "firsov", "x_ray", "coated")


def read_solids(ctx: ReadContext, solids: Node) -> None:
    ctx.check_attributes(solids, ())
    _solids_body(ctx, solids)


def _solids_body(ctx: ReadContext, parent: Node) -> None:
    for node in parent.children:
        tag = node.tag
        if tag == "define":
            read_define(ctx, node)
        elif tag == "loop":
            ctx.loop(node, lambda n: _solids_body(ctx, n))
        elif tag == "opticalsurface":
            _optical_surface(ctx, node)
        elif tag in _UNSUPPORTED:
            ctx.fail(node, f"unsupported solid: {_UNSUPPORTED[tag]}")
        elif tag in SOLID_KINDS:
            solid = read_solid(ctx, node)
            if solid.name in ctx.solids:
                ctx.fail(node, f"solid '{solid.name}' is defined twice (first at line {ctx.solids[solid.name].line})")
            ctx.solids[solid.name] = solid
        else:
            ctx.fail(node, "unknown solid or element in <solids> (supported solids: "
                     f"{', '.join(sorted(SOLID_KINDS))})")


def read_solid(ctx: ReadContext, node: Node) -> Solid:
    tag = node.tag
    params = _simple_params(ctx, node, *_SIMPLE[tag]) if tag in _SIMPLE else _SPECIAL[tag](ctx, node)
    _CHECKS.get(tag, _no_check)(ctx, node, params)
    return Solid(tag, ctx.name(node), node.line, params)


def _units(ctx: ReadContext, node: Node) -> tuple[float, float]:
    return ctx.unit(node, "lunit", "Length"), ctx.unit(node, "aunit", "Angle")


def _simple_params(ctx: ReadContext, node: Node, lengths: tuple[str, ...], angles: tuple[str, ...],
                   plain: tuple[str, ...]) -> dict[str, Any]:
    ctx.check_attributes(node, ("name", "lunit", "aunit", *lengths, *angles, *plain))
    ctx.no_children(node)
    lunit, aunit = _units(ctx, node)
    params: dict[str, Any] = {a: ctx.number(node, a, 0.0) * lunit for a in lengths}
    params |= {a: ctx.number(node, a, 0.0) * aunit for a in angles}
    params |= {a: ctx.number(node, a, 0.0) for a in plain}
    return params


# --- solids with child elements ----------------------------------------------------------------------

def _zplanes(ctx: ReadContext, node: Node, lunit: float) -> tuple[tuple[float, float, float], ...]:
    planes = []
    for child in node.children:
        ctx.check_attributes(child, ("z", "rmin", "rmax"))
        ctx.no_children(child)
        planes.append((ctx.number(child, "z", 0.0) * lunit, ctx.number(child, "rmin", 0.0) * lunit,
                       ctx.number(child, "rmax", 0.0) * lunit))
    return tuple(planes)


def _rzpoints(ctx: ReadContext, node: Node, lunit: float) -> tuple[tuple[float, float], ...]:
    points = []
    for child in node.children:
        ctx.check_attributes(child, ("r", "z"))
        ctx.no_children(child)
        points.append((ctx.number(child, "r", 0.0) * lunit, ctx.number(child, "z", 0.0) * lunit))
    return tuple(points)


def _polycone_like(ctx: ReadContext, node: Node, *, generic: bool, sides: bool) -> dict[str, Any]:
    ctx.check_attributes(node, ("name", "lunit", "aunit", "startphi", "deltaphi", *(("numsides",) if sides else ())))
    ctx.check_children(node, ("rzpoint",) if generic else ("zplane",))
    lunit, aunit = _units(ctx, node)
    params: dict[str, Any] = {"startphi": ctx.number(node, "startphi", 0.0) * aunit,
                              "deltaphi": ctx.number(node, "deltaphi", 0.0) * aunit}
    if sides:
        params["numsides"] = ctx.integer(node, "numsides", 0)
    if generic:
        params["rzpoints"] = _rzpoints(ctx, node, lunit)
    else:
        params["zplanes"] = _zplanes(ctx, node, lunit)
    return params


def _polycone(ctx: ReadContext, node: Node) -> dict[str, Any]:
    return _polycone_like(ctx, node, generic=False, sides=False)


def _generic_polycone(ctx: ReadContext, node: Node) -> dict[str, Any]:
    return _polycone_like(ctx, node, generic=True, sides=False)


def _polyhedra(ctx: ReadContext, node: Node) -> dict[str, Any]:
    return _polycone_like(ctx, node, generic=False, sides=True)


def _generic_polyhedra(ctx: ReadContext, node: Node) -> dict[str, Any]:
    return _polycone_like(ctx, node, generic=True, sides=True)


def _position_ref(ctx: ReadContext, node: Node, attr: str) -> np.ndarray:  # (3,) mm
    ref = node.attrib.get(attr)
    if ref is None:
        ctx.fail(node, f"missing attribute '{attr}' (the name of a <position>)")
    name = ctx.generate_name(node, ref)
    if name not in ctx.positions:
        ctx.fail(node, f"{attr}: position '{name}' is not defined (define it in <define> first)")
    return np.asarray(ctx.positions[name], dtype=np.float64)


def _tet(ctx: ReadContext, node: Node) -> dict[str, Any]:
    names = ("vertex1", "vertex2", "vertex3", "vertex4")
    ctx.check_attributes(node, ("name", "lunit", "aunit", *names))
    ctx.no_children(node)
    lunit, _ = _units(ctx, node)
    return {"vertices": tuple(tuple(float(c) for c in _position_ref(ctx, node, a) * lunit) for a in names)}


def _tessellated(ctx: ReadContext, node: Node) -> dict[str, Any]:
    ctx.check_attributes(node, ("name", "lunit", "aunit"))
    ctx.check_children(node, ("triangular", "quadrangular"))
    index: dict[tuple[float, float, float], int] = {}
    facets: list[tuple[int, ...]] = []
    for facet in node.children:
        names = ("vertex1", "vertex2", "vertex3") + (("vertex4",) if facet.tag == "quadrangular" else ())
        ctx.check_attributes(facet, (*names, "type", "lunit"))
        ctx.no_children(facet)
        lunit = ctx.unit(facet, "lunit", "Length")
        kind = facet.attrib.get("type", "ABSOLUTE")
        if kind not in ("ABSOLUTE", "RELATIVE"):
            ctx.fail(facet, f'type="{kind}" is not ABSOLUTE or RELATIVE')
        points = [_position_ref(ctx, facet, a) * lunit for a in names]
        if kind == "RELATIVE":
            points = [points[0]] + [points[0] + p for p in points[1:]]
        ids = []
        for p in points:
            key = (float(p[0]), float(p[1]), float(p[2]))
            ids.append(index.setdefault(key, len(index)))
        if len(set(ids)) != len(ids):
            ctx.fail(facet, "facet has repeated vertices")
        facets.append(tuple(ids))
    if len(facets) < 4:
        ctx.fail(node, f"a tessellated solid needs at least 4 facets, got {len(facets)}")
    vertices = np.array(list(index), dtype=np.float64).reshape(-1, 3)
    vertices.flags.writeable = False
    return {"vertices": vertices, "facets": tuple(facets)}


def _xtru(ctx: ReadContext, node: Node) -> dict[str, Any]:
    ctx.check_attributes(node, ("name", "lunit", "aunit"))
    ctx.check_children(node, ("twoDimVertex", "section"))
    lunit, _ = _units(ctx, node)
    vertices, sections = [], []
    for child in node.children:
        if child.tag == "twoDimVertex":
            ctx.check_attributes(child, ("x", "y"))
            ctx.no_children(child)
            vertices.append((ctx.number(child, "x", 0.0) * lunit, ctx.number(child, "y", 0.0) * lunit))
        else:
            ctx.check_attributes(child, ("zOrder", "zPosition", "xOffset", "yOffset", "scalingFactor"))
            ctx.no_children(child)
            sections.append((ctx.number(child, "zPosition", 0.0) * lunit,
                             ctx.number(child, "xOffset", 0.0) * lunit,
                             ctx.number(child, "yOffset", 0.0) * lunit,
                             ctx.number(child, "scalingFactor", 1.0)))
    return {"vertices": tuple(vertices), "sections": tuple(sections)}


def _torusstack(ctx: ReadContext, node: Node) -> dict[str, Any]:
    """RAT's GDMLWriteStructure: <edge z rho/> <origin z rho/> ... <edge/> [<inner><torusstack/></inner>]."""
    ctx.check_attributes(node, ("name", "lunit", "aunit"))
    ctx.check_children(node, ("edge", "origin", "inner"))
    lunit, _ = _units(ctx, node)
    edges: list[tuple[float, float]] = []
    origins: list[tuple[float, float]] = []
    inner: Solid | None = None
    expect = "edge"
    for child in node.children:
        if child.tag == "inner":
            ctx.check_attributes(child, ())
            if inner is not None or len(child.children) != 1 or child.children[0].tag != "torusstack":
                ctx.fail(child, "<inner> holds exactly one <torusstack>, once")
            inner = read_solid(ctx, child.children[0])
            continue
        if inner is not None:
            ctx.fail(child, "<inner> must come after the last <edge>")
        if child.tag != expect:
            ctx.fail(child, "<edge> and <origin> must alternate, starting and ending with <edge>")
        ctx.check_attributes(child, ("z", "rho"))
        ctx.no_children(child)
        point = (ctx.number(child, "z") * lunit, ctx.number(child, "rho") * lunit)
        (edges if expect == "edge" else origins).append(point)
        expect = "origin" if expect == "edge" else "edge"
    if len(edges) < 2 or len(origins) != len(edges) - 1:
        ctx.fail(node, f"needs n+1 <edge> and n <origin> elements, n >= 1 (got {len(edges)} and {len(origins)})")
    return {"edges": tuple(edges), "origins": tuple(origins), "inner": inner}


def _boolean(ctx: ReadContext, node: Node) -> dict[str, Any]:
    ctx.check_attributes(node, ("name", "lunit", "aunit"))
    ctx.check_children(node, ("first", "second", "position", "rotation", "positionref", "rotationref",
                              "firstposition", "firstrotation", "firstpositionref", "firstrotationref"))
    found: dict[str, Any] = {}
    for child in node.children:
        tag = child.tag
        key = tag.removesuffix("ref")
        if key in found:
            ctx.fail(child, f"<{key}> (or <{key}ref>) given twice")
        if tag in ("first", "second"):
            found[tag] = ctx.lookup_solid(child, ctx.ref(child)).name
        elif tag.endswith("ref"):
            found[key] = ctx.lookup_vector(child, "rotation" if "rotation" in tag else "position")
        else:
            found[key] = ctx.vector(child, "Angle" if "rotation" in tag else "Length", 0.0)
    for required in ("first", "second"):
        if required not in found:
            ctx.fail(node, f"missing <{required} ref=...>")
    zero = (0.0, 0.0, 0.0)
    second = solid_transform(found.get("position", zero), found.get("rotation", zero))
    first = solid_transform(found.get("firstposition", zero), found.get("firstrotation", zero))
    return {"first": found["first"], "second": found["second"],
            "position": second[:3, 3].copy(), "rotation": second[:3, :3].copy(), "transform": second,
            "firstposition": first[:3, 3].copy(), "firstrotation": first[:3, :3].copy(),
            "firsttransform": first}


def _multi_union(ctx: ReadContext, node: Node) -> dict[str, Any]:
    ctx.check_attributes(node, ("name", "lunit", "aunit"))
    ctx.check_children(node, ("multiUnionNode",))
    nodes = []
    for child in node.children:
        ctx.check_attributes(child, ("name",))
        ctx.check_children(child, ("solid", "position", "rotation", "positionref", "rotationref"))
        found: dict[str, Any] = {}
        for part in child.children:
            key = part.tag.removesuffix("ref")
            if key in found:
                ctx.fail(part, f"<{key}> given twice")
            if part.tag == "solid":
                found["solid"] = ctx.lookup_solid(part, ctx.ref(part)).name
            elif part.tag.endswith("ref"):
                found[key] = ctx.lookup_vector(part, key)
            else:
                found[key] = ctx.vector(part, "Angle" if key == "rotation" else "Length", 0.0)
        if "solid" not in found:
            ctx.fail(child, "missing <solid ref=...>")
        zero = (0.0, 0.0, 0.0)
        nodes.append((found["solid"], solid_transform(found.get("position", zero), found.get("rotation", zero))))
    if not nodes:
        ctx.fail(node, "a multiUnion needs at least one <multiUnionNode>")
    return {"nodes": tuple(nodes)}


def _scaled_solid(ctx: ReadContext, node: Node) -> dict[str, Any]:
    ctx.check_attributes(node, ("name", "lunit", "aunit"))
    ctx.check_children(node, ("solidref", "scale", "scaleref"))
    solid = None
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    for child in node.children:
        if child.tag == "solidref":
            solid = ctx.lookup_solid(child, ctx.ref(child)).name
        elif child.tag == "scaleref":
            scale = ctx.lookup_vector(child, "scale")
        else:
            scale = ctx.vector(child, "Scale", 1.0)
    if solid is None:
        ctx.fail(node, "missing <solidref ref=...>")
    return {"solid": solid, "scale": np.asarray(scale, dtype=np.float64)}


def _reflected_solid(ctx: ReadContext, node: Node) -> dict[str, Any]:
    ctx.check_attributes(node, ("name", "lunit", "aunit", "solid", "sx", "sy", "sz", "rx", "ry", "rz",
                                "dx", "dy", "dz"))
    ctx.no_children(node)
    lunit, aunit = _units(ctx, node)
    ref = node.attrib.get("solid")
    if ref is None:
        ctx.fail(node, "missing attribute 'solid'")
    solid = ctx.lookup_solid(node, ctx.generate_name(node, ref)).name
    scale = [ctx.number(node, a, 1.0) for a in ("sx", "sy", "sz")]
    angles = [ctx.number(node, a, 0.0) * aunit for a in ("rx", "ry", "rz")]
    position = [ctx.number(node, a, 0.0) * lunit for a in ("dx", "dy", "dz")]
    g4 = solid_transform(position, angles)
    g4[:3, :3] = g4[:3, :3] @ np.diag(scale)
    if abs(np.linalg.det(g4[:3, :3])) < 1e-300:
        ctx.fail(node, "scale factors must be non-zero")
    # G4ReflectedSolid::Inside(p) asks the constituent about transform * p: the constituent's points
    # appear at inverse(transform)
    return {"solid": solid, "transform": np.linalg.inv(g4)}


_SPECIAL: dict[str, Callable[[ReadContext, Node], dict[str, Any]]] = {
    "polycone": _polycone, "genericPolycone": _generic_polycone, "polyhedra": _polyhedra,
    "genericPolyhedra": _generic_polyhedra, "tet": _tet, "tessellated": _tessellated, "xtru": _xtru,
    "torusstack": _torusstack, "union": _boolean, "subtraction": _boolean, "intersection": _boolean,
    "multiUnion": _multi_union, "scaledSolid": _scaled_solid, "reflectedSolid": _reflected_solid,
}


# --- parameter checks (what each Geant4 solid's constructor rejects) --------------------------------

def _no_check(_ctx: ReadContext, _node: Node, _p: dict[str, Any]) -> None:
    return None


def _positive(ctx: ReadContext, node: Node, p: dict[str, Any], *names: str) -> None:
    for n in names:
        if not p[n] > 0.0:
            ctx.fail(node, f"{n} must be > 0 (got {p[n]:g})")


def _radii(ctx: ReadContext, node: Node, rmin: float, rmax: float, suffix: str = "", *, strict: bool = True) -> None:
    if rmin < 0.0 or (rmin >= rmax if strict else rmin > rmax):
        rel = "<" if strict else "<="
        ctx.fail(node, f"radii must satisfy 0 <= rmin{suffix} {rel} rmax{suffix} "
                 f"(got rmin{suffix}={rmin:g} mm, rmax{suffix}={rmax:g} mm)")


def _phi(ctx: ReadContext, node: Node, p: dict[str, Any], *, zero_is_full: bool = False) -> None:
    if not (p["deltaphi"] > 0.0 or zero_is_full):
        ctx.fail(node, f"deltaphi must be > 0 (got {p['deltaphi']:g} rad; {TWO_PI:.6f} rad = 360 deg is a full turn)")


def _check_box(ctx: ReadContext, node: Node, p: dict[str, Any]) -> None:
    _positive(ctx, node, p, "x", "y", "z")


def _check_tube(ctx: ReadContext, node: Node, p: dict[str, Any]) -> None:
    _positive(ctx, node, p, "z")
    _radii(ctx, node, p["rmin"], p["rmax"])
    _phi(ctx, node, p)


def _check_cut_tube(ctx: ReadContext, node: Node, p: dict[str, Any]) -> None:
    _check_tube(ctx, node, p)
    low = np.array([p["lowX"], p["lowY"], p["lowZ"]])
    high = np.array([p["highX"], p["highY"], p["highZ"]])
    if not low.any():
        low = np.array([0.0, 0.0, -1.0])
    if not high.any():
        high = np.array([0.0, 0.0, 1.0])
    low, high = low / np.linalg.norm(low), high / np.linalg.norm(high)
    if low[2] >= 0.0 or high[2] <= 0.0:
        ctx.fail(node, "cut normals must point out of the solid: lowZ < 0 and highZ > 0")
    # the cut planes must not cross inside the lateral surface
    half = 0.5 * p["z"]
    for phi in np.linspace(0.0, TWO_PI, 361):
        x, y = p["rmax"] * math.cos(phi), p["rmax"] * math.sin(phi)
        z_low = -half - (low[0] * x + low[1] * y) / low[2]
        z_high = half - (high[0] * x + high[1] * y) / high[2]
        if z_low >= z_high:
            ctx.fail(node, "the cut planes cross inside the lateral surface")
    p["low_normal"], p["high_normal"] = low, high


def _check_cone(ctx: ReadContext, node: Node, p: dict[str, Any]) -> None:
    _positive(ctx, node, p, "z")
    _radii(ctx, node, p["rmin1"], p["rmax1"], "1", strict=False)
    _radii(ctx, node, p["rmin2"], p["rmax2"], "2", strict=False)
    if p["rmin1"] == p["rmax1"] and p["rmin2"] == p["rmax2"]:
        ctx.fail(node, "rmin1 < rmax1 or rmin2 < rmax2 is needed (the cone has no thickness)")
    _phi(ctx, node, p)


def _check_sphere(ctx: ReadContext, node: Node, p: dict[str, Any]) -> None:
    _radii(ctx, node, p["rmin"], p["rmax"])
    _phi(ctx, node, p)
    if not 0.0 <= p["starttheta"] <= math.pi:
        ctx.fail(node, f"starttheta must be within [0, pi] (got {p['starttheta']:g} rad)")
    if not p["deltatheta"] > 0.0:
        ctx.fail(node, f"deltatheta must be > 0 (got {p['deltatheta']:g} rad)")


def _check_orb(ctx: ReadContext, node: Node, p: dict[str, Any]) -> None:
    _positive(ctx, node, p, "r")


def _check_ellipsoid(ctx: ReadContext, node: Node, p: dict[str, Any]) -> None:
    _positive(ctx, node, p, "ax", "by", "cz")
    bottom, top, c = p["zcut1"], p["zcut2"], p["cz"]
    if bottom == 0.0 and top == 0.0:  # G4Ellipsoid::CheckParameters: both 0 means no cut
        bottom, top = -c, c
    if bottom >= c or top <= -c or bottom >= top:
        ctx.fail(node, f"invalid z cuts zcut1={p['zcut1']:g} zcut2={p['zcut2']:g} for cz={c:g} "
                 "(need zcut1 < cz, zcut2 > -cz, zcut1 < zcut2; both 0 means uncut)")
    p["cut_bottom"], p["cut_top"] = max(bottom, -c), min(top, c)


def _check_eltube(ctx: ReadContext, node: Node, p: dict[str, Any]) -> None:
    _positive(ctx, node, p, "dx", "dy", "dz")


def _check_elcone(ctx: ReadContext, node: Node, p: dict[str, Any]) -> None:
    _positive(ctx, node, p, "dx", "dy", "zmax", "zcut")
    p["zcut"] = min(p["zcut"], p["zmax"])


def _check_paraboloid(ctx: ReadContext, node: Node, p: dict[str, Any]) -> None:
    _positive(ctx, node, p, "dz")
    if not 0.0 <= p["rlo"] < p["rhi"]:
        ctx.fail(node, f"need 0 <= rlo < rhi (got rlo={p['rlo']:g}, rhi={p['rhi']:g})")


def _check_hype(ctx: ReadContext, node: Node, p: dict[str, Any]) -> None:
    _positive(ctx, node, p, "z")
    _radii(ctx, node, p["rmin"], p["rmax"])
    half = 0.5 * p["z"]
    for name in ("inst", "outst"):
        if not 0.0 <= p[name] < math.pi / 2:
            ctx.fail(node, f"{name} must be within [0, pi/2) (got {p[name]:g} rad)")
    end_in = math.hypot(p["rmin"], math.tan(p["inst"]) * half)
    end_out = math.hypot(p["rmax"], math.tan(p["outst"]) * half)
    if end_in >= end_out:
        ctx.fail(node, "the inner surface reaches the outer one at the end planes")


def _check_torus(ctx: ReadContext, node: Node, p: dict[str, Any]) -> None:
    _radii(ctx, node, p["rmin"], p["rmax"])
    if p["rtor"] < p["rmax"]:
        ctx.fail(node, f"rtor must be >= rmax (got rtor={p['rtor']:g}, rmax={p['rmax']:g})")
    _phi(ctx, node, p)


def _check_trd(ctx: ReadContext, node: Node, p: dict[str, Any]) -> None:
    _positive(ctx, node, p, "z")
    for a, b in (("x1", "x2"), ("y1", "y2")):
        if p[a] < 0 or p[b] < 0 or (p[a] == 0 and p[b] == 0):
            ctx.fail(node, f"{a} and {b} must be >= 0 and not both 0 (got {p[a]:g}, {p[b]:g})")


def _check_trap(ctx: ReadContext, node: Node, p: dict[str, Any]) -> None:
    _positive(ctx, node, p, "z", "y1", "x1", "x2", "y2", "x3", "x4")
    # G4Trap::MakePlanes: each side face must be planar
    v = trap_vertices(p)
    for idx in ((0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)):
        a, b, c, d = (v[i] for i in idx)
        normal = np.cross(c - a, d - b)
        dist = abs(np.dot(normal / np.linalg.norm(normal), b - a))
        if dist > 1e-9 * max(1.0, float(np.abs(v).max())):
            ctx.fail(node, f"side face is not planar (off by {dist:.3g} mm); check x1..x4, alpha1, alpha2")


def _check_para(ctx: ReadContext, node: Node, p: dict[str, Any]) -> None:
    _positive(ctx, node, p, "x", "y", "z")


def _check_arb8(ctx: ReadContext, node: Node, p: dict[str, Any]) -> None:
    _positive(ctx, node, p, "dz")
    p["vertices"] = tuple((p[f"v{i}x"], p[f"v{i}y"]) for i in range(1, 9))


def _check_profile(ctx: ReadContext, node: Node, p: dict[str, Any]) -> None:
    try:
        polycone_profile(p)
    except ProfileError as exc:
        ctx.fail(node, str(exc))
    if p.get("numsides", 1) < 1 or ("numsides" in p and _is_full(p["deltaphi"], zero_is_full=True)
                                     and p["numsides"] < 3):
        ctx.fail(node, f"numsides must be >= 1, and >= 3 for a full turn (got {p.get('numsides')})")


def _is_full(deltaphi: float, *, zero_is_full: bool = False) -> bool:
    return deltaphi >= TWO_PI * (1 - 1e-12) or (zero_is_full and deltaphi <= 0.0)


def _check_xtru(ctx: ReadContext, node: Node, p: dict[str, Any]) -> None:
    if len(p["vertices"]) < 3:
        ctx.fail(node, f"needs at least 3 <twoDimVertex> (got {len(p['vertices'])})")
    zs = [s[0] for s in p["sections"]]
    if len(zs) < 2 or any(b <= a for a, b in itertools.pairwise(zs)):
        ctx.fail(node, "needs at least 2 <section> with increasing zPosition")
    if any(s[3] <= 0 for s in p["sections"]):
        ctx.fail(node, "scalingFactor must be > 0")


def _check_tet(ctx: ReadContext, node: Node, p: dict[str, Any]) -> None:
    a, b, c, d = (np.array(v) for v in p["vertices"])
    if abs(np.dot(np.cross(b - a, c - a), d - a)) < 1e-12 * max(1.0, float(np.abs([a, b, c, d]).max())) ** 3:
        ctx.fail(node, "the four vertices are coplanar")


def _check_torusstack(ctx: ReadContext, node: Node, p: dict[str, Any]) -> None:
    try:
        torusstack_profile(p, 1.0)
    except ProfileError as exc:
        ctx.fail(node, str(exc))


def _check_scaled(ctx: ReadContext, node: Node, p: dict[str, Any]) -> None:
    if not np.all(np.isfinite(p["scale"])) or np.any(p["scale"] == 0.0):
        ctx.fail(node, f"scale factors must be non-zero (got {p['scale'].tolist()})")


_CHECKS: dict[str, Callable[[ReadContext, Node, dict[str, Any]], None]] = {
    "box": _check_box, "tube": _check_tube, "cutTube": _check_cut_tube, "cone": _check_cone,
    "sphere": _check_sphere, "orb": _check_orb, "ellipsoid": _check_ellipsoid, "eltube": _check_eltube,
    "elcone": _check_elcone, "paraboloid": _check_paraboloid, "hype": _check_hype, "torus": _check_torus,
    "trd": _check_trd, "trap": _check_trap, "para": _check_para, "arb8": _check_arb8,
    "polycone": _check_profile, "genericPolycone": _check_profile, "polyhedra": _check_profile,
    "genericPolyhedra": _check_profile, "xtru": _check_xtru, "tet": _check_tet,
    "torusstack": _check_torusstack, "scaledSolid": _check_scaled,
}


# --- optical surfaces ---------------------------------------------------------------------------------

def _enum(ctx: ReadContext, node: Node, attr: str, names: tuple[str, ...]) -> str:
    """Geant4 enum by name or by its integer (the G4GDML writer writes integers)."""
    text = node.attrib.get(attr)
    if text is None:
        ctx.fail(node, f"missing attribute '{attr}' (one of {', '.join(names)})")
    text = text.strip()
    if text in names:
        return text
    if text.isdigit() and int(text) < len(names):
        return names[int(text)]
    return ctx.fail(node, f'{attr}="{text}" is not one of {", ".join(names)} (or 0..{len(names) - 1})')


def _optical_surface(ctx: ReadContext, node: Node) -> None:
    ctx.check_attributes(node, ("name", "model", "finish", "type", "value"))
    ctx.check_children(node, ("property", "constproperty", "dichroic_data"))
    name = ctx.name(node)
    if name in ctx.optical_surfaces:
        ctx.fail(node, f"optical surface '{name}' is defined twice")
    properties: dict[str, Property] = {}
    dichroic = None
    for child in node.children:
        if child.tag == "dichroic_data":
            dichroic = _dichroic(ctx, child)
            continue
        prop = read_property(ctx, child, allow_constant_ref=True)
        if prop.name in properties:
            ctx.fail(child, f"property '{prop.name}' is given twice for this surface")
        properties[prop.name] = prop
    ctx.optical_surfaces[name] = OpticalSurface(
        name, node.line, _enum(ctx, node, "model", OPTICAL_MODELS), _enum(ctx, node, "finish", OPTICAL_FINISHES),
        _enum(ctx, node, "type", SURFACE_TYPES), ctx.number(node, "value"), properties, dichroic)


def _dichroic(ctx: ReadContext, node: Node) -> DichroicData:
    ctx.check_attributes(node, ("x_length", "y_length"))
    ctx.check_children(node, ("x", "y", "data"))
    arrays: dict[str, np.ndarray] = {}
    for child in node.children:
        ctx.check_attributes(child, ("values",))
        ctx.no_children(child)
        text = child.attrib.get("values") or ctx.fail(child, "missing attribute 'values'")
        arrays[child.tag] = np.array([ctx.evaluate(child, "values", t) for t in text.split()])
    for key in ("x", "y", "data"):
        if key not in arrays:
            ctx.fail(node, f"missing <{key} values=...>")
    nx, ny = ctx.integer(node, "x_length", len(arrays["x"])), ctx.integer(node, "y_length", len(arrays["y"]))
    if (nx, ny) != (len(arrays["x"]), len(arrays["y"])) or len(arrays["data"]) != nx * ny:
        ctx.fail(node, f"sizes disagree: x_length={nx}, y_length={ny}, {len(arrays['x'])} x values, "
                 f"{len(arrays['y'])} y values, {len(arrays['data'])} data values (need x_length*y_length)")
    return DichroicData(arrays["x"], arrays["y"], arrays["data"].reshape(nx, ny), node.line)
