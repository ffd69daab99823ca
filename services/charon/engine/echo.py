"""The echo backend: one hit per photon, no physics. For tests, benchmarks and plumbing checks.

Channel = photon index mod number of PMTs; every other hit array is the input array itself, so the
reply costs no simulation and a client can check its bytes came back through every hop.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from charon.engine.base import DetectorInfo, Hits, Photons
from charon.engine.detector import Detector
from charon.protocol.tokens import Flag


class EchoSimulator:
    name = "echo"

    def __init__(self, detector: Detector, *, delay_s: float = 0.0) -> None:
        self._info = detector.info()
        self._fingerprint = detector.fingerprint
        self._delay_s = delay_s
        self._n_channels = max(len(self._info), 1)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def detector_info(self) -> DetectorInfo:
        return self._info

    def simulate(self, batch: Sequence[Photons]) -> list[Hits]:
        if self._delay_s:
            time.sleep(self._delay_s)
        out = []
        for ev in batch:
            channel = (np.arange(len(ev), dtype=np.uint32) % np.uint32(self._n_channels)).astype(np.uint32)
            flags = ev.flags | np.uint32(Flag.SURFACE_DETECT)
            out.append(Hits(channel, ev.dx, ev.dy, ev.dz, ev.polx, ev.poly, ev.polz, ev.wavelength,
                            ev.time, flags, ev.x, ev.y, ev.z))
        return out

    def close(self) -> None:
        """Nothing to release."""
