"""tessellate: every solid closed, outward-wound, and within the chord of its analytic shape.

Tolerances come from the chord c: a mesh whose facets stay within c of the true surface differs
from the true volume by at most (curved area) * c, and its surface points are within c of the
surface (checked by sampling every facet where the surface has a closed form).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import trimesh

from charon.gdml import GdmlError, analytic_form, is_closed, is_degenerate, parse_gdml, read_gdml, tessellate
from charon.gdml.mesh import TriangleMesh
from tests.gdml_builders import R7081, rat_like_gdml, torusstack_state

FIXTURES = Path(__file__).parent / "fixtures" / "gdml"
C = 0.5  # default chord, mm


def doc_with(solids: str, define: str = ""):  # type: ignore[no-untyped-def]
    return parse_gdml(
        '<gdml><define>' + define + '</define><materials><material name="Air" Z="7"><D value="1"/><atom value="14"/>'
        '</material></materials><solids><box name="W" x="1e5" y="1e5" z="1e5"/>' + solids + '</solids>'
        '<structure><volume name="World"><materialref ref="Air"/><solidref ref="W"/></volume></structure>'
        '<setup name="Default" version="1"><world ref="World"/></setup></gdml>')


def mesh_of(xml: str, name: str, chord: float = C, define: str = "") -> TriangleMesh:
    return tessellate(doc_with(xml, define), name, chord)


def components(mesh: TriangleMesh) -> int:
    """Connected sheets (faces sharing a vertex)."""
    f = mesh.faces
    parent = np.arange(int(f.max()) + 1)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = int(parent[x])
        return x

    for a, b, c in f:
        ra, rb, rc = find(a), find(b), find(c)
        parent[rb] = ra
        parent[find(rc)] = ra
    return len({find(int(v)) for v in np.unique(f)})


def assert_good(mesh: TriangleMesh, *, genus: int = 0, pieces: int = 1) -> trimesh.Trimesh:
    assert mesh.faces.shape[0] > 0
    assert mesh.vertices.dtype == np.float64
    assert mesh.faces.dtype == np.int32
    assert is_closed(mesh), "an edge is not shared by exactly two faces in opposite directions"
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    assert tm.is_watertight
    assert tm.is_winding_consistent
    assert mesh.volume() > 0, "inside-out"
    assert tm.volume == pytest.approx(mesh.volume(), rel=1e-9)
    a, b, c = (mesh.vertices[mesh.faces[:, k]] for k in range(3))
    assert (np.linalg.norm(np.cross(b - a, c - a), axis=1) > 0).all(), "degenerate triangle"
    assert components(mesh) == pieces
    assert tm.euler_number == 2 * pieces - 2 * genus
    assert_vertex_manifold(mesh)
    return tm


def assert_vertex_manifold(mesh: TriangleMesh) -> None:
    """Around every vertex the faces form one fan (no two cones meeting at a shared vertex)."""
    ring: dict[int, dict[int, int]] = {}
    for a, b, c in mesh.faces.tolist():
        for v, x, y in ((a, b, c), (b, c, a), (c, a, b)):
            ring.setdefault(v, {})[x] = y
    for v, nxt in ring.items():
        start = next(iter(nxt))
        x, steps = start, 0
        while True:
            x = nxt[x]
            steps += 1
            if x == start:
                break
        assert steps == len(nxt), f"vertex {v} at {mesh.vertices[v]} joins {len(nxt) - steps + 1}+ fans"


def facet_samples(mesh: TriangleMesh, on_surface: np.ndarray | None = None, n: int = 4) -> np.ndarray:
    """Points on the facets (those whose three vertices are all ``on_surface``, or all): a barycentric
    grid including corners, edge points and the centroid."""
    faces = mesh.faces if on_surface is None else mesh.faces[on_surface[mesh.faces].all(axis=1)]
    phi = np.arctan2(mesh.vertices[:, 1], mesh.vertices[:, 0])[faces]
    faces = faces[np.ptp(phi, axis=1) > 1e-9]   # not the flat end caps of a partial turn
    assert len(faces) > 0
    a, b, c = (mesh.vertices[faces[:, k]] for k in range(3))
    uv = [(i / n, j / n) for i in range(n + 1) for j in range(n + 1 - i)] + [(1 / 3, 1 / 3)]
    return np.concatenate([a + u * (b - a) + v * (c - a) for u, v in uv])


def assert_volume(mesh: TriangleMesh, volume: float, curved_area: float, chord: float = C) -> None:
    bound = curved_area * chord
    assert abs(mesh.volume() - volume) <= bound, (mesh.volume(), volume, bound)


# --- solids of revolution -------------------------------------------------------------------------------------

@pytest.mark.parametrize("r", [3.0, 100.0, 6000.0])
def test_orb_within_chord_everywhere(r: float) -> None:
    mesh = mesh_of(f'<orb name="o" r="{r}"/>', "o")
    assert_good(mesh)
    d = r - np.linalg.norm(facet_samples(mesh), axis=1)
    assert d.min() >= -1e-9 * r          # inscribed: never outside
    assert d.max() <= C * (1 + 1e-9)     # and within the chord everywhere, not only on edges
    assert d.max() > 0.25 * C or r < 10  # the chord is used, not wasted
    assert_volume(mesh, 4 / 3 * math.pi * r**3, 4 * math.pi * r * r)
    assert mesh.area() <= 4 * math.pi * r * r


def test_sphere_shell_with_phi_and_theta_ranges() -> None:
    xml = ('<sphere name="s" rmin="50" rmax="100" startphi="20" deltaphi="100" starttheta="30"'
           ' deltatheta="60" aunit="deg"/>')
    mesh = mesh_of(xml, "s")
    assert_good(mesh)
    t1, t2, dphi = math.radians(30), math.radians(90), math.radians(100)
    volume = dphi / 3 * (100**3 - 50**3) * (math.cos(t1) - math.cos(t2))
    curved = dphi * (100**2 + 50**2) * (math.cos(t1) - math.cos(t2))
    assert_volume(mesh, volume, curved)
    r = np.linalg.norm(mesh.vertices, axis=1)
    assert r.min() == pytest.approx(50.0)
    assert r.max() == pytest.approx(100.0)
    phi = np.degrees(np.arctan2(mesh.vertices[:, 1], mesh.vertices[:, 0]))
    assert phi.min() == pytest.approx(20.0)
    assert phi.max() == pytest.approx(120.0)
    theta = np.degrees(np.arccos(mesh.vertices[:, 2] / r))
    assert theta.min() == pytest.approx(30.0)
    assert theta.max() == pytest.approx(90.0)
    assert np.abs(mesh.vertices[:, 2]).min() == 0.0   # the theta = 90 deg cone is exactly the z = 0 plane


@pytest.mark.parametrize(("rmin", "dphi"), [(0.0, 360.0), (30.0, 360.0), (30.0, 75.0), (0.0, 200.0)])
def test_tube(rmin: float, dphi: float) -> None:
    mesh = mesh_of(f'<tube name="t" rmin="{rmin}" rmax="80" z="50" startphi="10" deltaphi="{dphi}" aunit="deg"/>', "t")
    assert_good(mesh, genus=1 if rmin > 0 and dphi == 360.0 else 0)
    f = math.radians(dphi) / (2 * math.pi)
    assert_volume(mesh, math.pi * (80**2 - rmin**2) * 50 * f, 2 * math.pi * (80 + rmin) * 50 * f)
    v = mesh.vertices
    side = facet_samples(mesh, np.isclose(np.hypot(v[:, 0], v[:, 1]), 80.0, rtol=1e-12))
    rho = np.hypot(side[:, 0], side[:, 1])
    assert (80 - rho).max() <= C * (1 + 1e-9)
    assert (80 - rho).max() > 0.25 * C
    assert np.abs(mesh.vertices[:, 2]).max() == 25.0   # GDML z is the full length


def test_cut_tube() -> None:
    xml = ('<cutTube name="c" rmin="10" rmax="40" z="100" startphi="0" deltaphi="360" aunit="deg"'
           ' lowX="0" lowY="-0.7" lowZ="-0.71" highX="0.7" highY="0" highZ="0.71"/>')
    mesh = mesh_of(xml, "c")
    assert_good(mesh, genus=1)
    # planes through (0, 0, -+50): the tilted cuts add on one side what they remove on the other
    assert_volume(mesh, math.pi * (40**2 - 10**2) * 100, 2 * math.pi * 50 * 100 * 1.5)
    top = mesh.vertices[mesh.vertices[:, 2] > 0]
    n = np.array([0.7, 0.0, 0.71]) / np.hypot(0.7, 0.71)
    on_plane = np.abs((top - [0, 0, 50]) @ n) < 1e-9
    assert on_plane.sum() > 10


def test_cone_frustum() -> None:
    mesh = mesh_of('<cone name="k" rmin1="0" rmax1="60" rmin2="10" rmax2="20" z="80" deltaphi="360" aunit="deg"/>', "k")
    # the inner cone's apex touches the bottom face at one point: the two get their own vertex there
    assert_good(mesh)
    h = 80.0
    volume = math.pi * h / 3 * (60**2 + 60 * 20 + 20**2) - math.pi * h / 3 * (0 + 0 + 10**2)
    assert_volume(mesh, volume, math.pi * (60 + 20) * math.hypot(h, 40) + math.pi * 10 * math.hypot(h, 10))


@pytest.mark.parametrize(("rmin", "dphi", "pieces", "genus"), [
    (0.0, 360.0, 1, 1), (8.0, 360.0, 2, 2), (8.0, 120.0, 1, 1), (0.0, 120.0, 1, 0)])
def test_torus_within_chord(rmin: float, dphi: float, pieces: int, genus: int) -> None:
    mesh = mesh_of(f'<torus name="t" rmin="{rmin}" rmax="20" rtor="100" startphi="0" deltaphi="{dphi}" aunit="deg"/>', "t")
    assert_good(mesh, genus=genus, pieces=pieces)
    f = dphi / 360.0
    assert_volume(mesh, 2 * math.pi**2 * 100 * (20**2 - rmin**2) * f, 4 * math.pi**2 * 100 * (20 + rmin) * f)
    v = mesh.vertices
    on_outer = np.isclose(np.hypot(np.hypot(v[:, 0], v[:, 1]) - 100, v[:, 2]), 20.0, rtol=1e-12)
    p = facet_samples(mesh, on_outer)
    tube_r = np.hypot(np.hypot(p[:, 0], p[:, 1]) - 100, p[:, 2])
    assert (20 - tube_r).max() <= C * (1 + 1e-9)


@pytest.mark.parametrize(("cuts", "z1", "z2"), [
    ("", -80, 80), ('zcut1="0" zcut2="80"', 0, 80), ('zcut1="-30" zcut2="50"', -30, 50),
    ('zcut2="0"', -80, 80), ('zcut1="0"', -80, 80),   # G4Ellipsoid: both cuts 0 (an absent cut is 0) = uncut
    ('zcut1="-30"', -30, 0),                          # ... so a lone zcut1 also cuts the top at z = 0
])
def test_ellipsoid(cuts: str, z1: float, z2: float) -> None:
    a, b, c = 100.0, 60.0, 80.0
    mesh = mesh_of(f'<ellipsoid name="e" ax="{a}" by="{b}" cz="{c}" {cuts}/>', "e")
    assert_good(mesh)
    volume = math.pi * a * b * ((z2 - z1) - (z2**3 - z1**3) / (3 * c * c))
    assert_volume(mesh, volume, 4 * math.pi * a * a)
    v = mesh.vertices
    level = np.sqrt((v[:, 0] / a) ** 2 + (v[:, 1] / b) ** 2 + (v[:, 2] / c) ** 2)
    p = facet_samples(mesh, np.isclose(level, 1.0, rtol=1e-12))
    rho = np.sqrt((p[:, 0] / a) ** 2 + (p[:, 1] / b) ** 2 + (p[:, 2] / c) ** 2)
    along_ray = np.linalg.norm(p, axis=1) * (1 / rho - 1)   # >= the distance to the surface
    assert along_ray.max() <= C * (1 + 1e-9)
    assert mesh.vertices[:, 2].min() == z1
    assert mesh.vertices[:, 2].max() == z2


def test_eltube_and_elcone() -> None:
    mesh = mesh_of('<eltube name="e" dx="50" dy="20" dz="30"/>', "e")
    assert_good(mesh)
    assert_volume(mesh, math.pi * 50 * 20 * 60, 2 * math.pi * 50 * 60)
    mesh = mesh_of('<elcone name="k" dx="0.5" dy="0.25" zmax="100" zcut="40"/>', "k")
    assert_good(mesh)
    volume = math.pi * 0.5 * 0.25 * ((100 + 40) ** 3 - (100 - 40) ** 3) / 3
    assert_volume(mesh, volume, 2 * math.pi * 0.5 * 140 * 80 * 1.2)


def test_paraboloid_and_hype() -> None:
    mesh = mesh_of('<paraboloid name="p" rlo="10" rhi="40" dz="50"/>', "p")
    assert_good(mesh)
    assert_volume(mesh, math.pi * 50 * (10**2 + 40**2), 2 * math.pi * 40 * 100 * 1.2)
    mesh = mesh_of('<hype name="h" rmin="10" rmax="30" inst="0.3" outst="0.6" z="100"/>', "h")
    assert_good(mesh, genus=1)
    volume = math.pi * (100 * (30**2 - 10**2) + (math.tan(0.6) ** 2 - math.tan(0.3) ** 2) * 2 * 50**3 / 3)
    assert_volume(mesh, volume, 2 * math.pi * (50 + 30) * 100 * 1.3)


# --- polycones and polyhedra ---------------------------------------------------------------------------------

def _polycone_volume(planes: list[tuple[float, float, float]]) -> float:
    v = 0.0
    for (z1, n1, x1), (z2, n2, x2) in itertools.pairwise(planes):
        h = abs(z2 - z1)
        v += math.pi * h / 3 * ((x1 * x1 + x1 * x2 + x2 * x2) - (n1 * n1 + n1 * n2 + n2 * n2))
    return v


@pytest.mark.parametrize("order", [1, -1])
def test_polycone_either_z_order_is_outward(order: int) -> None:
    planes = [(-50.0, 0.0, 30.0), (0.0, 10.0, 60.0), (20.0, 10.0, 60.0), (70.0, 0.0, 5.0)][::order]
    xml = '<polycone name="p" startphi="0" deltaphi="360" aunit="deg">' + "".join(
        f'<zplane z="{z}" rmin="{n}" rmax="{x}"/>' for z, n, x in planes) + "</polycone>"
    mesh = mesh_of(xml, "p")
    assert_good(mesh, pieces=2)   # the inner cones reach the axis on the end faces: pinch points, split
    assert_volume(mesh, _polycone_volume(planes), 2 * math.pi * 60 * 120 * 1.5)


def test_generic_polycone_clockwise_is_outward() -> None:
    points = [(0, -50), (0, 50), (40, 50), (40, 10), (20, 0), (40, -10), (40, -50)]  # clockwise in (r, z)
    xml = '<genericPolycone name="g" startphi="0" deltaphi="90" aunit="deg">' + "".join(
        f'<rzpoint r="{r}" z="{z}"/>' for r, z in points) + "</genericPolycone>"
    mesh = mesh_of(xml, "g")
    assert_good(mesh)
    pts = np.array(points, dtype=float)
    r, z = pts[:, 0], pts[:, 1]
    r1, z1 = np.roll(r, -1), np.roll(z, -1)
    moment = abs(np.sum((r * z1 - r1 * z) * (r + r1))) / 6  # integral of r over the profile (Pappus)
    assert_volume(mesh, math.pi / 2 * moment, 2 * math.pi * 40 * 120 * 0.3)


@pytest.mark.parametrize(("numsides", "dphi"), [(6, 360.0), (5, 100.0), (3, 360.0), (1, 60.0)])
def test_polyhedra_is_exact(numsides: int, dphi: float) -> None:
    planes = [(-40.0, 10.0, 50.0), (40.0, 20.0, 30.0)]
    xml = (f'<polyhedra name="p" startphi="15" deltaphi="{dphi}" numsides="{numsides}" aunit="deg">'
           + "".join(f'<zplane z="{z}" rmin="{n}" rmax="{x}"/>' for z, n, x in planes) + "</polyhedra>")
    mesh = mesh_of(xml, "p")
    assert_good(mesh, genus=1 if dphi == 360.0 else 0)
    half = math.radians(dphi) / numsides / 2

    def area(r: float) -> float:  # zplane radii are distances to the flat sides: r^2 tan(half) per side
        return numsides * r * r * math.tan(half)

    volume = 0.0
    for sign, col in ((1, 2), (-1, 1)):
        a1, a2 = area(planes[0][col]), area(planes[1][col])
        volume += sign * 80 / 3 * (a1 + a2 + math.sqrt(a1 * a2))
    assert mesh.volume() == pytest.approx(volume, rel=1e-12)
    v = mesh.vertices[np.hypot(mesh.vertices[:, 0], mesh.vertices[:, 1]) > 1]
    phi = {round(float(p) % 360, 6) for p in np.degrees(np.arctan2(v[:, 1], v[:, 0]))}
    corners = {round((15 + k * dphi / numsides) % 360, 6) for k in range(numsides + (dphi < 360))}
    assert phi == corners   # the sweep samples phi exactly at Geant4's corners


def test_generic_polyhedra_corner_radii() -> None:
    xml = ('<genericPolyhedra name="g" startphi="0" deltaphi="360" numsides="4" aunit="deg">'
           '<rzpoint r="0" z="0"/><rzpoint r="10" z="0"/><rzpoint r="10" z="5"/><rzpoint r="0" z="5"/></genericPolyhedra>')
    mesh = mesh_of(xml, "g")
    assert_good(mesh)
    assert mesh.volume() == pytest.approx(2 * 10 * 10 * 5, rel=1e-12)   # a square of corner radius 10


# --- flat-faced solids --------------------------------------------------------------------------------------

def test_box_is_exact() -> None:
    mesh = mesh_of('<box name="b" x="10" y="20" z="30" lunit="cm"/>', "b")
    assert_good(mesh)
    assert mesh.volume() == pytest.approx(100 * 200 * 300, rel=1e-15)
    assert mesh.area() == pytest.approx(2 * (100 * 200 + 200 * 300 + 100 * 300), rel=1e-15)
    assert mesh.vertices.max(axis=0).tolist() == [50.0, 100.0, 150.0]


def test_trd_trap_para_arb8_tet_volumes() -> None:
    mesh = mesh_of('<trd name="t" x1="40" x2="20" y1="30" y2="10" z="50"/>', "t")
    assert_good(mesh)
    assert len(mesh.faces) == 12   # planar sides are not split into layers
    assert mesh.volume() == pytest.approx(50 / 6 * (40 * 30 + 4 * 30 * 20 + 20 * 10), rel=1e-12)
    xml = ('<trap name="p" z="60" theta="10" phi="30" y1="40" x1="30" x2="40" alpha1="5" y2="20" x3="15"'
           ' x4="20" alpha2="5" aunit="deg"/>')
    mesh = mesh_of(xml, "p")
    assert_good(mesh)
    assert len(mesh.faces) == 12
    bottom, top, mid = 40 * (30 + 40) / 2, 20 * (15 + 20) / 2, 30 * (30 + 40 + 15 + 20) / 4
    assert mesh.volume() == pytest.approx(60 / 6 * (bottom + 4 * mid + top), rel=1e-12)
    mesh = mesh_of('<para name="q" x="10" y="20" z="30" alpha="10" theta="20" phi="30" aunit="deg"/>', "q")
    assert_good(mesh)
    assert mesh.volume() == pytest.approx(10 * 20 * 30, rel=1e-12)
    flat = ('<arb8 name="a" dz="25" v1x="-10" v1y="-10" v2x="-10" v2y="10" v3x="10" v3y="10" v4x="10" v4y="-10"'
            ' v5x="-5" v5y="-5" v6x="-5" v6y="5" v7x="5" v7y="5" v8x="5" v8y="-5"/>')
    mesh = mesh_of(flat, "a")
    assert_good(mesh)
    assert mesh.volume() == pytest.approx(50 / 6 * (400 + 4 * 225 + 100), rel=1e-12)
    wedge = ('<arb8 name="w" dz="10" v1x="0" v1y="0" v2x="0" v2y="0" v3x="10" v3y="10" v4x="10" v4y="0"'
             ' v5x="0" v5y="0" v6x="0" v6y="0" v7x="10" v7y="10" v8x="10" v8y="0"/>')
    mesh = mesh_of(wedge, "w")
    assert_good(mesh)
    assert mesh.volume() == pytest.approx(50 * 20, rel=1e-12)
    define = ''.join(f'<position name="v{i}" x="{x}" y="{y}" z="{z}"/>'
                     for i, (x, y, z) in enumerate([(0, 0, 0), (10, 0, 0), (0, 20, 0), (0, 0, 30)]))
    mesh = mesh_of('<tet name="t" vertex1="v0" vertex2="v2" vertex3="v1" vertex4="v3"/>', "t", define=define)
    assert_good(mesh)
    assert mesh.volume() == pytest.approx(10 * 20 * 30 / 6, rel=1e-12)


def _quad_area(q: list[tuple[float, float]]) -> float:
    return 0.5 * abs(sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(q, q[1:] + q[:1], strict=True)))


def test_twisted_arb8_within_chord() -> None:
    bottom = [(-30.0, -30.0), (-30.0, 30.0), (30.0, 30.0), (30.0, -30.0)]
    top = [(-30.0, -20.0), (-20.0, 30.0), (30.0, 20.0), (20.0, -30.0)]   # a twisted top: non-planar sides
    xml = '<arb8 name="a" dz="50" ' + " ".join(
        f'v{i + 1}x="{x}" v{i + 1}y="{y}"' for i, (x, y) in enumerate(bottom + top)) + "/>"
    coarse, fine = mesh_of(xml, "a", chord=2.0), mesh_of(xml, "a", chord=0.05)
    assert_good(coarse)
    assert_good(fine)
    assert len(fine.faces) > len(coarse.faces)
    # the cross-section area is quadratic in z, so Simpson's rule gives the exact volume
    mid = [((a[0] + b[0]) / 2, (a[1] + b[1]) / 2) for a, b in zip(bottom, top, strict=True)]
    volume = 100 / 6 * (_quad_area(bottom) + 4 * _quad_area(mid) + _quad_area(top))
    side_area = 4 * 60 * 100
    assert abs(fine.volume() - volume) <= side_area * 0.05
    assert abs(coarse.volume() - volume) <= side_area * 2.0
    assert abs(fine.volume() - volume) < abs(coarse.volume() - volume)


def test_xtru_scaled_sections() -> None:
    xml = ('<xtru name="x"><twoDimVertex x="-10" y="-10"/><twoDimVertex x="-10" y="10"/><twoDimVertex x="0" y="0"/>'
           '<twoDimVertex x="10" y="10"/><twoDimVertex x="10" y="-10"/>'
           '<section zOrder="0" zPosition="-20" xOffset="0" yOffset="0" scalingFactor="1"/>'
           '<section zOrder="1" zPosition="20" xOffset="5" yOffset="-3" scalingFactor="0.5"/></xtru>')
    mesh = mesh_of(xml, "x")
    assert_good(mesh)
    area = 400 - 100   # the square minus the notch (0,0),(-10,10),(10,10)
    assert mesh.volume() == pytest.approx(40 * area * (1 + 0.5 + 0.25) / 3, rel=1e-12)


_CUBE = [(0, 0, 0), (10, 0, 0), (10, 10, 0), (0, 10, 0), (0, 0, 10), (10, 0, 10), (10, 10, 10), (0, 10, 10)]
_CUBE_SIDES = [(0, 1, 5), (0, 5, 4), (1, 2, 6), (1, 6, 5), (2, 3, 7), (2, 7, 6), (3, 0, 4), (3, 4, 7)]


def _cube_facets(*, inside_out: bool = False) -> str:
    """A 10 mm cube: an ABSOLUTE quadrangle below, a RELATIVE one on top, triangles around."""
    flip = (lambda f: f[::-1]) if inside_out else (lambda f: f)
    bottom = flip((0, 3, 2, 1))
    xml = '<quadrangular vertex1="p{}" vertex2="p{}" vertex3="p{}" vertex4="p{}"/>'.format(*bottom)
    top = ("d10x", "d10xy", "d10y") if not inside_out else ("d10y", "d10xy", "d10x")
    xml += f'<quadrangular vertex1="p4" vertex2="{top[0]}" vertex3="{top[1]}" vertex4="{top[2]}" type="RELATIVE"/>'
    for f in _CUBE_SIDES:
        xml += '<triangular vertex1="p{}" vertex2="p{}" vertex3="p{}"/>'.format(*flip(f))
    return xml


def test_tessellated_absolute_relative_and_reversed() -> None:
    define = "".join(f'<position name="p{i}" x="{x}" y="{y}" z="{z}"/>' for i, (x, y, z) in enumerate(_CUBE))
    define += ('<position name="d10x" x="10" y="0" z="0"/><position name="d10y" x="0" y="10" z="0"/>'
               '<position name="d10xy" x="10" y="10" z="0"/>')
    mesh = mesh_of(f'<tessellated name="t">{_cube_facets()}</tessellated>', "t", define=define)
    assert_good(mesh)
    assert mesh.volume() == pytest.approx(1000.0, rel=1e-12)
    flipped = mesh_of(f'<tessellated name="t">{_cube_facets(inside_out=True)}</tessellated>', "t", define=define)
    assert_good(flipped)                       # every facet clockwise: consistent, so turned outward
    assert flipped.volume() == pytest.approx(1000.0, rel=1e-12)
    one_wrong = _cube_facets().replace('vertex1="p0" vertex2="p1" vertex3="p5"', 'vertex1="p0" vertex2="p5" vertex3="p1"')
    with pytest.raises(GdmlError, match=r"<tessellated name=\"t\">: cannot tessellate: the facets do not form a closed"):
        mesh_of(f'<tessellated name="t">{one_wrong}</tessellated>', "t", define=define)


def test_scaled_and_reflected() -> None:
    solids = ('<orb name="o" r="10"/><scaledSolid name="s"><solidref ref="o"/><scale name="k" x="2" y="1" z="0.5"/></scaledSolid>'
              '<trd name="t" x1="40" x2="20" y1="30" y2="10" z="50"/>'
              '<reflectedSolid name="r" solid="t" sx="1" sy="-1" sz="1" rx="0" ry="0" rz="30" dx="100" dy="0" dz="0"'
              ' aunit="deg"/>')
    doc = doc_with(solids)
    scaled = tessellate(doc, "s")
    assert_good(scaled)
    assert_volume(scaled, 4 / 3 * math.pi * 10**3, 4 * math.pi * 20 * 10, C)
    reflected = tessellate(doc, "r")
    assert_good(reflected)
    assert reflected.volume() == pytest.approx(tessellate(doc, "t").volume(), rel=1e-12)
    # G4ReflectedSolid::Inside(p) = constituent.Inside(T p), T = G4Transform3D(Rz(30), d) * G4Scale3D(1, -1, 1):
    # the constituent's corner q shows up at T^-1 q = S^-1 Rz(30)^T (q - d)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    q = np.array([20.0, 15.0, -25.0]) - [100.0, 0.0, 0.0]
    expected = np.diag([1.0, -1.0, 1.0]) @ np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]]) @ q
    assert np.abs(reflected.vertices - expected).max(axis=1).min() < 1e-9


# --- booleans -------------------------------------------------------------------------------------------------

def test_boolean_rotation_is_active() -> None:
    solids = ('<box name="a" x="2" y="2" z="2"/><box name="bar" x="20" y="2" z="2"/>'
              '<union name="u"><first ref="a"/><second ref="bar"/><rotation name="r" unit="deg" x="0" y="0" z="30"/></union>')
    mesh = mesh_of(solids, "u")
    assert_good(mesh)
    ends = mesh.vertices[np.linalg.norm(mesh.vertices[:, :2], axis=1) > 9]
    assert len(ends) == 8
    # G4Transform3D(R, pos) applied to the second solid: the bar turns by +30 deg, not -30 deg
    # (checked against Geant4 11.4: G4UnionSolid::Inside is true at 8 (cos 30, sin 30, 0))
    angle = np.degrees(np.arctan2(ends[:, 1], ends[:, 0])) % 180.0
    assert np.abs(angle - 30.0).max() < math.degrees(math.atan(1 / 10)) + 1e-6


def test_boolean_first_and_second_placement() -> None:
    solids = ('<box name="a" x="10" y="10" z="10"/>'
              '<union name="u"><first ref="a"/><second ref="a"/><position name="p" x="5" y="0" z="0"/>'
              '<firstposition name="fp" x="0" y="0" z="100"/></union>'
              '<subtraction name="s"><first ref="a"/><second ref="a"/><position name="p2" x="5" y="0" z="0"/></subtraction>'
              '<intersection name="i"><first ref="a"/><second ref="a"/><position name="p3" x="5" y="5" z="0"/></intersection>')
    doc = doc_with(solids)
    u, s, i = tessellate(doc, "u"), tessellate(doc, "s"), tessellate(doc, "i")
    assert_good(u, pieces=2)        # first moved to z = 100: two separate boxes
    assert u.volume() == pytest.approx(2000.0, rel=1e-12)
    assert_good(s)
    assert s.volume() == pytest.approx(500.0, rel=1e-12)
    assert_good(i)
    assert i.volume() == pytest.approx(250.0, rel=1e-12)


def test_coplanar_union_fuses_into_one_shell() -> None:
    """A polycone whose top lies exactly on an ellipsoid's z = 0 cut: no internal faces at z = 0."""
    doc = read_gdml(FIXTURES / "geant4_style.gdml")
    mesh = tessellate(doc, "PMTB_body0x55d5c8a30590")
    assert_good(mesh)
    neck, dome = tessellate(doc, "PMTB_neck0x55d5c8a30430"), tessellate(doc, "PMTB_dome0x55d5c8a304e0")
    assert mesh.volume() == pytest.approx(neck.volume() + dome.volume(), rel=1e-12)
    a, b, c = (mesh.vertices[mesh.faces[:, k]] for k in range(3))
    at_zero = (np.abs(np.stack([a[:, 2], b[:, 2], c[:, 2]])) < 1e-12).all(axis=0)
    area0 = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)[at_zero].sum()
    assert area0 == pytest.approx(math.pi * (100**2 - 60**2), rel=0.02)   # only the exposed annulus
    normals = np.cross(b - a, c - a)[at_zero]
    assert (normals[:, 2] < 0).all()                                         # facing down, outward


