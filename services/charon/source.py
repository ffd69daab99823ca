"""Photon sources for clients and benchmarks: what a Geant4 client would send, made with numpy."""

from __future__ import annotations

import numpy as np

from charon.engine.base import Photons


def isotropic_point(event_id: int, n: int, position: tuple[float, float, float], wavelength_nm: float,
                    *, seed: int = 0, flags: int = 0) -> Photons:
    """``n`` photons from one point, isotropic, randomly polarised (transverse), at t = 0.

    Reproducible per (seed, event id), independent of how many events are generated.
    """
    rng = np.random.default_rng([seed, event_id])
    cos_t = rng.uniform(-1.0, 1.0, n)
    phi = rng.uniform(0.0, 2 * np.pi, n)
    sin_t = np.sqrt(1.0 - cos_t**2)
    direction = np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=1)
    # A random unit vector orthogonal to the direction.
    helper = rng.normal(size=(n, 3))
    pol = helper - np.sum(helper * direction, axis=1, keepdims=True) * direction
    pol /= np.linalg.norm(pol, axis=1, keepdims=True)
    pos = np.broadcast_to(np.asarray(position, dtype=np.float64), (n, 3))
    return Photons.from_arrays(event_id, pos, direction, pol, wavelength_nm, 0.0, flags)
