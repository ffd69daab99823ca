"""The ChAR0N v1 wire constants: message headers, frame counts and Chroma's photon history bits.

These byte strings are compared exactly (case-sensitive, no terminator) by the ratpac-two client,
so they are part of a contract with deployed code and must never change.
"""

from __future__ import annotations

import enum
from typing import Final

# Requests (client -> server).
PING: Final = b"PING"
RUN_BEGIN: Final = b"RUN_BEGIN"
RUN_END: Final = b"RUN_END"
DETECTOR_INFO: Final = b"DETECTOR_INFO"
PHOTONDATA: Final = b"PHOTONDATA"

# Replies (server -> client).
ACK: Final = b"ACK"
PONG: Final = b"PONG"  # pre-cd446d3 PING reply; only sent when legacy_pong is switched on
SIM_COMPLETE: Final = b"SIM_COMPLETE"
SIM_COMPLETE_ASYNC: Final = b"SIM_COMPLETE_ASYNC"
SIM_FAILED: Final = b"SIM_FAILED"
UNKNOWN_REQUEST: Final = b"UNKNOWN_REQUEST"
NO_WORKERS: Final = b"NO_WORKERS"

REQUEST_HEADERS: Final = frozenset({PING, RUN_BEGIN, RUN_END, DETECTOR_INFO, PHOTONDATA})

#: PHOTONDATA: header, metadata, 11 float32 arrays, 1 uint32 array.
PHOTONDATA_FRAMES: Final = 14
#: SIM_COMPLETE: header, event id, channel ids, 8 float32 arrays, flags.
SIM_COMPLETE_FRAMES: Final = 12
#: DETECTOR_INFO reply: header, x, y, z, channel type.
DETECTOR_INFO_FRAMES: Final = 5
#: PHOTONDATA metadata: uint32 event id, uint32 photon count.
METADATA_BYTES: Final = 8

#: Names of the twelve PHOTONDATA array frames, in wire order (frames 2..13).
PHOTON_FIELDS: Final = (
    "x", "y", "z", "dx", "dy", "dz", "polx", "poly", "polz", "wavelength", "time", "flags",
)
#: Names of the ten SIM_COMPLETE array frames, in wire order (frames 2..11).
HIT_FIELDS: Final = (
    "channel", "dx", "dy", "dz", "polx", "poly", "polz", "wavelength", "time", "flags",
)

# ChAR0N router <-> worker single-byte commands (zguide Paranoid Pirate).
PPP_READY: Final = b"\x01"
PPP_HEARTBEAT: Final = b"\x02"


class Flag(enum.IntFlag):
    """Chroma photon history bits (``chroma/cuda/photon.h``), carried as uint32 on the wire."""

    NO_HIT = 0x1
    BULK_ABSORB = 0x2
    SURFACE_DETECT = 0x4
    SURFACE_ABSORB = 0x8
    RAYLEIGH_SCATTER = 0x10
    REFLECT_DIFFUSE = 0x20
    REFLECT_SPECULAR = 0x40
    SURFACE_REEMIT = 0x80
    SURFACE_TRANSMIT = 0x100
    BULK_REEMIT = 0x200
    CHERENKOV = 0x400
    SCINTILLATION = 0x800
    NAN_ABORT = 0x80000000


#: A photon carrying any of these is finished: engines must not propagate it again.
TERMINAL_FLAGS: Final = (
    Flag.NO_HIT | Flag.BULK_ABSORB | Flag.SURFACE_DETECT | Flag.SURFACE_ABSORB | Flag.NAN_ABORT
)
#: Origin bits set by the client that every engine keeps.
ORIGIN_FLAGS: Final = Flag.CHERENKOV | Flag.SCINTILLATION
