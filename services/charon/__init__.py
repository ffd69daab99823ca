"""charon: optical-photon simulation as a network service.

RAT-PAC (ratpac-two) and other Geant4 codes send each event's optical photons over ZeroMQ using the
ChAR0N v1 wire protocol; charon simulates them (built-in engine or Chroma) and answers with PMT hits.
"""

__version__ = "0.1.0"
