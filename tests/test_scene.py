"""Scenes (instanced meshes): validation, file round trip, fingerprint, and the Warp scene mode on
hand-made scenes with analytic answers (placements, mirrors, surfaces per direction, NoRINDEX)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from charon.engine.base import Photons
from charon.engine.detector import (
    Channels,
    Detector,
    Material,
    Scene,
    Surface,
    WavelengthTable,
    load_detector,
    save_detector,
)
from charon.engine.mesh import icosphere
from charon.engine.optics import SPEED_OF_LIGHT_MM_PER_NS
from charon.engine.warp_engine import WarpSimulator
from charon.errors import DetectorError
from charon.protocol.tokens import Flag

R = 500.0  # mm


def _sphere(level: int = 4) -> tuple[np.ndarray, np.ndarray]:
    v, f = icosphere(level)
    return v * R, f


def _place(rot: np.ndarray, offset: tuple[float, float, float]) -> np.ndarray:
    return np.hstack([rot, np.asarray(offset, float).reshape(3, 1)])


def _detector(transforms: list[np.ndarray], *, surf_exit: int = 0, surf_enter: int = -1,
              outer_rindex: bool = True, qe: float = 0.3) -> Detector:
    """Water spheres in vacuum (or in a medium without refractive index); leaving a sphere meets
    a photocathode (surface 0) that detects with ``qe`` and absorbs the rest."""
    v, f = _sphere()
    n = len(transforms)
    mats = {
        "vacuum": Material("vacuum", WavelengthTable.flat(1.0) if outer_rindex else None,
                           WavelengthTable.flat(math.inf), WavelengthTable.flat(math.inf)),
        "water": Material("water", WavelengthTable.flat(1.33), WavelengthTable.flat(math.inf),
                          WavelengthTable.flat(math.inf)),
    }
    surf = {"cathode": Surface("cathode", detect=WavelengthTable.flat(qe), absorb=WavelengthTable.flat(1.0 - qe),
                               model="dielectric_metal")}
    scene = Scene(v.astype(np.float32), f, np.array([0, v.shape[0]]), np.array([0, f.shape[0]]),
                  np.asarray(transforms), np.zeros(n, np.int32), np.full(n, 1), np.full(n, 0),
                  np.full(n, surf_exit), np.full(n, surf_enter), np.arange(n), np.zeros(n, np.int32),
                  volume_names=("ball",), shape_names=("ball",))
    centres = np.array([t[:, 3] for t in transforms])
    return Detector("balls", mats, surf, scene=scene,
                    channels=Channels(centres, np.zeros(n, np.int32), np.zeros((n, 3))))


def _isotropic(n: int, centre: tuple[float, float, float], seed: int = 1, event_id: int = 0) -> Photons:
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    pol = np.cross(d, rng.normal(size=(n, 3)))
    pol /= np.linalg.norm(pol, axis=1, keepdims=True)
    return Photons.from_arrays(event_id, np.tile(centre, (n, 1)), d, pol, 420.0)


def test_scene_validation_names_what_is_wrong() -> None:
    v, f = _sphere(1)
    eye = _place(np.eye(3), (0, 0, 0))[None]
    one = np.zeros(1, np.int32)
    with pytest.raises(ValueError, match="outside its shape"):
        Scene(v, f + 1, [0, v.shape[0]], [0, f.shape[0]], eye, one, one, one, one - 1, one - 1, one, one,
              volume_names=("a",), shape_names=("a",))
    with pytest.raises(ValueError, match="singular"):
        Scene(v, f, [0, v.shape[0]], [0, f.shape[0]], np.zeros((1, 3, 4)), one, one, one, one - 1, one - 1, one,
              one, volume_names=("a",), shape_names=("a",))
    with pytest.raises(ValueError, match="shape index"):
        Scene(v, f, [0, v.shape[0]], [0, f.shape[0]], eye, one + 1, one, one, one - 1, one - 1, one, one,
              volume_names=("a",), shape_names=("a",))
    det = _detector([_place(np.eye(3), (0, 0, 0))])
    with pytest.raises(DetectorError, match="needs its channels"):
        Detector("x", det.materials, det.surfaces, scene=det.scene)


def test_file_round_trip_and_fingerprint(tmp_path: Path) -> None:
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    det = _detector([_place(np.eye(3), (0, 0, 0)), _place(rot, (2000.0, 0, 0))])
    path = tmp_path / "balls.npz"
    save_detector(det, path)
    back = load_detector(path)
    assert back.fingerprint == det.fingerprint
    assert back.scene is not None
    assert back.scene.n_instances == 2
    assert back.scene.n_shapes == 1
    assert back.scene.n_placed_triangles == 2 * back.scene.n_triangles
    np.testing.assert_array_equal(back.info().x, det.info().x)
    moved = _detector([_place(np.eye(3), (0, 0, 0)), _place(rot, (2000.0, 0, 1.0))])
    assert moved.fingerprint != det.fingerprint
    assert det.scene is not None
    lo, hi = det.scene.world_bounds()
    np.testing.assert_allclose(lo[1], [2000.0 - R, -R, -R], atol=1e-3)
    np.testing.assert_allclose(hi[1], [2000.0 + R, R, R], atol=1e-3)


def test_every_photon_leaving_its_ball_meets_that_ball_s_photocathode() -> None:
    """Two balls, one rotated and one mirrored and moved: photons from each centre are detected
    with probability QE on their own ball's channel, at time R n / c."""
    mirror = np.diag([1.0, -1.0, 1.0]) @ np.array([[0.6, -0.8, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]])
    det = _detector([_place(np.eye(3), (0, 0, 0)), _place(mirror, (3000.0, -500.0, 200.0))])
    sim = WarpSimulator(det, seed=3, device="cpu", threads=1)
    assert sim.geometry == "mesh"
    n, qe = 20_000, 0.3
    for channel, centre in ((0, (0.0, 0.0, 0.0)), (1, (3000.0, -500.0, 200.0))):
        hits = sim.simulate([_isotropic(n, centre, seed=channel + 1)])[0]
        assert set(np.unique(hits.channel).tolist()) == {channel}
        assert abs(len(hits) / n - qe) < 4 * math.sqrt(qe * (1 - qe) / n)
        # the icosphere's facets lie inside the ideal sphere: at most its sagitta early
        t = R * 1.33 / SPEED_OF_LIGHT_MM_PER_NS
        assert np.all(hits.time <= t + 1e-3)
        assert np.all(hits.time >= t * (1 - 2e-3))


def test_surface_per_direction_and_no_rindex_outside() -> None:
    """A surface met only when entering: photons leaving see Fresnel (water -> vacuum) instead;
    with no refractive index outside, every photon reaching the wall dies there (NoRINDEX)."""
    entering_only = _detector([_place(np.eye(3), (0, 0, 0))], surf_exit=-1, surf_enter=0)
    st = WarpSimulator(entering_only, seed=1, device="cpu", threads=1).propagate(_isotropic(5000, (0.0, 0.0, 0.0)))
    assert not np.any(st.flags & Flag.SURFACE_DETECT)
    assert np.all(st.flags & Flag.NO_HIT)
    opaque = _detector([_place(np.eye(3), (0, 0, 0))], surf_exit=-1, outer_rindex=False)
    st = WarpSimulator(opaque, seed=1, device="cpu", threads=1).propagate(_isotropic(5000, (0.0, 0.0, 0.0)))
    assert np.all(st.flags == Flag.NO_HIT)  # killed at the boundary: no reflection, no refraction
    assert np.all(st.steps == 1)