@pytest.mark.parametrize("offset", [1e-13, -1e-13, 3e-11])
def test_nearly_coplanar_union_has_no_sheets(offset: float) -> None:
    solids = ('<polycone name="neck" startphi="0" deltaphi="360" aunit="deg"><zplane z="-60" rmin="0" rmax="40"/>'
              '<zplane z="0" rmin="0" rmax="60"/></polycone><ellipsoid name="dome" ax="100" by="100" cz="80" zcut1="0" zcut2="80"/>'
              f'<union name="u"><first ref="neck"/><second ref="dome"/><position name="p" x="0" y="0" z="{offset}"/></union>')
    doc = doc_with(solids)
    mesh = tessellate(doc, "u")
    assert_good(mesh)
    assert mesh.volume() == pytest.approx(tessellate(doc, "neck").volume() + tessellate(doc, "dome").volume(), rel=1e-9)


def test_rat_envelope_subtraction_with_coincident_top() -> None:
    doc = read_gdml(FIXTURES / "rat_r7081_20.gdml")
    mesh = tessellate(doc, "r7081_envelope_solid0x7005")
    assert_good(mesh)
    main = tessellate(doc, "r7081_main0x7003")
    z = mesh.vertices[:, 2]
    assert (z.min(), z.max()) == (-142.0, pytest.approx(96.7, abs=1e-9))
    assert mesh.volume() == pytest.approx(main.volume() * (96.7 + 142) / 284, rel=1e-9)


