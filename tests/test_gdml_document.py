"""read_gdml: the data model from Geant4- and RAT-style files, placements, references, errors."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from charon.gdml import GdmlDocument, GdmlError, parse_gdml, read_gdml, strip_pointer_suffix
from charon.gdml.transforms import placement_transform, rotation_matrix
from charon.ratdb import read_pmtinfo
from tests.gdml_builders import fibonacci_points, rat_like_gdml

FIXTURES = Path(__file__).parent / "fixtures" / "gdml"
G4 = FIXTURES / "geant4_style.gdml"
MARK = "<!--HERE-->"


# --- a minimal document to put one thing into ---------------------------------------------------------

def gdml(*, define: str = "", materials: str = "", solids: str = "", structure: str = "",
         setup: str = '<setup name="Default" version="1.0"><world ref="World"/></setup>',
         world_content: str = "") -> str:
    return "\n".join([
        '<?xml version="1.0"?>', "<gdml>",
        f"<define>{define}</define>",
        "<materials>", '<material name="Air" Z="7"><D value="0.0012"/><atom value="14.0"/></material>',
        materials, "</materials>",
        "<solids>", '<box name="WorldBox" x="1000" y="1000" z="1000"/>',
        '<box name="Small" x="10" y="10" z="10"/>', solids, "</solids>",
        "<structure>",
        '<volume name="Inner"><materialref ref="Air"/><solidref ref="Small"/></volume>',
        structure,
        '<volume name="World"><materialref ref="Air"/><solidref ref="WorldBox"/>',
        world_content, "</volume>", "</structure>", setup, "</gdml>", ""])


def line_of_mark(text: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if MARK in line)


# --- the Geant4-style fixture ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def g4doc() -> GdmlDocument:
    return read_gdml(G4)


def test_world_setup_and_names(g4doc: GdmlDocument) -> None:
    assert g4doc.world == "World0x55d5c8a40900"
    assert g4doc.setups == {"Default": "World0x55d5c8a40900"}
    assert g4doc.path == str(G4)
    assert list(g4doc.materials) == ["G4_WATER", "Glass", "Vacuum"]   # stripped, as Geant4 keys them
    assert g4doc.volumes["PMTA_log0x55d5c8a400c0"].material == "Glass"
    assert strip_pointer_suffix("PMTA_log0x55d5c8a400c0") == "PMTA_log"


def test_material_property_tables(g4doc: GdmlDocument) -> None:
    water = g4doc.materials["G4_WATER"]
    assert water.density_g_cm3 == pytest.approx(1.0)
    assert (water.state, water.temperature_kelvin, water.mee_ev) == ("solid", pytest.approx(293.15), pytest.approx(78.0))
    assert [(c.kind, c.ref, c.amount) for c in water.components] == [("fraction", "H", 0.111894), ("fraction", "O", 0.888106)]
    rindex = water.properties["RINDEX"]
    np.testing.assert_array_equal(rindex.energy, [1.90745e-06, 2.4797e-06, 3.0996e-06, 4.1328e-06])  # MeV, as written
    np.testing.assert_array_equal(rindex.value, [1.3325, 1.3365, 1.3425, 1.3535])
    assert rindex.matrix == "RINDEX0x55d5c8a1e2f0"
    np.testing.assert_array_equal(water.properties["ABSLENGTH"].value, [20000, 80000, 40000, 5000])  # mm
    assert set(water.properties) == {"RINDEX", "ABSLENGTH", "RAYLEIGH", "GROUPVEL", "SCINTILLATIONYIELD"}
    const = water.properties["SCINTILLATIONYIELD"]
    assert const.energy is None
    assert const.value.tolist() == [0.0]
    assert not rindex.energy.flags.writeable
    glass = g4doc.materials["Glass"]
    assert [(c.kind, c.ref, c.amount) for c in glass.components] == [("composite", "Si", 1), ("composite", "O", 2)]
    assert g4doc.materials["Vacuum"].pressure_pascal == pytest.approx(3e-18)
    assert [c.ref for c in g4doc.elements["H"].components] == ["H1", "H2"]
    assert g4doc.isotopes["O17"].N == 17


def test_optical_surfaces_map_enum_integers(g4doc: GdmlDocument) -> None:
    pc = g4doc.optical_surfaces["Photocathode0x55d5c8a309b0"]
    assert (pc.model, pc.finish, pc.type, pc.value) == ("unified", "polished", "dielectric_metal", 1.0)
    np.testing.assert_array_equal(pc.properties["EFFICIENCY"].value, [0.01, 0.18, 0.25, 0.2])
    rough = pc.properties["SURFACEROUGHNESS"]   # Geant4's writer stores constant surface properties as <constant>
    assert (rough.energy, rough.value.tolist(), rough.matrix) == (None, [0.5], "SURFACEROUGHNESS")
    paint = g4doc.optical_surfaces["PlatePaint0x55d5c8a30a60"]
    assert (paint.model, paint.finish, paint.type, paint.value) == ("glisur", "ground", "dielectric_dielectric", 0.9)


def test_skin_and_border_surfaces(g4doc: GdmlDocument) -> None:
    (skin,) = g4doc.skin_surfaces
    assert (skin.name, skin.surface, skin.volume) == (
        "PlatePaint_skin0x55d5c8a40a60", "PlatePaint0x55d5c8a30a60", "Plate_log0x55d5c8a404e0")
    a, b = g4doc.border_surfaces
    assert (a.pv1, a.pv2, a.surface) == ("PMTA_phys0x55d5c8a40640", "PMTA_inner_phys0x55d5c8a40170",
                                         "Photocathode0x55d5c8a309b0")
    assert b.pv1 == "PMTB_phys0x55d5c8a406f0"
    assert g4doc.physvols[a.pv1].mother == "WaterSphere_log0x55d5c8a40590"
    assert g4doc.physvols[a.pv2].mother == "PMTA_log0x55d5c8a400c0"


def test_solid_params_keep_gdml_lengths(g4doc: GdmlDocument) -> None:
    s = g4doc.solids
    assert dict(s["World0x55d5c8a30010"].params) == {"x": 20000.0, "y": 20000.0, "z": 20000.0}
    tube = s["PMTA_tube0x55d5c8a30170"]
    assert (tube.kind, tube.params["z"], tube.params["deltaphi"]) == ("tube", 100.0, pytest.approx(2 * math.pi))
    cap = s["PMTA_cap0x55d5c8a30220"].params
    assert cap["deltatheta"] == pytest.approx(math.radians(56.442690238079))
    dome = s["PMTB_dome0x55d5c8a304e0"].params
    assert (dome["cut_bottom"], dome["cut_top"]) == (0.0, 80.0)
    union = s["PMTA_body0x55d5c8a302d0"].params
    assert (union["first"], union["second"]) == ("PMTA_tube0x55d5c8a30170", "PMTA_cap0x55d5c8a30220")
    np.testing.assert_allclose(union["position"], [0, 0, -16.332495807108])
    np.testing.assert_array_equal(union["rotation"], np.eye(3))
    assert s["PMTB_neck0x55d5c8a30430"].params["zplanes"] == ((-60.0, 0.0, 40.0), (0.0, 0.0, 60.0))


def test_placements_point_pmts_at_the_centre(g4doc: GdmlDocument) -> None:
    water = g4doc.volumes["WaterSphere_log0x55d5c8a40590"]
    names = [p.name for p in water.daughters]
    assert names == ["PMTA_phys0x55d5c8a40640", "PMTB_phys0x55d5c8a406f0", "Ring_phys0x55d5c8a407a0",
                     "Plate_phys0x55d5c8a40850"]   # document order
    a, b = water.daughters[0], water.daughters[1]
    # PMTA: rotation x=180 deg, at +z: its local +z (the face) must point to -z (the centre)
    np.testing.assert_allclose(a.transform @ [0, 0, 0, 1], [0, 0, 5800, 1])
    np.testing.assert_allclose(a.transform[:3, :3] @ [0, 0, 1], [0, 0, -1], atol=1e-15)
    # PMTB: y=90 deg is a passive rotation, object rotation Ry(-90): local +z -> -x
    np.testing.assert_allclose(b.transform @ [0, 0, 0, 1], [5800, 0, 0, 1])
    np.testing.assert_allclose(b.transform[:3, :3] @ [0, 0, 1], [-1, 0, 0], atol=1e-15)
    assert (a.copynumber, b.copynumber) == (0, 1)
    assert g4doc.volumes["PMTB_log0x55d5c8a402d0"].auxiliary == (("SensDet", "PMT"),)


def test_plate_orientation_by_hand(g4doc: GdmlDocument) -> None:
    plate = g4doc.volumes["WaterSphere_log0x55d5c8a40590"].daughters[3]
    # rotation (x=90, y=0, z=30) deg, passive: object rotation (Rz(30) Rx(90))^T = Rx(-90) Rz(-30)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    m = plate.transform[:3, :3]
    np.testing.assert_allclose(m @ [1, 0, 0], [c, 0, s], atol=1e-15)
    np.testing.assert_allclose(m @ [0, 1, 0], [s, 0, -c], atol=1e-15)
    np.testing.assert_allclose(m @ [0, 0, 1], [0, 1, 0], atol=1e-15)
    corners = np.array([[x, y, z, 1] for x in (-500, 500) for y in (-500, 500) for z in (-10, 10)], dtype=float)
    world = corners @ plate.transform.T
    np.testing.assert_allclose(world.min(axis=0)[:3], [-500 * (c + s), -2010, -500 * (c + s)], atol=1e-9)
    np.testing.assert_allclose(world.max(axis=0)[:3], [500 * (c + s), -1990, 500 * (c + s)], atol=1e-9)


def test_nested_world_position_by_hand() -> None:
    text = gdml(structure='<volume name="Mid"><materialref ref="Air"/><solidref ref="WorldBox"/>'
                          '<physvol name="leaf"><volumeref ref="Inner"/><position name="p1" x="10" y="0" z="0"/>'
                          "</physvol></volume>",
                world_content='<physvol name="mid"><volumeref ref="Mid"/>'
                              '<position name="p0" unit="cm" x="10" y="0" z="0"/>'
                              '<rotation name="r0" unit="deg" x="0" y="0" z="90"/></physvol>')
    doc = parse_gdml(text)
    mid = doc.volumes["World"].daughters[0]
    leaf = doc.volumes["Mid"].daughters[0]
    world = mid.transform @ leaf.transform
    # z=90 deg is passive: the object turns by -90 deg, so the leaf's +x offset goes to -y
    np.testing.assert_allclose(world @ [0, 0, 0, 1], [100, -10, 0, 1], atol=1e-12)
    np.testing.assert_allclose(world @ [0, 10, 0, 1], [110, -10, 0, 1], atol=1e-12)


def test_reflection_and_unnamed_physvol() -> None:
    doc = parse_gdml(gdml(world_content='<physvol><volumeref ref="Inner"/><position name="p" x="5" y="0" z="0"/>'
                                        '<scale name="s" x="-1" y="1" z="1"/></physvol>'))
    (pv,) = doc.volumes["World"].daughters
    assert pv.name == "Inner_PV"                  # G4GDMLRead::GeneratePhysvolName
    assert np.linalg.det(pv.transform[:3, :3]) == pytest.approx(-1.0)
    np.testing.assert_allclose(pv.transform @ [1, 2, 3, 1], [4, 2, 3, 1])


def test_rotation_conventions_differ_between_physvols_and_booleans() -> None:
    angles = (0.3, -0.7, 1.1)
    r = rotation_matrix(angles)
    np.testing.assert_allclose(r, _rz(1.1) @ _ry(-0.7) @ _rx(0.3), atol=1e-15)
    np.testing.assert_allclose(placement_transform((1, 2, 3), angles)[:3, :3], r.T, atol=1e-15)
    doc = parse_gdml(gdml(solids='<union name="U"><first ref="Small"/><second ref="Small"/>'
                                 '<rotation name="r" unit="rad" x="0.3" y="-0.7" z="1.1"/></union>'))
    np.testing.assert_allclose(doc.solids["U"].params["rotation"], r, atol=1e-15)   # not inverted


def _rx(a: float) -> np.ndarray:
    return np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])


def _ry(a: float) -> np.ndarray:
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def _rz(a: float) -> np.ndarray:
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])


# --- Fibonacci sphere and RAT-style files -----------------------------------------------------------------

def test_fibonacci_sphere_positions_and_directions() -> None:
    doc = read_gdml(FIXTURES / "fibonacci_20.gdml")
    placements = doc.volumes["water_log0x4005"].daughters
    expected = fibonacci_points(20, 5800.0)
    assert [p.copynumber for p in placements] == list(range(20))
    for p, pos in zip(placements, expected, strict=True):
        np.testing.assert_allclose(p.transform[:3, 3], pos, atol=1e-9)
        np.testing.assert_allclose(np.linalg.norm(p.transform[:3, 3]), 5800.0, rtol=1e-14)
        np.testing.assert_allclose(p.transform[:3, :3] @ [0, 0, 1], -pos / 5800.0, atol=1e-13)
        assert np.linalg.det(p.transform[:3, :3]) == pytest.approx(1.0)
    assert doc.materials["G4_AIR"].nist


def test_rat_file_agrees_with_its_pmtinfo() -> None:
    doc = read_gdml(FIXTURES / "rat_r7081_20.gdml")
    info = read_pmtinfo(FIXTURES / "rat_r7081_20_ratdb.json")
    placements = doc.volumes["tank_log0x9007"].daughters
    np.testing.assert_allclose([p.transform[:3, 3] for p in placements], info.positions, atol=1e-9)
    # RAT's PMTInfoParser rotation, written as a frame rotation: the PMT's +z is its PMTINFO direction
    np.testing.assert_allclose([p.transform[:3, 2] for p in placements], info.directions, atol=1e-13)
    body = doc.solids["r7081_body_solid0x6001"]
    assert body.kind == "torusstack"
    assert len(body.params["edges"]) == 6
    assert len(body.params["origins"]) == 5
    assert body.params["edges"][0] == (-142.0, 42.25)          # stored with z increasing
    assert [s.pv1 for s in doc.border_surfaces][-1] == "r7081_inner1_phys0xa002"
    assert doc.skin_surfaces[0].volume == "r7081_dynode_log0x9001"


def test_torusstack_inner_and_origin_check() -> None:
    ts = ('<torusstack name="T" lunit="cm"><edge z="-1" rho="2"/><origin z="-1" rho="2"/><edge z="1" rho="2"/>'
          '<inner><torusstack name="Ti"><edge z="-5" rho="10"/><origin z="-5" rho="10"/><edge z="5" rho="10"/>'
          "</torusstack></inner></torusstack>")
    doc = parse_gdml(gdml(solids=ts))
    p = doc.solids["T"].params
    assert p["edges"] == ((-10.0, 20.0), (10.0, 20.0))       # lunit applied
    assert p["inner"].kind == "torusstack"
    assert p["inner"].params["edges"] == ((-5.0, 10.0), (5.0, 10.0))
    bad = gdml(solids='<torusstack name="B"><edge z="-10" rho="5"/><origin z="0" rho="1"/>'
                      f'<edge z="10" rho="6"/></torusstack>{MARK}')
    with pytest.raises(GdmlError, match=f":{line_of_mark(bad)}: .*strictly between its edges"):
        parse_gdml(bad)


def test_loops_make_named_copies() -> None:
    text = gdml(define='<variable name="i" value="1"/>',
                solids='<loop for="i" from="1" to="3" step="1"><box name="b[i]" x="i*10" y="1" z="1"/></loop>',
                world_content='<loop for="i" from="1" to="3" step="1"><physvol name="pv[i]">'
                              '<volumeref ref="Inner"/><position name="p[i]" x="i*100" y="0" z="0"/></physvol></loop>')
    doc = parse_gdml(text)
    assert [doc.solids[f"b_{k}"].params["x"] for k in range(3)] == [10.0, 20.0, 30.0]
    assert [(p.name, p.transform[0, 3]) for p in doc.volumes["World"].daughters] == [
        ("pv_0", 100.0), ("pv_1", 200.0), ("pv_2", 300.0)]


def test_ellipsoid_cut_rules() -> None:
    doc = parse_gdml(gdml(solids='<ellipsoid name="e1" ax="1" by="1" cz="5" zcut2="0"/>'
                                 '<ellipsoid name="e2" ax="1" by="1" cz="5" zcut1="0" zcut2="3"/>'
                                 '<ellipsoid name="e3" ax="1" by="1" cz="5" zcut1="-9" zcut2="9"/>'))
    cuts = {n: (doc.solids[n].params["cut_bottom"], doc.solids[n].params["cut_top"]) for n in ("e1", "e2", "e3")}
    assert cuts == {"e1": (-5.0, 5.0),   # G4Ellipsoid: both cuts 0 (zcut1 absent is 0) means uncut
                    "e2": (0.0, 3.0), "e3": (-5.0, 5.0)}


def test_world_selection() -> None:
    text = gdml(setup='<setup name="A" version="1"><world ref="Inner"/></setup>'
                      '<setup name="Default" version="1"><world ref="World"/></setup>')
    assert parse_gdml(text).world == "World"                  # Geant4's default setup name wins
    assert parse_gdml(text.replace('name="Default"', 'name="B"')).world == "Inner"  # else the first
    doc = read_gdml(G4, world="WaterSphere_log")             # by stripped name when unique
    assert doc.world == "WaterSphere_log0x55d5c8a40590"
    with pytest.raises(GdmlError, match="world 'Nope' is not a logical volume"):
        read_gdml(G4, world="Nope")


def test_constproperty() -> None:
    doc = parse_gdml(gdml(materials='<material name="M" Z="1"><D value="1"/><atom value="1"/>'
                                    '<constproperty name="SCINTILLATIONYIELD" value="100/MeV"/></material>',
                          world_content='<physvol><volumeref ref="Inner"/></physvol>'))
    prop = doc.materials["M"].properties["SCINTILLATIONYIELD"]
    assert prop.energy is None
    assert prop.value.tolist() == [pytest.approx(100.0, rel=1e-15)]   # 1/MeV from CLHEP's unit chain


# --- errors: one line, the file, the element's line, what is allowed --------------------------------------

ERROR_CASES = [
    ("unknown solid", {"solids": f'<blob name="x"/>{MARK}'}, r"<blob name=\"x\">: unknown solid"),
    ("twisted", {"solids": f'<twistedbox name="x" PhiTwist="1" x="1" y="1" z="1"/>{MARK}'},
     "unsupported solid: twisted solids are not supported"),
    ("missing solid", {"structure": f'<volume name="V"><materialref ref="Air"/>\n<solidref ref="Nope"/>{MARK}</volume>'},
     "solid 'Nope' is not defined"),
    ("missing material", {"structure": f'<volume name="V">\n<materialref ref="Unobtainium0x1"/>{MARK}'
                                         '<solidref ref="Small"/></volume>'}, "material 'Unobtainium' is not defined"),
    ("missing matrix", {"materials": f'<material name="M" Z="1"><D value="1"/><atom value="1"/>\n'
                                      f'<property name="RINDEX" ref="nomatrix"/>{MARK}</material>'},
     "matrix 'nomatrix' is not defined"),
    ("missing physvol", {"solids": '<opticalsurface name="s" model="glisur" finish="polished" type="dielectric_metal" value="1"/>',
                             "structure": f'<bordersurface name="b" surfaceproperty="s">\n<physvolref ref="pvX"/>{MARK}'
                                       '<physvolref ref="pvY"/></bordersurface>'}, "physvol 'pvX' is not defined"),
    ("missing surface", {"structure": f'<skinsurface name="k" surfaceproperty="nosurf">{MARK}'
                                       '<volumeref ref="Inner"/></skinsurface>'}, "optical surface 'nosurf' is not defined"),
    ("bad expression", {"solids": f'<box name="b" x="10*foo" y="1" z="1"/>{MARK}'},
     r"attribute x: cannot evaluate '10\*foo': unknown name 'foo'"),
    ("attribute typo", {"solids": f'<tube name="t" rmax="1" z="1" delatphi="360" aunit="deg"/>{MARK}'},
     r"unknown attribute 'delatphi' \(allowed: aunit, deltaphi, lunit, name, rmax, rmin, startphi, z\)"),
    ("wrong unit kind", {"solids": f'<box name="b" x="1" y="1" z="1" lunit="deg"/>{MARK}'},
     'lunit="deg" is a unit of angle, not of length'),
    ("unknown unit", {"solids": f'<box name="b" x="1" y="1" z="1" lunit="furlong"/>{MARK}'},
     r'lunit="furlong" is unknown unit \(allowed: pc, km, m, cm, mm'),
    ("external file", {"world_content": f'<physvol>\n<file name="other.gdml"/>{MARK}</physvol>'},
     "external files are not supported"),
    ("replica", {"structure": f'<volume name="V"><materialref ref="Air"/><solidref ref="Small"/>\n'
                               f'<replicavol number="2"/>{MARK}</volume>'}, "replica volumes are not supported"),
    ("scale", {"world_content": f'<physvol>{MARK}<volumeref ref="Inner"/><scale name="s" x="2" y="1" z="1"/></physvol>'},
     "is not a reflection"),
    ("duplicate solid", {"solids": f'<box name="Small" x="1" y="1" z="1"/>{MARK}'},
     r"solid 'Small' is defined twice \(first at line"),
    ("tube deltaphi", {"solids": f'<tube name="t" rmax="1" z="1"/>{MARK}'}, "deltaphi must be > 0"),
    ("tube radii", {"solids": f'<tube name="t" rmin="2" rmax="1" z="1" deltaphi="1"/>{MARK}'},
     r"radii must satisfy 0 <= rmin < rmax \(got rmin=2 mm, rmax=1 mm\)"),
    ("ellipsoid cuts", {"solids": f'<ellipsoid name="e" ax="1" by="1" cz="5" zcut1="6"/>{MARK}'}, "invalid z cuts"),
    ("polycone", {"solids": f'<polycone name="p" deltaphi="1">{MARK}<zplane z="0" rmin="2" rmax="1"/>'
                             '<zplane z="1" rmin="0" rmax="1"/></polycone>'}, "zplane 1 at z=0: rmin 2 > rmax 1"),
    ("box size", {"solids": f'<box name="b" x="1" y="0" z="1"/>{MARK}'}, r"y must be > 0 \(got 0\)"),
    ("redefinition", {"define": f'<constant name="a" value="1"/>\n<constant name="a" value="2"/>{MARK}'},
     "redefinition of constant or variable 'a'"),
    ("coldim", {"define": '<matrix name="m3" coldim="3" values="1 2 3"/>',
                    "materials": f'<material name="M" Z="1"><D value="1"/><atom value="1"/>\n'
                              f'<property name="RINDEX" ref="m3"/>{MARK}</material>'}, "coldim=3"),
    ("model", {"solids": f'<opticalsurface name="s" model="7" finish="0" type="0" value="1"/>{MARK}'},
     'model="7" is not one of glisur, unified, LUT, DAVIS, dichroic'),
    ("loop", {"define": '<variable name="i" value="0"/>',
                  "solids": f'<loop for="i" from="5" to="1" step="1">{MARK}</loop>'}, "infinite loop"),
    ("unexpected child", {"solids": f'<tube name="t" rmax="1" z="1" deltaphi="1"><zplane/>{MARK}</tube>'},
     "<tube> takes no child elements"),
    ("self placement", {"structure": f'<volume name="V"><materialref ref="Air"/><solidref ref="Small"/>\n'
                                      f'<physvol><volumeref ref="V"/></physvol>{MARK}</volume>'}, "volume 'V' places itself"),
    ("tessellated", {"define": '<position name="a" x="0" y="0" z="0"/><position name="b" x="1" y="0" z="0"/>'
                                '<position name="c" x="0" y="1" z="0"/>',
                         "solids": f'<tessellated name="t">{MARK}<triangular vertex1="a" vertex2="b" vertex3="c"/>'
                                '</tessellated>'}, "needs at least 4 facets"),
]


@pytest.mark.parametrize(("case", "parts", "message"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_errors_name_file_line_and_element(case: str, parts: dict[str, str], message: str) -> None:
    text = gdml(**parts)
    with pytest.raises(GdmlError, match=message) as err:
        parse_gdml(text, "det.gdml")
    text_of_error = str(err.value)
    assert "\n" not in text_of_error
    assert text_of_error.startswith(f"det.gdml:{line_of_mark(text)}: <"), text_of_error


@pytest.mark.parametrize(("text", "message"), [
    (gdml(setup=""), r"det\.gdml:2: <gdml>: no <setup> names the world volume"),
    (gdml(setup='<setup name="Default"><world ref="Nope"/></setup>'), r'<world ref="Nope">: the world volume is not defined'),
    (gdml().replace("</gdml>", "<colours/></gdml>"), r"<colours>: unexpected element in <gdml>"),
    ("<notgdml/>", "the root element must be <gdml>"),
    ('<!DOCTYPE gdml [<!ENTITY m SYSTEM "m.xml">]><gdml>&m;</gdml>', "DOCTYPE"),
])
def test_document_level_errors(text: str, message: str) -> None:
    with pytest.raises(GdmlError, match=message):
        parse_gdml(text, "det.gdml")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(GdmlError, match="cannot read file"):
        read_gdml(tmp_path / "missing.gdml")


def test_ten_thousand_pmts_parse_in_seconds(tmp_path: Path) -> None:
    text, positions, directions = rat_like_gdml(10_000)
    path = tmp_path / "rat10k.gdml"
    path.write_text(text)
    start = time.perf_counter()
    doc = read_gdml(path)
    elapsed = time.perf_counter() - start
    placements = doc.volumes["tank_log0x9007"].daughters
    assert len(placements) == 10_000
    np.testing.assert_allclose(np.array([p.transform[:3, 3] for p in placements]), positions, atol=1e-8)
    np.testing.assert_allclose(np.array([p.transform[:3, 2] for p in placements]), directions, atol=1e-12)
    assert elapsed < 10.0, f"parsing 10k placements took {elapsed:.2f} s"


def test_assemblies_dichroic_data_userinfo_and_extension() -> None:
    text = gdml(solids='<opticalsurface name="d" model="dichroic" finish="polished" type="dielectric_dichroic" value="1">'
                       '<dichroic_data x_length="2" y_length="3"><x values="1 2"/><y values="10 20 30"/>'
                       '<data values="0.1 0.2 0.3 0.4 0.5 0.6"/></dichroic_data></opticalsurface>',
                structure='<assembly name="A"><physvol name="in_a"><volumeref ref="Inner"/>'
                          '<position name="pa" x="1" y="0" z="0"/></physvol></assembly>',
                world_content='<physvol name="a1"><volumeref ref="A"/><position name="q" x="0" y="5" z="0"/></physvol>')
    text = text.replace("</gdml>", '<userinfo><auxiliary auxtype="Property" auxvalue="x"/></userinfo>'
                                   '<extension><color name="red" R="1" G="0" B="0" A="1"/></extension></gdml>')
    doc = parse_gdml(text)
    dichroic = doc.optical_surfaces["d"].dichroic
    assert dichroic is not None
    assert dichroic.data.shape == (2, 3)
    assert dichroic.data[1, 2] == 0.6
    assert doc.assemblies["A"].daughters[0].mother == "A"
    assert doc.volumes["World"].daughters[0].volume == "A"     # a physvol may place an assembly
    assert "in_a" not in doc.physvols                          # Geant4 renames assembly copies
    assert "a1" in doc.physvols
    assert doc.userinfo == (("Property", "x"),)
