"""Geant4 / RAT-PAC detectors (GDML + RATDB PMTINFO) imported into charon's own engine.

``import_gdml`` turns a GDML file into a :class:`charon.engine.detector.Detector` whose scene holds
every placed volume, with Geant4's materials, optical surfaces and precedence rules and RAT's
channel order; ``imported_detector`` adds an on-disk cache keyed by the inputs' sha256. The GDML
and RATDB readers live in :mod:`charon.gdml` and :mod:`charon.ratdb`.
"""

from charon.importer.build import DEFAULT_CHORD_MM, ImportOptions, ImportReport, import_gdml
from charon.importer.cache import imported_detector

__all__ = ["DEFAULT_CHORD_MM", "ImportOptions", "ImportReport", "import_gdml", "imported_detector"]