def test_multi_union_and_empty_results() -> None:
    solids = ('<box name="a" x="10" y="10" z="10"/><orb name="o" r="3"/>'
              '<multiUnion name="m"><multiUnionNode name="n1"><solid ref="a"/></multiUnionNode>'
              '<multiUnionNode name="n2"><solid ref="o"/><position name="p" x="6" y="0" z="0"/></multiUnionNode>'
              '<multiUnionNode name="n3"><solid ref="a"/><position name="q" x="0" y="0" z="40"/>'
              '<rotation name="r" unit="deg" x="0" y="0" z="45"/></multiUnionNode></multiUnion>'
              '<intersection name="none"><first ref="a"/><second ref="a"/><position name="far" x="50" y="0" z="0"/></intersection>'
              '<subtraction name="all"><first ref="a"/><second ref="a"/></subtraction>')
    doc = doc_with(solids)
    m = tessellate(doc, "m")
    assert_good(m, pieces=2)
    sphere_cap = math.pi * 1**2 * (3 * 3 - 1) / 3   # the orb's part inside the box: a cap of height 1
    assert_volume(m, 2000 + 4 / 3 * math.pi * 27 - sphere_cap, 4 * math.pi * 9)
    assert tessellate(doc, "none").is_empty
    assert is_degenerate(tessellate(doc, "none"))
    assert tessellate(doc, "all").is_empty


