"""GDML reading: Geant4 and RAT-PAC detector files into charon's terms.

``read_gdml`` gives a checked, frozen ``GdmlDocument`` (materials with their optical property
tables, optical/skin/border surfaces, solids with evaluated parameters, logical volumes with
their placements as 4x4 transforms). Worker-side only (numpy).
"""

from charon.gdml.document import parse_gdml, read_gdml
from charon.gdml.errors import GdmlError
from charon.gdml.model import GdmlDocument, strip_pointer_suffix

__all__ = ["GdmlDocument", "GdmlError", "parse_gdml", "read_gdml", "strip_pointer_suffix"]
