"""The GDML importer's rules, one at a time, on small hand-written files: Geant4's surface
precedence, RAT's orphaned border surfaces, PMTINFO matching and --pmt-volume, what is left out,
and the conversion of Geant4 optical properties."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from charon.engine.detector import HC_EV_NM, Detector
from charon.errors import DetectorError
from charon.importer import ImportOptions, import_gdml

E_LO, E_HI = 1.9e-6, 4.1e-6  # MeV: 653 nm and 302 nm


def _matrix(name: str, values: list[tuple[float, float]]) -> str:
    flat = " ".join(f"{e:.9g} {v:.9g}" for e, v in values)
    return f'<matrix coldim="2" name="{name}" values="{flat}"/>'


def _gdml(tmp_path: Path, body: str, *, defines: str = "", surfaces: str = "", extra_materials: str = "",
          name: str = "det.gdml") -> Path:
    text = f"""<?xml version="1.0"?>
<gdml>
  <define>
    {_matrix("RINDEX_W", [(E_LO, 1.33), (E_HI, 1.33)])}
    {_matrix("RINDEX_G", [(E_LO, 1.5), (E_HI, 1.5)])}
    {_matrix("EFF", [(E_LO, 0.25), (E_HI, 0.25)])}
    {_matrix("R0", [(E_LO, 0.0), (E_HI, 0.0)])}
    {_matrix("R9", [(E_LO, 0.9), (E_HI, 0.9)])}
    {defines}
  </define>
  <materials>
    <material name="water"><D value="1"/><fraction n="1" ref="G4_WATER"/>
      <property name="RINDEX" ref="RINDEX_W"/></material>
    <material name="glass"><D value="2.2"/><fraction n="1" ref="G4_GLASS_PLATE"/>
      <property name="RINDEX" ref="RINDEX_G"/></material>
    <material name="steel"><D value="8"/><fraction n="1" ref="G4_Fe"/></material>
    {extra_materials}
  </materials>
  <solids>
    <box name="world_s" x="20000" y="20000" z="20000" lunit="mm"/>
    <box name="tank_s" x="4000" y="4000" z="4000" lunit="mm"/>
    <orb name="ball_s" r="100" lunit="mm"/>
    <orb name="core_s" r="50" lunit="mm"/>
    <tube name="gap_s" rmax="50" z="1e-7" deltaphi="360" aunit="deg" lunit="mm"/>
    <opticalsurface name="cathode" model="glisur" finish="polished" type="dielectric_metal" value="1">
      <property name="REFLECTIVITY" ref="R0"/><property name="EFFICIENCY" ref="EFF"/></opticalsurface>
    <opticalsurface name="mirror" model="glisur" finish="polished" type="dielectric_metal" value="1">
      <property name="REFLECTIVITY" ref="R9"/></opticalsurface>
    <opticalsurface name="black" model="glisur" finish="polished" type="dielectric_metal" value="1">
      <property name="REFLECTIVITY" ref="R0"/></opticalsurface>
    {surfaces}
  </solids>
  <structure>
    {body}
  </structure>
  <setup name="Default" version="1.0"><world ref="world"/></setup>
</gdml>"""
    path = tmp_path / name
    path.write_text(text)
    return path


def _pmtinfo(tmp_path: Path, positions: list[tuple[float, float, float]], types: list[int] | None = None) -> Path:
    p = np.asarray(positions, float)
    table = {"name": "PMTINFO", "index": "", "valid_begin": [0, 0], "valid_end": [0, 0],
             "x": p[:, 0].tolist(), "y": p[:, 1].tolist(), "z": p[:, 2].tolist(),
             "type": types or [0] * len(p)}
    path = tmp_path / "pmtinfo.json"
    path.write_text(json.dumps([table]))
    return path


# A ball (glass) in a tank (water) with a core (water) inside the ball.
NESTED = """
    <volume name="core"><materialref ref="water"/><solidref ref="core_s"/></volume>
    <volume name="ball"><materialref ref="glass"/><solidref ref="ball_s"/>
      <physvol name="core_pv"><volumeref ref="core"/></physvol></volume>
    <volume name="tank"><materialref ref="water"/><solidref ref="tank_s"/>
      <physvol name="ball_pv"><volumeref ref="ball"/><position name="p0" x="300" y="0" z="0" unit="mm"/></physvol>
      <physvol name="ball_pv2"><volumeref ref="ball"/><position name="p1" x="-300" y="0" z="0" unit="mm"/></physvol>
    </volume>
    <volume name="world"><materialref ref="steel"/><solidref ref="world_s"/>
      <physvol name="tank_pv"><volumeref ref="tank"/></physvol></volume>
    {surfaces}
