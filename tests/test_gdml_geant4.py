"""charon's GDML reader and meshes against Geant4's own reader, on the same files (optional).

Runs only where geant4_pybind is installed (the ``bench`` extra); Geant4 runs in a child process
(tests/geant4_oracle.py). For every solid of tests/fixtures/gdml/solid_zoo.gdml, random points
that Geant4 classifies as inside or outside by more than twice the chord must be classified the
same by charon's mesh (winding number), and the mesh volume must match GetCubicVolume; every
placement must have Geant4's object rotation and translation; property tables and surfaces of
the Geant4-style fixture must be what Geant4 builds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from charon.gdml import read_gdml, strip_pointer_suffix, tessellate
from charon.gdml.mesh import TriangleMesh

pytestmark = pytest.mark.skipif(importlib.util.find_spec("geant4_pybind") is None,
                                reason="geant4_pybind not installed: optional cross-check with Geant4's GDML reader")

FIXTURES = Path(__file__).parent / "fixtures" / "gdml"
ORACLE = Path(__file__).parent / "geant4_oracle.py"
CHORD = 0.2


def oracle(tmp_path: Path, gdml: Path, points: dict[str, list[list[float]]],
           materials: dict[str, list[str]] | None = None) -> dict[str, Any]:
    data = tmp_path / "g4data"
    (data / "G4ENSDFSTATE3.0").mkdir(parents=True, exist_ok=True)
    (data / "G4ENSDFSTATE3.0" / "ENSDFSTATE.dat").touch()
    request, response = tmp_path / "request.json", tmp_path / "response.json"
    request.write_text(json.dumps({"gdml": str(gdml), "points": points, "materials": materials or {}}))
    env = dict(os.environ, GEANT4_DATA_DIR=str(data), HOME=str(tmp_path))
    proc = subprocess.run([sys.executable, str(ORACLE), str(request), str(response)], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result: dict[str, Any] = json.loads(response.read_text())
    return result


def winding_inside(mesh: TriangleMesh, points: np.ndarray) -> np.ndarray:
    """Generalized winding number > 1/2 (Van Oosterom-Strackee solid angles)."""
    tri = mesh.vertices[mesh.faces]
    total = np.zeros(len(points))
    for start in range(0, len(points), 64):
        p = points[start:start + 64, None, None, :]
        a, b, c = (tri[None, :, k, :] - p[:, :, 0, :] for k in range(3))
        la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
        det = np.einsum("ijk,ijk->ij", a, np.cross(b, c))
        den = (la * lb * lc + np.einsum("ijk,ijk->ij", a, b) * lc + np.einsum("ijk,ijk->ij", a, c) * lb
               + np.einsum("ijk,ijk->ij", b, c) * la)
        total[start:start + 64] = (2 * np.arctan2(det, den)).sum(axis=1) / (4 * np.pi)
    return total > 0.5


def test_zoo_solids_agree_with_geant4(tmp_path: Path) -> None:
    path = FIXTURES / "solid_zoo.gdml"
    doc = read_gdml(path)
    rng = np.random.default_rng(7)
    meshes, points = {}, {}
    for name in doc.solids:
        if name == "world":
            continue
        mesh = tessellate(doc, name, CHORD)
        lo, hi = mesh.bounds()
        pad = 0.15 * (hi - lo)
        meshes[name] = mesh
        points[name] = rng.uniform(lo - pad, hi + pad, size=(300, 3)).tolist()
    result = oracle(tmp_path, path, points)["solids"]
    problems = []
    for name, mesh in meshes.items():
        g4 = result[name]
        pts = np.array(points[name])
        sure = (np.array(g4["safety"]) > 2 * CHORD) & (np.array(g4["inside"]) != 1)
        ours = winding_inside(mesh, pts[sure])
        theirs = np.array(g4["inside"])[sure] == 2
        if (ours != theirs).any():
            problems.append(f"{name}: {(ours != theirs).sum()} of {sure.sum()} points classified differently")
        if theirs.sum() < 5 or (~theirs).sum() < 5:
            problems.append(f"{name}: too few points on one side ({theirs.sum()} inside)")
        bound = mesh.area() * CHORD + 0.002 * g4["volume"]   # chord, plus Geant4's MC estimate for some
        if abs(mesh.volume() - g4["volume"]) > bound:
            problems.append(f"{name}: volume {mesh.volume():.1f} vs Geant4 {g4['volume']:.1f} (bound {bound:.1f})")
    assert not problems, "; ".join(problems)


def test_zoo_placements_agree_with_geant4(tmp_path: Path) -> None:
    path = FIXTURES / "solid_zoo.gdml"
    doc = read_gdml(path)
    g4 = {p["name"]: p for p in oracle(tmp_path, path, {})["physvols"]}
    placements = doc.volumes[doc.world].daughters
    assert len(placements) == len(g4) == 29
    for p in placements:
        theirs = g4[p.name]
        rotation = p.transform[:3, :3]
        if np.linalg.det(rotation) < 0:
            # G4ReflectionFactory places a reflected copy of the volume (scale (1, 1, -1)) with the
            # proper rotation that remains
            assert theirs["volume"].endswith("_refl"), theirs
            rotation = rotation @ np.diag([1.0, 1.0, -1.0])
        np.testing.assert_allclose(p.transform[:3, 3], theirs["translation"], atol=1e-9, err_msg=p.name)
        np.testing.assert_allclose(rotation, theirs["rotation"], atol=1e-12, err_msg=p.name)
        assert p.copynumber == theirs["copynumber"]


def test_geant4_style_file_agrees_with_geant4(tmp_path: Path) -> None:
    # Geant4 11.4's reader cannot read a surface property whose ref is a <constant>, although its
    # writer writes them so; charon reads both, Geant4 gets the file without that line
    text = (FIXTURES / "geant4_style.gdml").read_text()
    path = tmp_path / "g4.gdml"
    path.write_text("\n".join(line for line in text.splitlines() if 'ref="SURFACEROUGHNESS"' not in line))
    doc = read_gdml(path)
    result = oracle(tmp_path, path, {}, {"G4_WATER": ["RINDEX", "ABSLENGTH", "GROUPVEL"], "Glass": ["RINDEX"]})
    for material, props in result["materials"].items():
        for prop, table in props.items():
            ours = doc.materials[material].properties[prop]
            assert ours.energy is not None
            np.testing.assert_array_equal(np.column_stack([ours.energy, ours.value]), table)
    g4 = {p["name"]: p for p in result["physvols"]}
    for volume in doc.volumes.values():
        for p in volume.daughters:
            theirs = g4[strip_pointer_suffix(p.name)]
            assert theirs["mother"] == strip_pointer_suffix(p.mother)
            np.testing.assert_allclose(p.transform[:3, 3], theirs["translation"], atol=1e-9)
            np.testing.assert_allclose(p.transform[:3, :3], theirs["rotation"], atol=1e-12)
    ours_borders = sorted([strip_pointer_suffix(b.name), strip_pointer_suffix(b.pv1), strip_pointer_suffix(b.pv2),
                           strip_pointer_suffix(b.surface)] for b in doc.border_surfaces)
    theirs_borders = sorted([strip_pointer_suffix(x) for x in b] for b in result["borders"])
    assert ours_borders == theirs_borders
    assert [[strip_pointer_suffix(s.name), strip_pointer_suffix(s.volume)] for s in doc.skin_surfaces] == \
        [[strip_pointer_suffix(x) for x in s[:2]] for s in result["skins"]]


def test_file_written_by_geant4(tmp_path: Path) -> None:
    path = tmp_path / "written.gdml"
    data = tmp_path / "g4data"
    (data / "G4ENSDFSTATE3.0").mkdir(parents=True, exist_ok=True)
    (data / "G4ENSDFSTATE3.0" / "ENSDFSTATE.dat").touch()
    request, response = tmp_path / "w.json", tmp_path / "wr.json"
    request.write_text(json.dumps({"write": str(path)}))
    env = dict(os.environ, GEANT4_DATA_DIR=str(data), HOME=str(tmp_path))
    proc = subprocess.run([sys.executable, str(ORACLE), str(request), str(response)], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    truth = json.loads(response.read_text())
    doc = read_gdml(path)
    by_stripped = {strip_pointer_suffix(n): n for n in doc.solids}
    for name, t in truth["solids"].items():
        mesh = tessellate(doc, by_stripped[name], CHORD)
        ours = winding_inside(mesh, np.array(t["points"]))
        assert (ours == np.array(t["inside"])).all(), name
        assert 10 < sum(t["inside"]) < len(t["inside"]) - 10
    placements = {strip_pointer_suffix(p.name): p for v in doc.volumes.values() for p in v.daughters}
    for t in truth["physvols"]:
        ours = placements[t["name"]]
        np.testing.assert_allclose(ours.transform[:3, 3], t["translation"], atol=1e-9)
        np.testing.assert_allclose(ours.transform[:3, :3], t["rotation"], atol=1e-12)
    water = doc.materials["G4_WATER"]
    assert water.properties["RINDEX"].energy.tolist() == pytest.approx([2e-6, 3e-6, 4e-6])  # type: ignore[union-attr]
    assert water.properties["ABSLENGTH"].value.tolist() == [10000.0, 20000.0, 5000.0]       # mm
    (surface,) = doc.optical_surfaces.values()
    assert (surface.model, surface.finish, surface.type, surface.value) == ("unified", "ground", "dielectric_metal", 0.2)
    (border,) = doc.border_surfaces
    assert (strip_pointer_suffix(border.pv1), strip_pointer_suffix(border.pv2)) == ("u_passive_pv", "tank_pv")
    assert [strip_pointer_suffix(s.volume) for s in doc.skin_surfaces] == ["s_active_lv"]
