"""GDML reading and solid tessellation: Geant4 and RAT-PAC detector files into charon's terms.

``read_gdml`` gives a checked, frozen ``GdmlDocument`` (materials with their optical property
tables, optical/skin/border surfaces, solids with evaluated parameters, logical volumes with
their placements as 4x4 transforms); ``tessellate`` turns any of its solids into a closed,
outward-wound triangle mesh within a chord tolerance. Worker-side only (numpy, manifold3d).
"""

from charon.gdml.document import parse_gdml, read_gdml
from charon.gdml.errors import GdmlError
from charon.gdml.mesh import TriangleMesh, is_closed
from charon.gdml.model import GdmlDocument, strip_pointer_suffix
from charon.gdml.solids import analytic_form, is_degenerate, tessellate

__all__ = [
    "GdmlDocument", "GdmlError", "TriangleMesh", "analytic_form", "is_closed", "is_degenerate",
    "parse_gdml", "read_gdml", "strip_pointer_suffix", "tessellate",
]
