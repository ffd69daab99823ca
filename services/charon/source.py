"""Photon sources for clients and benchmarks: what a Geant4 client would send, made with numpy."""

from __future__ import annotations

import numpy as np

from charon.engine import optics
from charon.engine.base import Photons


def isotropic_point(event_id: int, n: int, position: tuple[float, float, float], wavelength_nm: float,
                    *, seed: int = 0, flags: int = 0) -> Photons:
    """``n`` photons from one point, isotropic, randomly polarised (transverse), at t = 0.

    Reproducible per (seed, event id), independent of how many events are generated.
    """
    u = np.random.default_rng([seed, event_id]).uniform(0.0, 1.0, (3, n))
    direction = optics.isotropic(u[0], u[1])
    pol = optics.random_perpendicular(direction, u[2])
    pos = np.broadcast_to(np.asarray(position, dtype=np.float64), (n, 3))
    return Photons.from_arrays(event_id, pos, direction, pol, wavelength_nm, 0.0, flags)
