"""The detector model: reference detector, exact PMT lookup, fingerprint, file format, validation."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from charon.engine.base import DetectorInfo
from charon.engine.detector import (
    Detector,
    Material,
    PMTArray,
    Surface,
    Vessel,
    WavelengthTable,
    cylinder_detector,
    load_detector,
    reference_detector,
    save_detector,
    sphere_detector,
    water,
)
from charon.errors import DetectorError


@pytest.fixture(scope="module")
def ref() -> Detector:
    return reference_detector()


@pytest.fixture(scope="module")
def cyl() -> Detector:
    return cylinder_detector(radius=2000.0, half_height=3000.0, pmt_radius=150.0, barrel_rings=8,
                             barrel_columns=30, cap_pitch=400.0)


def test_reference_detector(ref: Detector) -> None:
    assert load_detector(None) is ref
    assert ref.vessel.shape == "sphere"
    assert ref.vessel.radius == 6000.0
    assert len(ref.pmts) == 3000
    assert ref.pmts.radius == 160.0
    assert ref.materials["water"].refractive_index(420.0) == pytest.approx(1.33)
    info = ref.info()
    assert isinstance(info, DetectorInfo)
    assert len(info) == 3000
    assert info.x.dtype == np.float32
    assert info.channel_type.dtype == np.int32
    np.testing.assert_allclose(np.linalg.norm(info.positions().astype(np.float64), axis=1), 6000.0, rtol=1e-6)
    # coverage = P * (1 - cos alpha) / 2 with sin alpha = r / R
    expected = 3000 * (1.0 - math.sqrt(1.0 - (160.0 / 6000.0) ** 2)) / 2.0
    assert ref.coverage() == pytest.approx(expected, rel=1e-12)
    assert ref.coverage() == pytest.approx(0.5334, abs=1e-4)
    assert len(ref.fingerprint) == 64
    assert ref.fingerprint == sphere_detector(name="another name").fingerprint


def _brute_force(det: Detector, points: np.ndarray) -> np.ndarray:
    """Exact membership tested against every PMT (no grid)."""
    pos, nrm, r = det.pmts.positions, det.pmts.normals, det.pmts.radius
    out = np.full(points.shape[0], -1, np.int32)
    for k in range(pos.shape[0]):
        v = points - pos[k]
        depth = v @ nrm[k]
        lateral2 = np.einsum("ij,ij->i", v, v) - depth**2
        on = (lateral2 <= r * r) & (np.abs(depth) <= r)
        assert np.all(out[on] == -1), "photocathodes overlap"
        out[on] = k
    return out


def test_lookup_is_exact_on_the_sphere(ref: Detector) -> None:
    rng = np.random.default_rng(5)
    v = rng.normal(size=(300_000, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    found = ref.lookup.find(v * 6000.0)
    # brute force by angle: a point is on cap k iff its angle to axis k is <= asin(r / R)
    axes = ref.pmts.positions / 6000.0
    cos_alpha = math.sqrt(1.0 - (160.0 / 6000.0) ** 2)
    for start in range(0, v.shape[0], 50_000):
        chunk = v[start:start + 50_000]
        best = np.argmax(chunk @ axes.T, axis=1)
        on = np.einsum("ij,ij->i", chunk, axes[best]) >= cos_alpha
        np.testing.assert_array_equal(found[start:start + 50_000], np.where(on, best, -1))
    # the fraction of the sphere covered is the coverage (4 sigma)
    frac = float((found >= 0).mean())
    c = ref.coverage()
    assert abs(frac - c) < 4 * math.sqrt(c * (1 - c) / v.shape[0])
    # the PMT centres themselves and points just inside / outside a rim
    np.testing.assert_array_equal(ref.lookup.find(ref.pmts.positions), np.arange(3000))
    alpha = math.asin(160.0 / 6000.0)
    axis = axes[17]
    t1 = np.cross(axis, [0.0, 0.0, 1.0])
    t1 /= np.linalg.norm(t1)
    rim = [6000.0 * (math.cos(a) * axis + math.sin(a) * t1) for a in (alpha - 1e-7, alpha + 1e-7)]
    np.testing.assert_array_equal(ref.lookup.find(np.array(rim)), [17, -1])


def test_lookup_is_exact_on_the_cylinder(cyl: Detector) -> None:
    rng = np.random.default_rng(6)
    n = 60_000
    r, h = 2000.0, 3000.0
    phi = rng.uniform(0, 2 * math.pi, n)
    z = rng.uniform(-h, h, n)
    barrel = np.column_stack([r * np.cos(phi), r * np.sin(phi), z])
    rho = r * np.sqrt(rng.uniform(0, 1, n))
    phi2 = rng.uniform(0, 2 * math.pi, n)
    caps = np.column_stack([rho * np.cos(phi2), rho * np.sin(phi2), np.where(rng.uniform(size=n) < 0.5, h, -h)])
    pts = np.concatenate([barrel, caps])
    found = cyl.lookup.find(pts)
    np.testing.assert_array_equal(found, _brute_force(cyl, pts))
    assert (found >= 0).mean() > 0.05
    np.testing.assert_array_equal(cyl.lookup.find(cyl.pmts.positions), np.arange(len(cyl.pmts)))
    assert set(np.unique(cyl.pmts.channel_type)) == {0, 1}


def _variants(base: Detector) -> dict[str, Detector]:
    w = base.materials["water"]
    cath = base.surfaces["photocathode"]

    def with_water(**kw: object) -> Detector:
        mats = dict(base.materials, water=dataclasses.replace(w, **kw))
        return dataclasses.replace(base, materials=mats)

    def with_cathode(**kw: object) -> Detector:
        surfs = dict(base.surfaces, photocathode=dataclasses.replace(cath, **kw))
        return dataclasses.replace(base, surfaces=surfs)

    moved = base.pmts.positions.copy()
    types = base.pmts.channel_type.copy()
    types[5] = 3
    return {
        "index": with_water(refractive_index=WavelengthTable([300.0, 600.0], [1.34, 1.33])),
        "absorption": with_water(absorption_length=WavelengthTable.flat(29_000.0)),
        "scattering": with_water(scattering_length=WavelengthTable.flat(51_000.0)),
        "reemission": with_water(reemission_prob=WavelengthTable.flat(0.1),
                                 reemission_cdf=WavelengthTable([400.0, 500.0], [0.0, 1.0])),
        "qe": with_cathode(detect=WavelengthTable.flat(0.26), absorb=WavelengthTable.flat(0.74)),
        "qe_table_range": with_cathode(detect=WavelengthTable.flat(0.25, 250.0, 800.0)),
        "wall": dataclasses.replace(base, surfaces=dict(
            base.surfaces, black=Surface("black", absorb=WavelengthTable.flat(0.9),
                                         reflect_specular=WavelengthTable.flat(0.1)))),
        "pmt_radius": dataclasses.replace(base, pmts=dataclasses.replace(base.pmts, radius=150.0)),
        "channel_type": dataclasses.replace(base, pmts=dataclasses.replace(base.pmts, channel_type=types)),
        "order": dataclasses.replace(base, pmts=dataclasses.replace(
            base.pmts, positions=moved[::-1].copy(), normals=base.pmts.normals[::-1].copy())),
        "vessel": sphere_detector(radius=6001.0),
    }


def test_fingerprint_covers_every_part_of_the_definition(ref: Detector) -> None:
    prints = {name: det.fingerprint for name, det in _variants(ref).items()}
    prints["reference"] = ref.fingerprint
    assert len(set(prints.values())) == len(prints), prints


def test_save_load_round_trip(tmp_path: Path, ref: Detector, cyl: Detector) -> None:
    for i, det in enumerate([ref, cyl, *_variants(ref).values()]):
        path = tmp_path / f"d{i}.npz"
        save_detector(det, path)
        back = load_detector(path)
        assert back.fingerprint == det.fingerprint
        assert back.name == det.name
        np.testing.assert_array_equal(back.info().positions(), det.info().positions())
        np.testing.assert_array_equal(back.info().channel_type, det.info().channel_type)


def test_mesh_enters_fingerprint_and_file(tmp_path: Path, ref: Detector) -> None:
    mesh_mod = pytest.importorskip("charon.engine.mesh")
    tri = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]], np.int32)
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    zeros = np.zeros(4, np.int32)
    mesh = mesh_mod.MeshGeometry(verts, tri, zeros, zeros + 1, zeros - 1, zeros, np.array([-1], np.int32))
    with_mesh = dataclasses.replace(ref, mesh=mesh)
    assert with_mesh.fingerprint != ref.fingerprint
    path = tmp_path / "mesh.npz"
    save_detector(with_mesh, path)
    back = load_detector(path)
    assert back.mesh is not None
    assert back.fingerprint == with_mesh.fingerprint


def _write_npz(path: Path, header: object, **arrays: np.ndarray) -> None:
    blob = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(path, header=blob, **arrays)


def test_bad_files_raise_detector_error(tmp_path: Path, ref: Detector) -> None:
    with pytest.raises(DetectorError, match="does not exist"):
        load_detector(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip file")
    with pytest.raises(DetectorError, match="not a charon detector"):
        load_detector(junk)
    no_header = tmp_path / "no_header.npz"
    np.savez(no_header, x=np.zeros(3))
    with pytest.raises(DetectorError, match="header"):
        load_detector(no_header)
    wrong = tmp_path / "wrong_version.npz"
    _write_npz(wrong, {"format": "charon-detector", "version": 99})
    with pytest.raises(DetectorError, match="version 99"):
        load_detector(wrong)
    not_json = tmp_path / "not_json.npz"
    np.savez(not_json, header=np.frombuffer(b"{nope", np.uint8))
    with pytest.raises(DetectorError, match="malformed"):
        load_detector(not_json)
    # a good file with one table removed, and with an off-wall PMT
    good = tmp_path / "good.npz"
    save_detector(ref, good)
    with np.load(good) as npz:
        arrays = {k: npz[k] for k in npz.files}
    partial = dict(arrays)
    del partial["materials/water/absorption_length/value"]
    np.savez(tmp_path / "partial.npz", **partial)
    with pytest.raises(DetectorError, match="absorption_length"):
        load_detector(tmp_path / "partial.npz")
    moved = dict(arrays)
    pos = arrays["pmts/positions"].copy()
    pos[7] *= 0.99
    moved["pmts/positions"] = pos
    np.savez(tmp_path / "moved.npz", **moved)
    with pytest.raises(DetectorError, match="PMT 7 lies"):
        load_detector(tmp_path / "moved.npz")
    nan_table = dict(arrays)
    nan_table["materials/water/refractive_index/value"] = np.array([np.nan, 1.33])
    np.savez(tmp_path / "nan.npz", **nan_table)
    with pytest.raises(DetectorError, match="refractive_index"):
        load_detector(tmp_path / "nan.npz")


def test_invalid_definitions_are_rejected(ref: Detector) -> None:
    with pytest.raises(DetectorError, match="strictly increasing"):
        WavelengthTable([500.0, 400.0], [1.0, 1.0])
    with pytest.raises(DetectorError, match="exceeds 1"):
        Surface("bad", detect=WavelengthTable.flat(0.6), absorb=WavelengthTable.flat(0.6))
    with pytest.raises(DetectorError, match="reemission_cdf"):
        Material("scint", WavelengthTable.flat(1.5), WavelengthTable.flat(1e3), WavelengthTable.flat(1e3),
                 reemission_prob=WavelengthTable.flat(0.5))
    with pytest.raises(DetectorError, match="not a defined material"):
        dataclasses.replace(ref, vessel=Vessel("sphere", 6000.0, "oil", "vacuum", "black"))
    with pytest.raises(DetectorError, match="not a defined surface"):
        dataclasses.replace(ref, pmts=dataclasses.replace(ref.pmts, surface="nothing"))
    with pytest.raises(DetectorError, match="overlap"):
        sphere_detector(pmt_radius=200.0)
    with pytest.raises(DetectorError, match="normal"):
        dataclasses.replace(ref, pmts=dataclasses.replace(ref.pmts, normals=-ref.pmts.normals))
    with pytest.raises(DetectorError, match="disk"):
        dataclasses.replace(ref, pmts=dataclasses.replace(ref.pmts, shape="disk"))
    with pytest.raises(DetectorError, match="at least one PMT"):
        PMTArray(np.zeros((0, 3)), np.zeros((0, 3)), 100.0, "photocathode", np.zeros(0, np.int32))
    with pytest.raises(DetectorError, match="half_height"):
        Vessel("cylinder", 1000.0, "water", "vacuum")
    with pytest.raises(DetectorError, match="absorption_length"):
        water(absorption_length_mm=0.0)


def test_disk_photocathodes_on_flat_end_caps(cyl: Detector) -> None:
    caps = cyl.pmts.channel_type == 1
    disks = PMTArray(cyl.pmts.positions[caps], cyl.pmts.normals[caps], 150.0, "photocathode",
                     cyl.pmts.channel_type[caps], shape="disk")
    det = dataclasses.replace(cyl, pmts=disks)
    assert det.fingerprint != dataclasses.replace(det, pmts=dataclasses.replace(disks, shape="cap")).fingerprint
    c = disks.positions[3]
    inside = c + np.array([149.0, 0.0, 0.0])
    outside = c + np.array([151.0, 0.0, 0.0])
    np.testing.assert_array_equal(det.lookup.find(np.array([inside, outside])), [3, -1])
    with pytest.raises(DetectorError, match="flat wall"):
        dataclasses.replace(cyl, pmts=dataclasses.replace(cyl.pmts, shape="disk"))