"""


def _import(tmp_path: Path, body: str, positions: list[tuple[float, float, float]] | None = None,
            **kw: object) -> tuple[Detector, list[str]]:
    gdml = _gdml(tmp_path, body, **kw)  # type: ignore[arg-type]
    ratdb = _pmtinfo(tmp_path, positions or [(300.0, 0.0, 0.0), (-300.0, 0.0, 0.0)])
    report = import_gdml(gdml, ImportOptions(ratdb=ratdb))
    return report.detector, report.notes


def _surfaces_of(det: Detector, volume: str) -> list[tuple[str | None, str | None]]:
    sc = det.scene
    assert sc is not None
    names = det.surface_names
    out = []
    for i in range(sc.n_instances):
        if sc.volume_names[sc.volume[i]] == volume:
            ex, en = int(sc.surf_exit[i]), int(sc.surf_enter[i])
            out.append((None if ex < 0 else names[ex], None if en < 0 else names[en]))
    return out


def test_border_surface_of_the_ordered_pair_comes_first(tmp_path: Path) -> None:
    surfaces = """<bordersurface name="b1" surfaceproperty="mirror"><physvolref ref="core_pv"/>
                  <physvolref ref="__MOTHER__"/></bordersurface>
                  <skinsurface name="s1" surfaceproperty="cathode"><volumeref ref="core"/></skinsurface>"""
    det, notes = _import(tmp_path, NESTED.format(surfaces=surfaces.replace("__MOTHER__", "ball_pv")))
    # leaving the core into ball_pv: the border surface; entering it: the core's skin. The second
    # ball is another placement of the same physvol core_pv, but its mother is ball_pv2: the pair
    # (core_pv, ball_pv2) has no border surface, so the skin applies both ways.
    assert sorted(_surfaces_of(det, "core")) == [("cathode", "cathode"), ("mirror", "cathode")]
    assert not notes or all("left out" not in n or "core" not in n for n in notes)


def test_skins_own_volume_first_then_mother_in_both_directions(tmp_path: Path) -> None:
    surfaces = """<skinsurface name="s_ball" surfaceproperty="mirror"><volumeref ref="ball"/></skinsurface>
                  <skinsurface name="s_tank" surfaceproperty="black"><volumeref ref="tank"/></skinsurface>"""
    det, _ = _import(tmp_path, NESTED.format(surfaces=surfaces))
    # Geant4: entering a daughter, the skin of the volume entered, then of the one left; leaving,
    # the skin of the volume left, then of the one entered. For the ball both start with its own.
    assert _surfaces_of(det, "ball") == [("mirror", "mirror"), ("mirror", "mirror")]
    # the core has no skin: its mother's (the ball's) applies both ways
    assert _surfaces_of(det, "core") == [("mirror", "mirror"), ("mirror", "mirror")]
    # the tank's skin lies on the tank's own boundary with the world
    assert _surfaces_of(det, "tank") == [("black", "black")]


def test_an_orphaned_border_surface_lies_between_the_other_volume_and_its_mother(tmp_path: Path) -> None:
    surfaces = """<bordersurface name="b1" surfaceproperty="cathode"><physvolref ref="core_pv"/>
                  <physvolref ref="no_such_pv"/></bordersurface>"""
    det, notes = _import(tmp_path, NESTED.format(surfaces=surfaces))
    assert _surfaces_of(det, "core") == [("cathode", None), ("cathode", None)]
    assert any("no_such_pv" in n for n in notes)


def test_pmtinfo_matches_the_shallowest_placement_and_daughters_inherit(tmp_path: Path) -> None:
    det, _ = _import(tmp_path, NESTED.format(surfaces=""), positions=[(-300.0, 0.0, 0.0), (300.0, 0.0, 0.02)])
    sc = det.scene
    assert sc is not None
    by_volume: dict[str, list[int]] = {}
    for i in range(sc.n_instances):
        by_volume.setdefault(sc.volume_names[sc.volume[i]], []).append(int(sc.channel[i]))
    # PMTINFO order is channel order: entry 0 is the ball at -300, entry 1 the one at +300.
    assert sorted(by_volume["ball"]) == [0, 1]
    assert by_volume["ball"] == by_volume["core"]
    assert by_volume["tank"] == [-1]
    np.testing.assert_allclose(det.info().positions()[1], [300.0, 0.0, 0.02], atol=1e-4)


def test_pmtinfo_entries_that_match_nothing_are_listed(tmp_path: Path) -> None:
    with pytest.raises(DetectorError, match=r"1 of 2 .* entries match no placed volume within 0.05 mm: 1 at \(300"):
        _import(tmp_path, NESTED.format(surfaces=""), positions=[(-300.0, 0.0, 0.0), (300.0, 0.0, 0.06)])
    with pytest.raises(DetectorError, match="both lie at the placement"):
        _import(tmp_path, NESTED.format(surfaces=""), positions=[(-300.0, 0.0, 0.0), (-300.0, 0.0, 0.01)])


def test_pmt_volume_pattern_gives_placement_order(tmp_path: Path) -> None:
    gdml = _gdml(tmp_path, NESTED.format(surfaces=""))
    det = import_gdml(gdml, ImportOptions(pmt_volume="^ball$")).detector
    np.testing.assert_allclose(det.info().positions(), [[300.0, 0, 0], [-300.0, 0, 0]], atol=1e-4)
    with pytest.raises(DetectorError, match=r"matches no placed logical volume .*ball, core, tank"):
        import_gdml(gdml, ImportOptions(pmt_volume="^pmt"))
    with pytest.raises(DetectorError, match="needs its PMTs"):
        import_gdml(gdml)


def test_invisible_and_zero_thickness_volumes_are_left_out(tmp_path: Path) -> None:
    body = """
    <volume name="gap"><materialref ref="water"/><solidref ref="gap_s"/></volume>
    <volume name="same"><materialref ref="water"/><solidref ref="core_s"/></volume>
    <volume name="ball"><materialref ref="glass"/><solidref ref="ball_s"/>
      <physvol name="gap_pv"><volumeref ref="gap"/></physvol></volume>
    <volume name="tank"><materialref ref="water"/><solidref ref="tank_s"/>
      <physvol name="ball_pv"><volumeref ref="ball"/><position name="p0" x="300" y="0" z="0" unit="mm"/></physvol>
      <physvol name="same_pv"><volumeref ref="same"/><position name="p1" x="-300" y="0" z="0" unit="mm"/></physvol>
    </volume>
    <volume name="world"><materialref ref="steel"/><solidref ref="world_s"/>
      <physvol name="tank_pv"><volumeref ref="tank"/></physvol></volume>"""
    det, notes = _import(tmp_path, body)
    assert det.scene is not None
    assert sorted(set(det.scene.volume_names)) == ["ball", "tank"]
    assert any("gap_s" in n and "no volume" in n for n in notes)
    assert any("mother's material" in n for n in notes)
    assert any("channel(s) have no traced volume" in n for n in notes)  # the water ball at -300
    # A skin that acts between equal materials keeps the volume.
    skinned = body + '<skinsurface name="s" surfaceproperty="black"><volumeref ref="same"/></skinsurface>'
    det, _ = _import(tmp_path, skinned)
    assert det.scene is not None
    assert "same" in det.scene.volume_names


def test_geant4_optics_are_converted(tmp_path: Path) -> None:
    defines = "\n".join([
        _matrix("ABS", [(E_LO, 10000.0), (E_HI, 1000.0)]),
        _matrix("WLSABS", [(E_LO, 1e9), (E_HI, 10.0)]),
        _matrix("WLSCOMP", [(2.0e-6, 0.0), (2.5e-6, 1.0), (3.0e-6, 0.0)]),
        _matrix("RINDEX_D", [(E_LO, 1.30), (E_HI, 1.40)]),
        _matrix("TRANS", [(E_LO, 0.2), (E_HI, 0.2)]),
        '<constant name="TAU" value="3"/>',
    ])
    extra = """<material name="shifter"><D value="1"/><fraction n="1" ref="G4_WATER"/>
      <property name="RINDEX" ref="RINDEX_D"/><property name="ABSLENGTH" ref="ABS"/>
      <property name="WLSABSLENGTH" ref="WLSABS"/><property name="WLSCOMPONENT" ref="WLSCOMP"/>
      <constproperty name="WLSTIMECONSTANT" value="3"/></material>"""
    surfaces = """<opticalsurface name="half" model="unified" finish="polished" type="dielectric_dielectric" value="0">
      <property name="REFLECTIVITY" ref="R9"/><property name="TRANSMITTANCE" ref="TRANS"/></opticalsurface>"""
    body = """
    <volume name="ball"><materialref ref="shifter"/><solidref ref="ball_s"/></volume>
    <volume name="tank"><materialref ref="water"/><solidref ref="tank_s"/>
      <physvol name="ball_pv"><volumeref ref="ball"/><position name="p0" x="300" y="0" z="0" unit="mm"/></physvol>
      <physvol name="ball_pv2"><volumeref ref="ball"/><position name="p1" x="-300" y="0" z="0" unit="mm"/></physvol>
    </volume>
    <volume name="world"><materialref ref="steel"/><solidref ref="world_s"/>
      <physvol name="tank_pv"><volumeref ref="tank"/></physvol></volume>
    <skinsurface name="s" surfaceproperty="half"><volumeref ref="ball"/></skinsurface>"""
    det, _ = _import(tmp_path, body, defines=defines, extra_materials=extra, surfaces=surfaces)
    steel, shifter = det.materials["steel"], det.materials["shifter"]
    assert steel.opaque  # no RINDEX: photons die at its boundaries
    assert shifter.reemission_profile == "delta"
    assert shifter.reemission_redshift
    assert shifter.reemission_time_ns == 3.0
    short = HC_EV_NM / (E_HI * 1e6)  # shortest wavelength, where WLS dominates
    # attenuation: 1 / (1/1000 + 1/10) mm; re-emission probability (1/10) / (1/1000 + 1/10)
    assert shifter.absorption_length(short) == pytest.approx(1.0 / (1e-3 + 0.1), rel=1e-6)
    assert shifter.reemission_prob(short) == pytest.approx(0.1 / (1e-3 + 0.1), rel=1e-6)
    assert shifter.reemission_cdf is not None
    peak = HC_EV_NM / 2.5
    assert shifter.reemission_cdf(peak) == pytest.approx(0.5, abs=0.02)
    # group velocity from a dispersive RINDEX, as Geant4's CalculateGROUPVEL (2 points: the slope
    # dn / d ln E at both ends): c / (n + 0.1 / ln(E_HI / E_LO))
    slope = 0.1 / math.log(E_HI / E_LO)
    assert shifter.effective_group_velocity(short) == pytest.approx(299.792458 / (1.40 + slope), rel=1e-6)
    half = det.surfaces["half"]
    assert half.model == "dielectric_dielectric"
    # Geant4 draws u: u < R goes on to Fresnel, R <= u < R + T passes straight on, the rest is
    # absorbed; so with R = 0.9 and T = 0.2 a photon passes with 0.1 and is never absorbed.
    assert half.transmit(420.0) == pytest.approx(0.1)
    assert half.absorb(420.0) == pytest.approx(0.0)


def test_unsupported_surface_types_are_errors(tmp_path: Path) -> None:
    surfaces = """<opticalsurface name="lut" model="LUT" finish="polishedlumirrorair" type="dielectric_LUT" value="0"/>"""
    body = NESTED.format(surfaces='<skinsurface name="s" surfaceproperty="lut"><volumeref ref="ball"/></skinsurface>')
    with pytest.raises(DetectorError, match=r"lut.*not supported"):
        _import(tmp_path, body, surfaces=surfaces)


def test_analytic_shapes_trace_like_their_meshes(tmp_path: Path) -> None:
    """Each analytic kind (cut ellipsoid, spherical shell, hollow tube, box) as a detecting volume:
    the exact surfaces and their 0.5 mm meshes detect the same photons on the same channels, and
    the import marks exactly these solids analytic."""
    from charon.engine.base import Photons
    from charon.engine.warp_engine import WarpSimulator

    solids = """
    <ellipsoid name="ell_s" ax="150" by="100" cz="200" zcut1="-120" zcut2="150" lunit="mm"/>
    <sphere name="shell_s" rmin="80" rmax="160" deltaphi="360" deltatheta="180" aunit="deg" lunit="mm"/>
    <tube name="pipe_s" rmin="60" rmax="140" z="300" deltaphi="360" aunit="deg" lunit="mm"/>
    <box name="brick_s" x="200" y="260" z="320" lunit="mm"/>"""
    parts = [("ell", (450.0, 0.0, 0.0)), ("shell", (-450.0, 0.0, 0.0)), ("pipe", (0.0, 450.0, 0.0)),
             ("brick", (0.0, -450.0, 0.0))]
    volumes = "".join(f'<volume name="{n}"><materialref ref="glass"/><solidref ref="{n}_s"/></volume>'
                      f'<skinsurface name="k_{n}" surfaceproperty="cathode"><volumeref ref="{n}"/></skinsurface>'
                      for n, _ in parts)
    places = "".join(f'<physvol name="{n}_pv"><volumeref ref="{n}"/><position name="p_{n}" x="{x}" y="{y}" '
                     f'z="{z}" unit="mm"/><rotation name="r_{n}" x="20" y="-35" z="50" unit="deg"/></physvol>'
                     for n, (x, y, z) in parts)
    body = f"""{volumes}
    <volume name="tank"><materialref ref="water"/><solidref ref="tank_s"/>{places}</volume>
    <volume name="world"><materialref ref="steel"/><solidref ref="world_s"/>
      <physvol name="tank_pv"><volumeref ref="tank"/></physvol></volume>"""
    gdml = _gdml(tmp_path, body, surfaces=solids)
    report = import_gdml(gdml, ImportOptions(ratdb=_pmtinfo(tmp_path, [c for _, c in parts])))
    scene = report.detector.scene
    assert scene is not None
    assert scene.shape_kind is not None
    kinds = dict(zip(scene.shape_names, scene.shape_kind.tolist(), strict=True))
    assert kinds == {"ell_s": 1, "shell_s": 2, "pipe_s": 3, "brick_s": 4, "tank_s": 4}
    rng = np.random.default_rng(3)
    n = 200_000
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    pol = np.cross(d, rng.normal(size=(n, 3)))
    ph = Photons.from_arrays(0, rng.uniform(-100.0, 100.0, size=(n, 3)), d, pol, 420.0)
    exact = WarpSimulator(report.detector, seed=2, device="cpu", threads=1).simulate([ph])[0]
    meshed = WarpSimulator(report.detector, seed=2, device="cpu", threads=1, analytic_shapes=False).simulate([ph])[0]
    ce, cm = (np.bincount(np.asarray(h.channel, np.int64), minlength=4) for h in (exact, meshed))
    assert ce.min() > 1000, ce
    # The same photons, the same streams: only the chord error (<= 0.5 mm on ~100 mm solids) differs.
    np.testing.assert_allclose(ce, cm, rtol=0.03)