# --- RAT torus stacks --------------------------------------------------------------------------------------

def _profile_volume(edges: list[tuple[float, float]], origins: list[tuple[float, float]], n: int = 200_001) -> float:
    """pi * integral of rho(z)^2 from the analytic arcs, sampled densely (independent of the mesher)."""
    total = 0.0
    for (z0, r0), (z1, r1), (zo, ro) in zip(edges, edges[1:], origins, strict=False):
        if z1 == z0:
            continue
        z = np.linspace(z0, z1, n)
        if r0 == r1:
            rho = np.full_like(z, r0)
        else:
            radius = math.hypot(z0 - zo, r0 - ro)
            sign = -1.0 if (r0 < ro and r1 < ro) else 1.0
            rho = ro + sign * np.sqrt(np.maximum(radius**2 - (z - zo) ** 2, 0.0))
        total += float(np.trapezoid(math.pi * rho * rho, z))
    return total


def test_torusstack_sphere_and_cylinder() -> None:
    sphere = '<torusstack name="s"><edge z="-50" rho="0"/><origin z="0" rho="0"/><edge z="0" rho="50"/><origin z="0" rho="0"/><edge z="50" rho="0"/></torusstack>'
    mesh = mesh_of(sphere, "s")
    assert_good(mesh)
    assert_volume(mesh, 4 / 3 * math.pi * 50**3, 4 * math.pi * 50**2)
    assert (50 - np.linalg.norm(facet_samples(mesh), axis=1)).max() <= C * (1 + 1e-9)
    cylinder = '<torusstack name="c"><edge z="-20" rho="30"/><origin z="-20" rho="30"/><edge z="20" rho="30"/></torusstack>'
    mesh = mesh_of(cylinder, "c")
    assert_good(mesh)
    assert_volume(mesh, math.pi * 900 * 40, 2 * math.pi * 30 * 40)


