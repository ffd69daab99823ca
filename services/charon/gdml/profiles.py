"""(r, z) cross-sections of the solids of revolution, sampled to a chord (sagitta) tolerance.

Tubes, cones, spheres, tori, polycones, polyhedra, RAT's torus stacks, ellipsoids, elliptical
tubes and cones, paraboloids and hyperboloids are all a region of the (r, z) half-plane swept about
z (the elliptical ones in a unit-r frame later stretched in x and y). This module builds that
region as closed loops: counter-clockwise outer boundaries, clockwise holes, r >= 0, no repeated
points. ``revolve`` turns them into a mesh.

Chord policy (the sagitta of every mesh edge and facet against the true surface <= chord):

* an arc of radius R on a surface curved one way (cylinder, cone) takes steps of
  2 acos(1 - chord/R): ``ceil(pi / acos(1 - chord/R))`` segments per full circle;
* on a doubly curved surface (sphere, torus, ellipsoid, arc segments of torus stacks), both the
  profile arcs and the turn about z take steps of acos((1 - chord/R)^2), so that the centre of a
  facet, not just its edges, stays within chord of a sphere of radius R;
* no step is larger than 45 degrees (a full turn has at least 8 segments) and none smaller than
  2 pi / 16384 (the cap only bites below chord ~ 1e-4 mm at 6 m radius).

Curves that are not circles (paraboloid, hyperboloid) are sampled adaptively: a segment is split
until the curve is within chord/2 of it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from charon.gdml.model import F64

MAX_SEGMENTS_PER_TURN = 16384
MAX_STEP = math.pi / 4
TWO_PI = 2.0 * math.pi


class ProfileError(ValueError):
    """Solid parameters that do not describe a valid cross-section (Geant4 would reject them)."""


@dataclass(frozen=True)
class Profile:
    loops: tuple[F64, ...]  # each (k, 2): columns r, z; outer CCW, holes CW
    doubly_curved: bool     # sets the step of the turn about z

    @property
    def r_max(self) -> float:
        return max(float(loop[:, 0].max()) for loop in self.loops)


def angular_step(radius: float, chord: float, *, doubly: bool) -> float:
    """The largest angular step keeping the sagitta on a circle of this radius within chord."""
    if radius <= 0.0:
        return MAX_STEP
    x = min(chord / radius, 1.0)
    step = math.acos((1.0 - x) ** 2) if doubly else 2.0 * math.acos(1.0 - x)
    return min(max(step, TWO_PI / MAX_SEGMENTS_PER_TURN), MAX_STEP)


def segments(radius: float, span: float, chord: float, *, doubly: bool) -> int:
    """Number of segments for an arc of ``span`` radians on a circle of ``radius``."""
    if span <= 0.0:
        return 1
    return max(1, math.ceil(span / angular_step(radius, chord, doubly=doubly) - 1e-9))


def is_full_turn(deltaphi: float) -> bool:
    return deltaphi >= TWO_PI * (1.0 - 1e-12)


def signed_area(loop: F64) -> float:
    r, z = loop[:, 0], loop[:, 1]
    return float(0.5 * (np.dot(r, np.roll(z, -1)) - np.dot(np.roll(r, -1), z)))


def _snap_small(points: F64, scale: float) -> F64:
    """Round off sin/cos residue (cos(pi/2) = 6e-17) so cut planes and the axis are exact."""
    points[np.abs(points) < 1e-14 * max(scale, 1e-300)] = 0.0
    return points


def clean_loop(points: Sequence[Sequence[float]] | F64, scale: float, *, ccw: bool = True) -> F64:
    """Drop consecutive duplicates (and a closing duplicate), orient the loop."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2).copy()
    tol = 1e-12 * max(scale, 1e-300)
    keep = [0]
    for i in range(1, p.shape[0]):
        if np.abs(p[i] - p[keep[-1]]).max() > tol:
            keep.append(i)
    p = p[keep]
    while p.shape[0] > 1 and np.abs(p[-1] - p[0]).max() <= tol:
        p = p[:-1]
    if p.shape[0] >= 3 and (signed_area(p) > 0.0) != ccw:
        p = p[::-1].copy()
    return p


