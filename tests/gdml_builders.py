"""GDML (and RATDB) text for the GDML tests: PMTs on a Fibonacci sphere, RAT-style toroidal PMTs.

The RAT-style file copies what ratpac-two writes for a ``construction: "toroidal"`` PMT: an
envelope (tube minus tube) placed per PMT in water, holding a glass ``<torusstack>`` body with
vacuum ``inner1``/``inner2`` torus stacks, a central gap tube and a dynode tube; the photocathode,
mirror and gap border surfaces and the dynode skin. Torus-stack numbers go through the same steps
as ``GLG4TorusStack::SetAllParameters`` (edges put in increasing z, swept radius r_o computed,
CheckABRho), then are written as RAT's ``GDMLWriteStructure`` writes them, with Geant4's 15
significant digits. PMT rotations are RAT's (``PMTInfoParser::GetPMTRotation``), written as the
GDML writer writes a frame rotation (``G4GDMLWriteDefine::GetAngles``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

# ratdb/PMT.ratdb, index r7081
R7081 = {
    "z_edge": [96.7, 40.0, 0.0, -40.0, -90.0, -142.0],
    "rho_edge": [0.0, 111.0, 130.0, 111.0, 42.25, 42.25],
    "z_origin": [-40.0, 0.0, 0.0, 40.0, -142.0],
    "wall": 3.0, "dynode_radius": 27.5, "dynode_top": -5.9,
}


def g(x: float) -> str:
    """A number as Geant4's GDML writer prints it (ostream precision 15)."""
    return f"{x:.15g}"


def fibonacci_points(n: int, radius: float) -> np.ndarray:
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    r = np.sqrt(1.0 - z * z)
    phi = np.arange(n) * math.pi * (3.0 - math.sqrt(5.0))
    return radius * np.column_stack([r * np.cos(phi), r * np.sin(phi), z])


def inward_angles_deg(p: Sequence[float]) -> tuple[float, float, float]:
    """physvol angles (x, y, z) whose object rotation takes local +z to -p/|p|: with R = Ry(y) Rx(x),
    R^T e_z = (-sin y, cos y sin x, cos y cos x)."""
    d = -np.asarray(p, dtype=np.float64) / np.linalg.norm(p)
    return math.degrees(math.atan2(d[1], d[2])), math.degrees(-math.asin(d[0])), 0.0


def g4_angles(m: np.ndarray) -> tuple[float, float, float]:
    """G4GDMLWriteDefine::GetAngles (radians)."""
    cosb = math.hypot(m[0, 0], m[1, 0])
    if cosb > 10e-10:
        return math.atan2(m[2, 1], m[2, 2]), math.atan2(-m[2, 0], cosb), math.atan2(m[1, 0], m[0, 0])
    return math.atan2(-m[1, 2], m[1, 1]), math.atan2(-m[2, 0], cosb), 0.0


def rat_pmt_frame_rotation(direction: Sequence[float]) -> np.ndarray:
    """PMTInfoParser::GetPMTRotation: rot.rotateY(-atan2(dx, dz)); rot.rotateX(atan2(dy, hypot(dx, dz)))."""
    dx, dy, dz = direction
    ay = -math.atan2(dx, dz)
    ax = math.atan2(dy, math.hypot(dx, dz))
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    return rx @ ry


# --- GLG4TorusStack -----------------------------------------------------------------------------------

def torusstack_state(z_edge: Sequence[float], rho_edge: Sequence[float],
                     z_origin: Sequence[float]) -> tuple[list[float], list[float], list[float], list[float]]:
    """(z_edge, rho_edge, z_o, r_o) as GLG4TorusStack::SetAllParameters stores them."""
    n = len(z_origin)
    if z_edge[n] > z_edge[0]:
        ze, re, zo = list(z_edge), list(rho_edge), list(z_origin)
    else:
        ze, re, zo = list(z_edge[::-1]), list(rho_edge[::-1]), list(z_origin[::-1])
    ro, radius = [0.0] * n, [0.0] * n
    for i in range(n):
        if re[i] == re[i + 1]:
            ro[i] = re[i]
            continue
        ro[i] = (((ze[i + 1] - ze[i]) * (ze[i + 1] + ze[i] - 2 * zo[i]) / (re[i + 1] - re[i])) + (re[i + 1] + re[i])) / 2.0
        radius[i] = math.hypot(ze[i] - zo[i], re[i] - ro[i])
        if re[i] < ro[i] + 1e-9 and re[i + 1] < ro[i] + 1e-9 and (re[i] < ro[i] - 1e-9 or re[i + 1] < ro[i] - 1e-9):
            radius[i] = -radius[i]
    for i in range(n):  # CheckABRho
        if radius[i] > 0:
            for k in (i, i + 1):
                if re[k] < ro[i]:
                    re[k] = ro[i] + (ro[i] - re[k])
        elif radius[i] < 0:
            for k in (i, i + 1):
                if re[k] > ro[i]:
                    re[k] = ro[i] - (re[k] - ro[i])
    return ze, re, zo, ro


