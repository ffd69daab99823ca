"""GDML's rotation conventions, which differ between placements and solids.

``G4GDMLReadDefine::GetRotationMatrix`` builds R = Rz(z) Ry(y) Rx(x) from the three angles
(CLHEP's rotateX, then rotateY, then rotateZ, each multiplying on the left). What R means depends on
where it is read (checked against Geant4 11.4's reader and its navigation):

* ``<physvol>``: ``G4Transform3D(R.inverse(), position) * G4Scale3D(scale)`` is the daughter's
  placement, so the object rotation is R^T (GDML placement rotations are passive, the frame
  rotation is R).
* booleans (``<second>``, ``<firstrotation>``), ``<multiUnionNode>`` and ``<reflectedSolid>``:
  ``G4Transform3D(R, position)`` is applied to the solid as is, so the object rotation is R.

Matrix entries within 1e-15 of 0 or +-1 are snapped, so 90-degree rotations are exact and faces
they move stay exactly coplanar with the faces they should meet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from charon.gdml.model import F64


def _snap(x: float) -> float:
    if -1e-15 < x < 1e-15:
        return 0.0
    if -1e-15 < x - 1.0 < 1e-15:
        return 1.0
    if -1e-15 < x + 1.0 < 1e-15:
        return -1.0
    return x


def _rows(angles: Sequence[float]) -> list[list[float]]:
    """Rz(z) Ry(y) Rx(x) as rows, in plain floats (this runs once per placement)."""
    x, y, z = (float(a) for a in angles)
    cx, sx, cy, sy, cz, sz = math.cos(x), math.sin(x), math.cos(y), math.sin(y), math.cos(z), math.sin(z)
    return [[_snap(cz * cy), _snap(cz * sy * sx - sz * cx), _snap(cz * sy * cx + sz * sx)],
            [_snap(sz * cy), _snap(sz * sy * sx + cz * cx), _snap(sz * sy * cx - cz * sx)],
            [_snap(-sy), _snap(cy * sx), _snap(cy * cx)]]


def rotation_matrix(angles: Sequence[float]) -> F64:
    """``GetRotationMatrix``: Rz(angles[2]) @ Ry(angles[1]) @ Rx(angles[0]), angles in rad."""
    return np.array(_rows(angles), dtype=np.float64)


def placement_transform(position: Sequence[float], angles: Sequence[float],
                        scale: Sequence[float] = (1.0, 1.0, 1.0)) -> F64:
    """The 4x4 object transform of a ``<physvol>`` (``G4GDMLReadStructure::PhysvolRead``):
    rotation R^T, then the scale (a reflection) applied first, then the position."""
    r = _rows(angles)
    sx, sy, sz = (float(s) for s in scale)
    px, py, pz = (float(p) for p in position)
    return np.array([[r[0][0] * sx, r[1][0] * sy, r[2][0] * sz, px],
                     [r[0][1] * sx, r[1][1] * sy, r[2][1] * sz, py],
                     [r[0][2] * sx, r[1][2] * sy, r[2][2] * sz, pz],
                     [0.0, 0.0, 0.0, 1.0]], dtype=np.float64)


def solid_transform(position: Sequence[float], angles: Sequence[float]) -> F64:
    """The 4x4 object transform of a boolean operand or multi-union node (rotation NOT inverted)."""
    r = _rows(angles)
    px, py, pz = (float(p) for p in position)
    return np.array([[*r[0], px], [*r[1], py], [*r[2], pz], [0.0, 0.0, 0.0, 1.0]], dtype=np.float64)


def is_identity(m: F64) -> bool:
    return bool(np.array_equal(m, np.eye(4)))