def crosses_itself(loop: F64) -> bool:
    """True if two non-adjacent edges of the closed polygon intersect (touching counts)."""
    n = loop.shape[0]
    if n < 4:
        return False
    a = loop
    b = np.roll(loop, -1, axis=0)
    for i in range(n - 2):
        j = np.arange(i + 2, n if i > 0 else n - 1)
        if j.size == 0:
            continue
        p, r = a[i], b[i] - a[i]
        q, s = a[j], b[j] - a[j]
        denom = r[0] * s[:, 1] - r[1] * s[:, 0]
        qp = q - p
        t_num = qp[:, 0] * s[:, 1] - qp[:, 1] * s[:, 0]
        u_num = qp[:, 0] * r[1] - qp[:, 1] * r[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = t_num / denom
            u = u_num / denom
        hit = (denom != 0) & (t >= 0) & (t <= 1) & (u >= 0) & (u <= 1)
        # collinear overlapping edges
        coll = (denom == 0) & (t_num == 0)
        if hit.any():
            return True
        if coll.any():
            for k in np.nonzero(coll)[0]:
                rr = float(np.dot(r, r))
                t0 = float(np.dot(qp[k], r)) / rr
                t1 = t0 + float(np.dot(s[k], r)) / rr
                if max(t0, t1) > 0 and min(t0, t1) < 1:
                    return True
    return False


def _checked(loop: F64, what: str, scale: float) -> F64:
    if loop.shape[0] < 3:
        raise ProfileError(f"{what}: too few distinct (r, z) points ({loop.shape[0]})")
    if (loop[:, 0] < 0.0).any():
        raise ProfileError(f"{what}: all r values must be >= 0")
    if abs(signed_area(loop)) <= 1e-12 * scale * scale:
        raise ProfileError(f"{what}: the (r, z) cross-section has zero area")
    if loop.shape[0] <= 2000 and crosses_itself(loop):
        raise ProfileError(f"{what}: the (r, z) outline crosses itself")
    return loop


# --- polycone / polyhedra ------------------------------------------------------------------------

def polycone_profile(p: dict[str, Any]) -> Profile:
    """polycone, genericPolycone, polyhedra, genericPolyhedra (polyhedra: corner radii)."""
    if "zplanes" in p:
        planes = p["zplanes"]
        if len(planes) < 2:
            raise ProfileError(f"needs at least 2 <zplane> (got {len(planes)})")
        for i, (z, rmin, rmax) in enumerate(planes):
            if rmin > rmax:
                raise ProfileError(f"zplane {i + 1} at z={z:g}: rmin {rmin:g} > rmax {rmax:g}")
        for (z1, rmin1, rmax1), (z2, rmin2, rmax2) in itertools.pairwise(planes):
            if z1 == z2 and (rmin1 > rmax2 or rmin2 > rmax1):
                raise ProfileError(f"consecutive zplanes at z={z1:g} do not overlap in r (not contiguous)")
        # G4ReduciblePolygon(rmin, rmax, z): inner radii from the last plane down, then outer radii up
        points = [(rmin, z) for z, rmin, _ in reversed(planes)] + [(rmax, z) for z, _, rmax in planes]
        what = "zplanes"
    else:
        points = list(p["rzpoints"])
        if len(points) < 3:
            raise ProfileError(f"needs at least 3 <rzpoint> (got {len(points)})")
        what = "rzpoints"
    pts = np.asarray(points, dtype=np.float64)
    scale = float(np.abs(pts).max()) or 1.0
    if "numsides" in p and "zplanes" in p:
        deltaphi = p["deltaphi"]
        total = TWO_PI if (deltaphi <= 0 or is_full_turn(deltaphi)) else deltaphi
        if p["numsides"] > 0:
            pts[:, 0] /= math.cos(0.5 * total / p["numsides"])
    return Profile((_checked(clean_loop(pts, scale), what, scale),), doubly_curved=False)


# --- simple solids of revolution ------------------------------------------------------------------

def tube_profile(rmin: float, rmax: float, half_z: float) -> Profile:
    loop = clean_loop([(rmin, -half_z), (rmax, -half_z), (rmax, half_z), (rmin, half_z)], max(rmax, half_z))
    return Profile((loop,), doubly_curved=False)


def cone_profile(p: dict[str, Any]) -> Profile:
    h = 0.5 * p["z"]
    loop = clean_loop([(p["rmin1"], -h), (p["rmax1"], -h), (p["rmax2"], h), (p["rmin2"], h)],
                      max(p["rmax1"], p["rmax2"], h))
    return Profile((loop,), doubly_curved=False)


def _arc(center: tuple[float, float], radius: float, t0: float, t1: float, chord: float) -> F64:
    """Points (r, z) on a circle from angle t0 to t1 (angles from the +r axis toward +z)."""
    n = segments(radius, abs(t1 - t0), chord, doubly=True)
    t = np.linspace(t0, t1, n + 1)
    return np.column_stack([center[0] + radius * np.cos(t), center[1] + radius * np.sin(t)])


def sphere_profile(p: dict[str, Any], chord: float) -> Profile:
    """G4Sphere: rmin..rmax, polar angle starttheta..starttheta+deltatheta (clamped to pi)."""
    rmin, rmax = p["rmin"], p["rmax"]
    t_start = p["starttheta"]
    t_end = min(t_start + p["deltatheta"], math.pi)
    # polar angle theta from +z: (r, z) = R (sin theta, cos theta) = circle angle pi/2 - theta
    outer = _arc((0.0, 0.0), rmax, math.pi / 2 - t_start, math.pi / 2 - t_end, chord)
    if rmin > 0.0:
        inner = _arc((0.0, 0.0), rmin, math.pi / 2 - t_end, math.pi / 2 - t_start, chord)
    else:
        inner = np.zeros((1, 2))
    pts = _snap_small(np.vstack([outer, inner]), rmax)
    return Profile((_checked(clean_loop(pts, rmax), "sphere", rmax),), doubly_curved=True)


def orb_profile(r: float, chord: float) -> Profile:
    return sphere_profile({"rmin": 0.0, "rmax": r, "starttheta": 0.0, "deltatheta": math.pi}, chord)


def torus_profile(p: dict[str, Any], chord: float) -> Profile:
    rtor, rmax, rmin = p["rtor"], p["rmax"], p["rmin"]
    outer = _arc((rtor, 0.0), rmax, 0.0, TWO_PI, chord)[:-1]
    loops = [clean_loop(_snap_small(outer, rtor + rmax), rtor + rmax)]
    if rmin > 0.0:
        hole = _arc((rtor, 0.0), rmin, 0.0, TWO_PI, chord)[:-1]
        loops.append(clean_loop(_snap_small(hole, rtor + rmax), rtor + rmax, ccw=False))
    return Profile(tuple(loops), doubly_curved=True)


def ellipsoid_profile(p: dict[str, Any], chord: float) -> Profile:
    """Unit radius in r (x, y are stretched by ax, by afterwards), true z; cut planes exact."""
    cz = p["cz"]
    bottom, top = p["cut_bottom"], p["cut_top"]
    big = max(p["ax"], p["by"], cz)
    t_top = math.asin(max(-1.0, min(1.0, top / cz)))      # circle angle of the top cut
    t_bot = math.asin(max(-1.0, min(1.0, bottom / cz)))
    n = segments(big, t_top - t_bot, chord, doubly=True)
    t = np.linspace(t_top, t_bot, n + 1)
    arc = np.column_stack([np.cos(t), cz * np.sin(t)])
    arc[0] = (math.sqrt(max(0.0, 1.0 - (top / cz) ** 2)), top)
    arc[-1] = (math.sqrt(max(0.0, 1.0 - (bottom / cz) ** 2)), bottom)
    arc[:, 0][np.abs(arc[:, 0]) < 1e-14] = 0.0
    pts = np.vstack([[(0.0, top)], arc, [(0.0, bottom)]])
    return Profile((_checked(clean_loop(pts, cz), "ellipsoid", max(cz, 1.0)),), doubly_curved=True)


def elcone_profile(p: dict[str, Any]) -> Profile:
    """G4EllipticalCone in unit r: r(z) = zmax - z for |z| <= zcut."""
    zmax, zc = p["zmax"], p["zcut"]
    loop = clean_loop([(0.0, -zc), (zmax + zc, -zc), (zmax - zc, zc), (0.0, zc)], zmax + zc)
    return Profile((_checked(loop, "elcone", zmax + zc),), doubly_curved=False)


def _adaptive(curve: Callable[[float], tuple[float, float]], t0: float, t1: float, tol: float,
              depth: int = 0) -> list[tuple[float, float]]:
    """Points of a parametric curve from t0 (included) to t1 (excluded), split until the curve is
    within tol of each chord (checked at the quarter points and the middle)."""
    a, b = np.array(curve(t0)), np.array(curve(t1))
    d = b - a
    length = float(np.hypot(*d))
    worst = 0.0
    for f in (0.25, 0.5, 0.75):
        m = np.array(curve(t0 + f * (t1 - t0)))
        worst = max(worst, abs(float(d[0] * (m[1] - a[1]) - d[1] * (m[0] - a[0]))) / length if length else
                    float(np.hypot(*(m - a))))
    if worst <= tol or depth >= 24:
        return [(float(a[0]), float(a[1]))]
    tm = 0.5 * (t0 + t1)
    return _adaptive(curve, t0, tm, tol, depth + 1) + _adaptive(curve, tm, t1, tol, depth + 1)


def _curve_points(curve: Callable[[float], tuple[float, float]], t0: float, t1: float, tol: float) -> F64:
    # start from 8 pieces so an S-shaped curve cannot fool the first test
    pts: list[tuple[float, float]] = []
    knots = np.linspace(t0, t1, 9)
    for a, b in itertools.pairwise(knots):
        pts += _adaptive(curve, float(a), float(b), tol)
    pts.append(curve(t1))
    return np.asarray(pts, dtype=np.float64)


def paraboloid_profile(p: dict[str, Any], chord: float) -> Profile:
    """G4Paraboloid: rho^2 = k1 z + k2 through (rlo, -dz) and (rhi, dz); sampled in rho."""
    rlo, rhi, dz = p["rlo"], p["rhi"], p["dz"]
    k1 = (rhi * rhi - rlo * rlo) / (2.0 * dz)
    k2 = (rhi * rhi + rlo * rlo) / 2.0
    curve = _curve_points(lambda r: (r, (r * r - k2) / k1), rlo, rhi, 0.5 * chord)
    curve[0, 1], curve[-1, 1] = -dz, dz
    pts = np.vstack([[(0.0, -dz)], curve, [(0.0, dz)]])
    return Profile((_checked(clean_loop(pts, max(rhi, dz)), "paraboloid", max(rhi, dz)),), doubly_curved=True)


def hype_profile(p: dict[str, Any], chord: float) -> Profile:
    """G4Hype: r^2 = R^2 + (tan(stereo) z)^2 for the outer and inner surfaces, |z| <= z/2."""
    h = 0.5 * p["z"]
    to, ti = math.tan(p["outst"]), math.tan(p["inst"])
    outer = _curve_points(lambda z: (math.sqrt(p["rmax"] ** 2 + (to * z) ** 2), z), -h, h, 0.5 * chord)
    if p["rmin"] > 0.0 or ti > 0.0:
        inner = _curve_points(lambda z: (math.sqrt(p["rmin"] ** 2 + (ti * z) ** 2), z), h, -h, 0.5 * chord)
    else:
        inner = np.array([(0.0, h), (0.0, -h)])
    scale = float(outer[:, 0].max()) + h
    loop = clean_loop(np.vstack([outer, inner]), scale)
    return Profile((_checked(loop, "hype", scale),), doubly_curved=True)


# --- RAT's GLG4TorusStack ------------------------------------------------------------------------------

_RAD_TOLERANCE = 1e-9  # G4GeometryTolerance radial tolerance, mm


def torusstack_profile(p: dict[str, Any], chord: float) -> Profile:
    """The region between the z axis and the stack's outline.

    Segment i runs from edge i to edge i+1 (z increasing, as GLG4TorusStack stores them). Where the
    two edges have equal rho the outline is that cylinder; otherwise it is the arc about origin i
    through both edges, on the side of the origin the edges lie (GLG4TorusStack's negative radius:
    both edges at rho < origin rho, the inner side of the torus).
    """
    edges = np.asarray(p["edges"], dtype=np.float64)     # (n+1, 2): z, rho
    origins = np.asarray(p["origins"], dtype=np.float64)  # (n, 2): z, rho
    if edges[-1, 0] < edges[0, 0]:
        edges, origins = edges[::-1].copy(), origins[::-1].copy()
    if (np.diff(edges[:, 0]) < 0).any():
        raise ProfileError("edge z values must be ordered (monotonic)")
    if (edges[:, 1] < 0).any():
        raise ProfileError("edge rho values must be >= 0")
    scale = float(np.abs(edges).max()) or 1.0
    pts: list[F64] = [np.array([[0.0, edges[0, 0]]]), edges[:1, ::-1]]
    for i in range(edges.shape[0] - 1):
        (z0, r0), (z1, r1), (zo, ro) = edges[i], edges[i + 1], origins[i]
        if z0 < zo < z1:
            raise ProfileError(f"origin {i + 1} (z={zo:g}) lies strictly between its edges "
                               f"(z={z0:g}..{z1:g}); GLG4TorusStack requires subdividing the segment")
        if r0 == r1 or z0 == z1:
            pts.append(np.array([[r1, z1]]))
            continue
        rad0, rad1 = math.hypot(z0 - zo, r0 - ro), math.hypot(z1 - zo, r1 - ro)
        inner_side = (r0 < ro + _RAD_TOLERANCE and r1 < ro + _RAD_TOLERANCE
                      and (r0 < ro - _RAD_TOLERANCE or r1 < ro - _RAD_TOLERANCE))
        t0, t1 = math.atan2(z0 - zo, r0 - ro), math.atan2(z1 - zo, r1 - ro)
        if inner_side:
            t0, t1 = t0 % TWO_PI, t1 % TWO_PI
        n = segments(max(rad0, rad1), abs(t1 - t0), chord, doubly=True)
        f = np.linspace(0.0, 1.0, n + 1)[1:]
        t = t0 + f * (t1 - t0)
        rad = rad0 + f * (rad1 - rad0)
        arc = np.column_stack([ro + rad * np.cos(t), zo + rad * np.sin(t)])
        arc[-1] = (r1, z1)
        pts.append(arc)
    pts.append(np.array([[0.0, edges[-1, 0]]]))
    loop = np.vstack(pts)
    if (loop[:, 0] < -_RAD_TOLERANCE).any():
        raise ProfileError("an arc segment reaches r < 0 (origins inconsistent with edges)")
    loop[:, 0] = np.maximum(loop[:, 0], 0.0)
    return Profile((_checked(clean_loop(loop, scale), "torusstack", scale),), doubly_curved=True)