def torusstack_xml(name: str, z_edge: Sequence[float], rho_edge: Sequence[float], z_origin: Sequence[float],
                   inner: str = "") -> str:
    ze, re, zo, ro = torusstack_state(z_edge, rho_edge, z_origin)
    parts = [f'<torusstack name="{name}" lunit="mm">']
    for i in range(len(ze)):
        parts.append(f'<edge z="{g(ze[i])}" rho="{g(re[i])}"/>')
        if i < len(zo):
            parts.append(f'<origin z="{g(zo[i])}" rho="{g(ro[i])}"/>')
    if inner:
        parts.append(f"<inner>{inner}</inner>")
    parts.append("</torusstack>")
    return "".join(parts)


def _segment_normal(ze: list[float], re: list[float], zo: list[float], ro: list[float], k: int) -> tuple[float, float]:
    """Outward (rho, z) normal at edge k, from the segment below it (above it for the first edge)."""
    i = max(0, min(k - 1, len(zo) - 1)) if k > 0 else 0
    if re[i] == re[i + 1]:
        return 1.0, 0.0
    dr, dz = re[k] - ro[i], ze[k] - zo[i]
    length = math.hypot(dr, dz)
    inner_side = re[i] < ro[i] and re[i + 1] < ro[i]
    sign = -1.0 if inner_side else 1.0
    return sign * dr / length, sign * dz / length


def r7081_inner_edges(p: dict[str, object]) -> tuple[list[float], list[float], int]:
    """Inner-surface edges, wall thickness along the outward normal (CalcInnerParams, simplified)."""
    z_edge, rho_edge = list(p["z_edge"]), list(p["rho_edge"])  # type: ignore[call-overload]
    wall = float(p["wall"])  # type: ignore[arg-type]
    ze, re, zo, ro = torusstack_state(z_edge, rho_edge, p["z_origin"])  # type: ignore[arg-type]
    inner_z, inner_rho = [z_edge[0] - wall], [0.0]
    equator = -1
    for k in range(1, len(z_edge) - 1):
        kk = len(ze) - 1 - k  # index in increasing order
        nr, nz = _segment_normal(ze, re, zo, ro, kk)
        inner_z.append(z_edge[k] - wall * nz)
        inner_rho.append(rho_edge[k] - wall * nr)
        if z_edge[k] == 0.0:
            equator = k
    inner_z.append(z_edge[-1] + wall)
    inner_rho.append(rho_edge[-1] - wall)
    return inner_z, inner_rho, equator


# --- documents -------------------------------------------------------------------------------------------