def test_torusstack_inner_side_arc() -> None:
    """Both edges inside the origin's rho: the concave (negative radius) side, a waist."""
    xml = ('<torusstack name="w"><edge z="-30" rho="40"/><origin z="0" rho="80"/><edge z="0" rho="30"/>'
           '<origin z="0" rho="80"/><edge z="30" rho="40"/></torusstack>')
    mesh = mesh_of(xml, "w")
    assert_good(mesh)
    rho = np.hypot(mesh.vertices[:, 0], mesh.vertices[:, 1])
    assert rho[np.abs(mesh.vertices[:, 2]) < 1e-9].max() == pytest.approx(30.0)   # the waist
    volume = _profile_volume([(-30, 40), (0, 30), (30, 40)], [(0, 80), (0, 80)])
    assert volume < math.pi * 40**2 * 60                      # a waist, narrower than the end radius
    assert_volume(mesh, volume, 2 * math.pi * 40 * 70)


def test_rat_r7081_body_matches_its_arcs() -> None:
    doc = read_gdml(FIXTURES / "rat_r7081_20.gdml")
    ze, re, zo, ro = torusstack_state(R7081["z_edge"], R7081["rho_edge"], R7081["z_origin"])  # type: ignore[arg-type]
    edges, origins = list(zip(ze, re, strict=True)), list(zip(zo, ro, strict=True))
    for chord in (2.0, 0.5, 0.1):
        mesh = tessellate(doc, "r7081_body_solid0x6001", chord)
        assert_good(mesh)
        assert_volume(mesh, _profile_volume(edges, origins), 2 * math.pi * 130 * 260, chord)
    # the dome's top edge is at rho = 2 r_o (GLG4TorusStack::CheckABRho mirrors rho 0 across r_o)
    assert re[-1] == pytest.approx(2 * ro[-1])


