"""Mesh geometry: tessellations are closed and outward, caps have the ideal area, STL in and out."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from charon.engine import mesh as m
from charon.engine.detector import reference_detector
from charon.engine.mesh import MeshError, MeshGeometry


def edges_shared_twice(tri: np.ndarray) -> bool:
    e = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    directed = {tuple(x) for x in e.tolist()}
    # closed and consistently wound: every directed edge appears once and its reverse exists
    return len(directed) == len(e) and all((b, a) in directed for a, b in directed)


def signed_volume(v: np.ndarray, tri: np.ndarray) -> float:
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def solid_angle_from_origin(v: np.ndarray, tri: np.ndarray) -> float:
    """Van Oosterom-Strackee solid angle of triangles seen from the origin."""
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
    num = np.abs(np.einsum("ij,ij->i", a, np.cross(b, c)))
    den = (la * lb * lc + np.einsum("ij,ij->i", a, b) * lc + np.einsum("ij,ij->i", a, c) * lb
           + np.einsum("ij,ij->i", b, c) * la)
    return float((2.0 * np.arctan2(num, den)).sum())


@pytest.mark.parametrize(("level", "deficit"), [(0, 0.4), (1, 0.15), (3, 0.01), (5, 0.001)])
def test_icosphere_is_closed_and_outward(level: int, deficit: float) -> None:
    v, f = m.icosphere(level)
    assert f.shape == (20 * 4**level, 3)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0)
    assert edges_shared_twice(f)
    assert signed_volume(v, f) > 0
    # inscribed polyhedron: a little less than the ball, converging with the level
    assert (1 - deficit) * 4 / 3 * math.pi < signed_volume(v, f) < 4 / 3 * math.pi


def test_sphere_wall_circumscribes() -> None:
    v, f = m.sphere_wall(6000.0, 4)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    n = np.cross(b - a, c - a)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    dist = np.einsum("ij,ij->i", n, a)
    assert dist.min() >= 6000.0
    assert dist.max() < 6000.0 * 1.01


def test_cylinder_wall_is_closed() -> None:
    v, f = m.cylinder_wall(1000.0, 2000.0, segments=64)
    assert edges_shared_twice(f)
    vol = signed_volume(v, f)
    assert vol == pytest.approx(math.pi * 1000.0**2 * 4000.0, rel=0.01)


def test_caps_have_the_ideal_solid_angle() -> None:
    radius, r = 6000.0, 160.0
    centres = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -0.6, 0.8]]) * radius
    v, f, owner = m.sphere_caps(radius, centres, r, segments=12)
    assert np.array_equal(np.bincount(owner), [12, 12, 12])
    omega = solid_angle_from_origin(v, f) / 3
    ideal = 2 * math.pi * (1 - math.sqrt(1 - (r / radius) ** 2))
    assert omega == pytest.approx(ideal, rel=2e-3)
    # triangles face outward (away from the centre)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    assert np.all(np.einsum("ij,ij->i", np.cross(b - a, c - a), a) > 0)


def test_reference_mesh_solids_and_channels() -> None:
    from charon.engine.warp_engine import mesh_from_detector

    det = reference_detector()
    geo = mesh_from_detector(det)
    assert geo.n_channels == det.n_channels
    ch = geo.triangle_channel()
    assert np.array_equal(np.unique(ch[ch >= 0]), np.arange(det.n_channels))
    wall = ch < 0
    black = det.surface_index("black")
    assert np.all(geo.surface[wall] == black)
    assert np.all(geo.surface[~wall] == det.surface_index("photocathode"))
    assert np.all(geo.mat_inner == det.material_index("water"))
    assert np.all(geo.mat_outer[wall] == det.material_index("vacuum"))
    header, arrays = geo.to_canonical()
    assert header["n_triangles"] == geo.n_triangles
    assert MeshGeometry.from_arrays(arrays).to_canonical()[0] == header


def test_cylinder_mesh_places_barrel_and_end_pmts() -> None:
    centres = np.array([[0.0, 0.0, 2000.0], [0.0, 0.0, -2000.0], [1000.0, 0.0, 0.0], [0.0, 1000.0, 500.0]])
    geo = m.cylinder_vessel_mesh(1000.0, 2000.0, centres, 100.0, inner=0, outer=1, wall_surface=-1,
                                 pmt_surface=0)
    assert geo.n_channels == 4
    for k, c in enumerate(centres):
        tri = geo.triangles[geo.triangle_channel() == k]
        pts = geo.vertices[np.unique(tri)]
        assert np.linalg.norm(pts.mean(0) - c) < 5.0
        # barrel patches stay on the barrel, end disks on their plane
        if abs(c[2]) == 2000.0:
            assert np.allclose(pts[:, 2], c[2])
        else:
            assert np.allclose(np.hypot(pts[:, 0], pts[:, 1]), 1000.0, rtol=1e-5)


@pytest.mark.parametrize("ascii", [False, True])
def test_stl_round_trip(tmp_path: Path, ascii: bool) -> None:
    v, f = m.icosphere(2)
    path = tmp_path / "ball.stl"
    m.write_stl(path, v * 100.0, f, ascii=ascii)
    rv, rf = m.read_stl(path)
    assert rv.shape == v.shape
    assert rf.shape == f.shape
    assert edges_shared_twice(rf)
    assert signed_volume(rv.astype(float), rf) == pytest.approx(signed_volume(v * 100.0, f), rel=1e-5)
    solid = m.stl_solid(path, inner=1, outer=0, solid=0, scale=10.0)
    assert solid.n_triangles == f.shape[0]
    assert np.allclose(np.linalg.norm(solid.vertices, axis=1), 1000.0, rtol=1e-5)


def test_bad_stl_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "bad.stl"
    p.write_bytes(b"\x00" * 90)
    with pytest.raises(MeshError, match="neither binary STL"):
        m.read_stl(p)
    p.write_text("solid x\nfacet normal 0 0 1\nouter loop\nvertex 0 0\nendloop\nendfacet\nendsolid\n")
    with pytest.raises(MeshError, match="vertex' needs 3 numbers"):
        m.read_stl(p)
    p.write_text("solid x\nendsolid\n")
    with pytest.raises(MeshError, match="no facets"):
        m.read_stl(p)


def test_mesh_geometry_validates() -> None:
    v = np.zeros((3, 3), np.float32)
    t = np.array([[0, 1, 2]])
    one = np.zeros(1, np.int32)
    with pytest.raises(MeshError, match="out of range"):
        MeshGeometry(v, np.array([[0, 1, 3]]), one, one, one - 1, one, np.array([-1]))
    with pytest.raises(MeshError, match="one entry per triangle"):
        MeshGeometry(v, t, np.zeros(2, np.int32), one, one - 1, one, np.array([-1]))
    with pytest.raises(MeshError, match="solid index"):
        MeshGeometry(v, t, one, one, one - 1, one + 1, np.array([-1]))
    with pytest.raises(MeshError, match="NaN"):
        MeshGeometry(np.full((3, 3), np.nan), t, one, one, one - 1, one, np.array([-1]))
    geo = MeshGeometry(v, t, one, one + 2, one - 1, one, np.array([-1]))
    with pytest.raises(MeshError, match="material 2"):
        geo.check_indices(2, 1)