_MATERIALS = """
  <define>
    <matrix coldim="2" name="RINDEX_water0x1001" values="1.90745e-06 1.3325 4.1328e-06 1.3535"/>
    <matrix coldim="2" name="ABSLENGTH_water0x1002" values="1.90745e-06 20000 4.1328e-06 5000"/>
    <matrix coldim="2" name="RINDEX_glass0x1003" values="1.90745e-06 1.47 4.1328e-06 1.49"/>
    <matrix coldim="2" name="EFFICIENCY_pc0x1004" values="1.90745e-06 0.01 2.4797e-06 0.2 4.1328e-06 0.15"/>
    <matrix coldim="2" name="REFLECTIVITY_mirror0x1005" values="1.90745e-06 0.9 4.1328e-06 0.9"/>
  </define>
  <materials>
    <element Z="1" formula="H" name="H0x2001"><atom unit="g/mole" value="1.00794"/></element>
    <element Z="8" formula="O" name="O0x2002"><atom unit="g/mole" value="15.9994"/></element>
    <element Z="14" formula="Si" name="Si0x2003"><atom unit="g/mole" value="28.0855"/></element>
    <element Z="26" formula="Fe" name="Fe0x2004"><atom unit="g/mole" value="55.845"/></element>
    <material name="water0x3001" state="liquid"><D unit="g/cm3" value="1"/>
      <fraction n="0.111894" ref="H0x2001"/><fraction n="0.888106" ref="O0x2002"/>
      <property name="RINDEX" ref="RINDEX_water0x1001"/><property name="ABSLENGTH" ref="ABSLENGTH_water0x1002"/>
    </material>
    <material name="glass0x3002" state="solid"><D unit="g/cm3" value="2.23"/>
      <composite n="1" ref="Si0x2003"/><composite n="2" ref="O0x2002"/>
      <property name="RINDEX" ref="RINDEX_glass0x1003"/>
    </material>
    <material name="pmt_vacuum0x3003" state="gas"><D unit="g/cm3" value="1e-10"/><fraction n="1" ref="H0x2001"/></material>
    <material name="stainless_steel0x3004" state="solid"><D unit="g/cm3" value="8"/><fraction n="1" ref="Fe0x2004"/></material>
  </materials>
"""


def _gdml(solids: str, structure: str, world: str) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8" standalone="no" ?>\n<gdml>\n{_MATERIALS}'
            f"  <solids>\n{solids}\n  </solids>\n  <structure>\n{structure}\n  </structure>\n"
            f'  <setup name="Default" version="1.0"><world ref="{world}"/></setup>\n</gdml>\n')


def fibonacci_gdml(n: int, radius: float = 5800.0) -> str:
    """n glass tube PMTs (r 100, 100 long) on a sphere, local +z pointing at the centre."""
    solids = ('    <box lunit="mm" name="world0x4001" x="16000" y="16000" z="16000"/>\n'
              '    <orb lunit="mm" name="water0x4002" r="6000"/>\n'
              '    <tube aunit="deg" deltaphi="360" lunit="mm" name="pmt0x4003" rmax="100" rmin="0" startphi="0" z="100"/>')
    pv = []
    for i, p in enumerate(fibonacci_points(n, radius)):
        ax, ay, az = inward_angles_deg(p)
        name = f"pmt_phys0x5{i:06x}"
        pv.append(f'      <physvol name="{name}" copynumber="{i}"><volumeref ref="pmt_log0x4004"/>'
                  f'<position name="{name}_pos" unit="mm" x="{g(p[0])}" y="{g(p[1])}" z="{g(p[2])}"/>'
                  f'<rotation name="{name}_rot" unit="deg" x="{g(ax)}" y="{g(ay)}" z="{g(az)}"/></physvol>')
    structure = ('    <volume name="pmt_log0x4004"><materialref ref="glass0x3002"/><solidref ref="pmt0x4003"/></volume>\n'
                 '    <volume name="water_log0x4005"><materialref ref="water0x3001"/><solidref ref="water0x4002"/>\n'
                 + "\n".join(pv) + "\n    </volume>\n"
                 '    <volume name="world_log0x4006"><materialref ref="G4_AIR"/><solidref ref="world0x4001"/>\n'
                 '      <physvol name="water_phys0x4007"><volumeref ref="water_log0x4005"/></physvol>\n    </volume>')
    return _gdml(solids, structure, "world_log0x4006")