def test_rat_pmt_parts_and_the_central_gap() -> None:
    doc = read_gdml(FIXTURES / "rat_r7081_20.gdml")
    body = tessellate(doc, "r7081_body_solid0x6001")
    for part in ("r7081_inner1_solid0x6002", "r7081_inner2_solid0x6003", "r7081_dynode_solid0x7007"):
        m = tessellate(doc, part)
        assert_good(m)
        assert not is_degenerate(m)
        assert m.volume() < body.volume()
    gap = tessellate(doc, "r7081_central_gap_solid0x7006")
    assert_good(gap)
    assert is_degenerate(gap)                      # 1 um thick: a caller leaves it out
    assert not is_degenerate(gap, min_thickness_mm=1e-4)
    text, _, _ = rat_like_gdml(2, gap_half=0.5e-7)  # older RAT: 1e-7 mm
    thin = tessellate(parse_gdml(text), "r7081_central_gap_solid0x7006")
    assert is_closed(thin)
    assert thin.volume() > 0
    assert is_degenerate(thin)


def test_torusstack_with_inner_is_a_shell() -> None:
    xml = ('<torusstack name="shell"><edge z="-50" rho="0"/><origin z="0" rho="0"/><edge z="0" rho="50"/>'
           '<origin z="0" rho="0"/><edge z="50" rho="0"/><inner><torusstack name="core"><edge z="-40" rho="0"/>'
           '<origin z="0" rho="0"/><edge z="0" rho="40"/><origin z="0" rho="0"/><edge z="40" rho="0"/></torusstack>'
           '</inner></torusstack>')
    mesh = mesh_of(xml, "shell")
    assert_good(mesh, pieces=2, genus=0)   # two nested spheres: the outer wall and the cavity's, inward
    assert_volume(mesh, 4 / 3 * math.pi * (50**3 - 40**3), 4 * math.pi * (50**2 + 40**2))


