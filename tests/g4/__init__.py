"""Geant4 (geant4-pybind) harness: test detectors built and written by Geant4, photons run in Geant4.

charon's engine is validated against real Geant4 on the very same GDML file: ``build`` makes the
detectors (GDML + RATDB PMTINFO + meta.json), ``simulate`` runs given photons through a GDML file in
a fresh Geant4 process and returns the detected hits, ``stats`` compares two samples of hits.
"""