def rat_like_gdml(n: int, radius: float = 5800.0, *, gap_half: float = 0.5e-3) -> tuple[str, np.ndarray, np.ndarray]:
    """RAT-style r7081 PMTs on a Fibonacci sphere, facing inward. Returns (gdml, positions, directions)."""
    p = R7081
    inner_z, inner_rho, eq = r7081_inner_edges(p)
    z_origin = list(p["z_origin"])  # type: ignore[call-overload]
    body = torusstack_xml("r7081_body_solid0x6001", p["z_edge"], p["rho_edge"], z_origin)  # type: ignore[arg-type]
    inner1 = torusstack_xml("r7081_inner1_solid0x6002", inner_z[:eq + 1], inner_rho[:eq + 1], z_origin[:eq])
    inner2 = torusstack_xml("r7081_inner2_solid0x6003", inner_z[eq:], inner_rho[eq:], z_origin[eq:])
    z_top = p["z_edge"][0] + 0.0  # type: ignore[index]
    z_bottom = p["z_edge"][-1]  # type: ignore[index]
    rho = max(p["rho_edge"])  # type: ignore[call-overload]
    main_half = max(z_top, -z_bottom)
    sub_half = (main_half - min(z_top, -z_bottom)) / 2.0
    sub_offset = z_top + sub_half if z_top < -z_bottom else z_bottom - sub_half
    dynode_bottom = min(z for z, r in zip(inner_z, inner_rho, strict=True) if r > p["dynode_radius"])  # type: ignore[operator]
    dynode_half = (p["dynode_top"] - dynode_bottom) / 2.0  # type: ignore[operator]
    solids = "\n".join([
        '    <box lunit="mm" name="world0x7001" x="16000" y="16000" z="16000"/>',
        '    <tube aunit="deg" deltaphi="360" lunit="mm" name="tank0x7002" rmax="6500" rmin="0" startphi="0" z="13000"/>',
        f'    <tube aunit="deg" deltaphi="360" lunit="mm" name="r7081_main0x7003" rmax="{g(rho)}" rmin="0" startphi="0" z="{g(2 * main_half)}"/>',
        f'    <tube aunit="deg" deltaphi="360" lunit="mm" name="r7081_sub0x7004" rmax="{g(rho * 1.1)}" rmin="0" startphi="0" z="{g(2 * sub_half)}"/>',
        ('    <subtraction name="r7081_envelope_solid0x7005"><first ref="r7081_main0x7003"/><second ref="r7081_sub0x7004"/>'
        f'<position name="r7081_envelope_solid0x7005_pos" unit="mm" x="0" y="0" z="{g(sub_offset)}"/></subtraction>'),
        "    " + body, "    " + inner1, "    " + inner2,
        f'    <tube aunit="deg" deltaphi="360" lunit="mm" name="r7081_central_gap_solid0x7006" rmax="{g(inner_rho[eq])}" rmin="0" startphi="0" z="{g(2 * gap_half)}"/>',
        f'    <tube aunit="deg" deltaphi="360" lunit="mm" name="r7081_dynode_solid0x7007" rmax="{g(p["dynode_radius"])}" rmin="0" startphi="0" z="{g(2 * dynode_half)}"/>',  # type: ignore[arg-type]
        ('    <opticalsurface finish="0" model="0" name="photocathode0x7008" type="0" value="1">'
        '<property name="EFFICIENCY" ref="EFFICIENCY_pc0x1004"/></opticalsurface>'),
        ('    <opticalsurface finish="0" model="0" name="mirror0x7009" type="0" value="1">'
        '<property name="REFLECTIVITY" ref="REFLECTIVITY_mirror0x1005"/></opticalsurface>'),
        '    <opticalsurface finish="0" model="0" name="stainless_steel0x700a" type="0" value="1"/>',
    ])
    positions = fibonacci_points(n, radius)
    directions = -positions / np.linalg.norm(positions, axis=1)[:, None]
    pv = []
    for i, (pos, d) in enumerate(zip(positions, directions, strict=True)):
        ax, ay, az = (math.degrees(a) for a in g4_angles(rat_pmt_frame_rotation(d)))
        name = f"r7081_pmt0x8{i:06x}"
        pv.append(f'      <physvol name="{name}" copynumber="{i}"><volumeref ref="r7081_envelope_log0x9006"/>'
                  f'<position name="{name}_pos" unit="mm" x="{g(pos[0])}" y="{g(pos[1])}" z="{g(pos[2])}"/>'
                  f'<rotation name="{name}_rot" unit="deg" x="{g(ax)}" y="{g(ay)}" z="{g(az)}"/></physvol>')
    structure = "\n".join([
        '    <volume name="r7081_dynode_log0x9001"><materialref ref="stainless_steel0x3004"/><solidref ref="r7081_dynode_solid0x7007"/></volume>',
        '    <volume name="r7081_inner1_log0x9002"><materialref ref="pmt_vacuum0x3003"/><solidref ref="r7081_inner1_solid0x6002"/></volume>',
        ('    <volume name="r7081_inner2_log0x9003"><materialref ref="pmt_vacuum0x3003"/><solidref ref="r7081_inner2_solid0x6003"/>'
        '<physvol name="r7081_dynode_phys0xa001"><volumeref ref="r7081_dynode_log0x9001"/>'
        f'<position name="r7081_dynode_phys0xa001_pos" unit="mm" x="0" y="0" z="{g(p["dynode_top"] - dynode_half)}"/></physvol></volume>'),  # type: ignore[operator]
        '    <volume name="r7081_central_gap_log0x9004"><materialref ref="pmt_vacuum0x3003"/><solidref ref="r7081_central_gap_solid0x7006"/></volume>',
        ('    <volume name="r7081_body_log0x9005"><materialref ref="glass0x3002"/><solidref ref="r7081_body_solid0x6001"/>'
        '<physvol name="r7081_inner1_phys0xa002"><volumeref ref="r7081_inner1_log0x9002"/>'
        f'<position name="r7081_inner1_phys0xa002_pos" unit="mm" x="0" y="0" z="{g(2 * gap_half)}"/></physvol>'
        '<physvol name="r7081_inner2_phys0xa003"><volumeref ref="r7081_inner2_log0x9003"/></physvol>'
        '<physvol name="r7081_central_gap_phys0xa004"><volumeref ref="r7081_central_gap_log0x9004"/>'
        f'<position name="r7081_central_gap_phys0xa004_pos" unit="mm" x="0" y="0" z="{g(gap_half)}"/></physvol></volume>'),
        ('    <volume name="r7081_envelope_log0x9006"><materialref ref="water0x3001"/><solidref ref="r7081_envelope_solid0x7005"/>'
        '<physvol name="r7081_body_phys0xa005"><volumeref ref="r7081_body_log0x9005"/></physvol></volume>'),
        '    <volume name="tank_log0x9007"><materialref ref="water0x3001"/><solidref ref="tank0x7002"/>',
        *pv,
        "    </volume>",
        ('    <volume name="world_log0x9008"><materialref ref="G4_AIR"/><solidref ref="world0x7001"/>'
        '<physvol name="tank_phys0xa006"><volumeref ref="tank_log0x9007"/></physvol></volume>'),
        '    <skinsurface name="r7081_dynode_logsurf0xb001" surfaceproperty="stainless_steel0x700a"><volumeref ref="r7081_dynode_log0x9001"/></skinsurface>',
        '    <bordersurface name="r7081_mirror_logsurf10xb002" surfaceproperty="mirror0x7009"><physvolref ref="r7081_inner2_phys0xa003"/><physvolref ref="r7081_body_phys0xa005"/></bordersurface>',
        '    <bordersurface name="r7081_mirror_logsurf20xb003" surfaceproperty="mirror0x7009"><physvolref ref="r7081_body_phys0xa005"/><physvolref ref="r7081_inner2_phys0xa003"/></bordersurface>',
        '    <bordersurface name="r7081_central_gap_logsurf10xb004" surfaceproperty="mirror0x7009"><physvolref ref="r7081_central_gap_phys0xa004"/><physvolref ref="r7081_body_phys0xa005"/></bordersurface>',
        '    <bordersurface name="r7081_central_gap_logsurf20xb005" surfaceproperty="mirror0x7009"><physvolref ref="r7081_body_phys0xa005"/><physvolref ref="r7081_central_gap_phys0xa004"/></bordersurface>',
        '    <bordersurface name="r7081_photocathode_logsurf10xb006" surfaceproperty="photocathode0x7008"><physvolref ref="r7081_inner1_phys0xa002"/><physvolref ref="r7081_body_phys0xa005"/></bordersurface>',
    ])
    return _gdml(solids, structure, "world_log0x9008"), positions, directions


def pmtinfo_dump(positions: np.ndarray, directions: np.ndarray) -> str:
    """A ratdb_dump-style JSON array holding PMTINFO (default plane) and a user-plane override."""
    n = len(positions)
    default = {"name": "PMTINFO", "index": "", "run_range": [0, 0],
               "x": positions[:, 0].tolist(), "y": positions[:, 1].tolist(), "z": positions[:, 2].tolist(),
               "dir_x": directions[:, 0].tolist(), "dir_y": directions[:, 1].tolist(),
               "dir_z": directions[:, 2].tolist(), "type": [1] * n}
    user = {"name": "PMTINFO", "index": "", "run_range": [-1, -1], "type": [2] * n}
    other = {"name": "GEO", "index": "world", "run_range": [0, 0], "type": "box"}
    return json.dumps([other, default, user], indent=1)