# --- the API ----------------------------------------------------------------------------------------------------

def test_cache_and_read_only_meshes() -> None:
    doc = read_gdml(FIXTURES / "geant4_style.gdml")
    a = tessellate(doc, "PMTA_body0x55d5c8a302d0")
    assert tessellate(doc, "PMTA_body0x55d5c8a302d0") is a
    assert tessellate(doc, "PMTA_body0x55d5c8a302d0", 0.1) is not a
    assert not a.vertices.flags.writeable
    assert not a.faces.flags.writeable
    with pytest.raises(ValueError, match="assignment destination is read-only"):
        a.vertices[0, 0] = 1.0


def test_finer_chord_is_closer() -> None:
    errors = []
    for chord in (4.0, 1.0, 0.25):
        mesh = mesh_of('<orb name="o" r="100"/>', "o", chord)
        errors.append(4 / 3 * math.pi * 100**3 - mesh.volume())
    assert errors[0] > errors[1] > errors[2] > 0


def test_api_errors() -> None:
    doc = read_gdml(FIXTURES / "geant4_style.gdml")
    with pytest.raises(GdmlError, match="solid 'nope' is not defined"):
        tessellate(doc, "nope")
    with pytest.raises(ValueError, match="chord_mm must be a positive number"):
        tessellate(doc, "Ring0x55d5c8a306f0", 0.0)


def test_every_fixture_solid_meshes_cleanly() -> None:
    for name in ("geant4_style.gdml", "rat_r7081_20.gdml", "fibonacci_20.gdml", "solid_zoo.gdml"):
        doc = read_gdml(FIXTURES / name)
        for solid in doc.solids:
            mesh = tessellate(doc, solid)
            assert is_closed(mesh), (name, solid)
            assert mesh.volume() > 0, (name, solid)
            assert_vertex_manifold(mesh)


def test_analytic_forms() -> None:
    doc = doc_with('<orb name="o" r="5"/><sphere name="s" rmin="1" rmax="5" deltaphi="360" deltatheta="180" aunit="deg"/>'
                   '<sphere name="cap" rmax="5" deltaphi="360" deltatheta="90" aunit="deg"/>'
                   '<ellipsoid name="e" ax="1" by="2" cz="3" zcut1="-1"/><tube name="t" rmax="4" z="10" deltaphi="360" aunit="deg"/>'
                   '<tube name="half" rmax="4" z="10" deltaphi="180" aunit="deg"/><box name="b" x="2" y="4" z="6"/>')
    assert analytic_form(doc, "o") == {"kind": "sphere", "r": 5.0, "rmin": 0.0}
    assert analytic_form(doc, "s") == {"kind": "sphere", "r": 5.0, "rmin": 1.0}
    assert analytic_form(doc, "cap") is None
    # zcut2 absent is 0, and only both cuts 0 means uncut (G4Ellipsoid): the top is cut at z = 0
    assert analytic_form(doc, "e") == {"kind": "ellipsoid", "ax": 1.0, "by": 2.0, "cz": 3.0, "zmin": -1.0, "zmax": 0.0}
    assert analytic_form(doc, "t") == {"kind": "cylinder", "rmin": 0.0, "rmax": 4.0, "half_z": 5.0}
    assert analytic_form(doc, "half") is None
    assert analytic_form(doc, "b") == {"kind": "box", "half": (1.0, 2.0, 3.0)}
    assert analytic_form(doc, "missing") is None


@pytest.mark.parametrize(("gap", "pieces"), [(0.0, 1), (1e-9, 1), (5e-8, 1), (1e-3, 2)])
def test_union_of_touching_shells_is_fused(gap: float, pieces: int) -> None:
    """Two boxes a hair apart (rounding, not design) become one shell; a real gap stays."""
    solids = ('<box name="a" x="10" y="10" z="10"/>'
              f'<union name="u"><first ref="a"/><second ref="a"/><position name="p" x="{10 + gap}" y="0" z="0"/></union>')
    mesh = mesh_of(solids, "u")
    assert_good(mesh, pieces=pieces)
    assert mesh.volume() == pytest.approx(2000.0, rel=1e-6)
    a, b, c = (mesh.vertices[mesh.faces[:, k]] for k in range(3))
    near = np.isclose(np.stack([a[:, 0], b[:, 0], c[:, 0]]), 5.0, atol=1e-6).all(axis=0)
    wall = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)[near].sum()
    if pieces == 1:
        assert wall < 1e-4   # no double wall between fused boxes (only a 2e-7 mm step around the seam)
    else:
        assert wall == pytest.approx(100.0)   # a's wall at x = 5; b's is 1 um further
