"""The isotropic point source clients and benchmarks send: direction statistics, transverse
polarisation, reproducibility per (seed, event id)."""

from __future__ import annotations

import numpy as np

from charon.source import isotropic_point

N = 200_000


def test_directions_are_isotropic_within_4_sigma() -> None:
    p = isotropic_point(3, N, (1.0, 2.0, 3.0), 420.0, seed=7)
    d = np.stack([p.dx, p.dy, p.dz], axis=1).astype(np.float64)
    assert np.allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-6)
    # each component is uniform on [-1, 1] for an isotropic source: mean 0 (var 1/3), <d_i^2> = 1/3
    assert np.all(np.abs(d.mean(axis=0)) < 4 * np.sqrt(1 / 3 / N))
    sigma_sq = np.sqrt((1 / 5 - 1 / 9) / N)
    assert np.all(np.abs((d**2).mean(axis=0) - 1 / 3) < 4 * sigma_sq)
    assert np.array_equal(np.stack([p.x, p.y, p.z]).T, np.broadcast_to([1.0, 2.0, 3.0], (N, 3)))
    assert np.all(p.wavelength == 420.0)
    assert np.all(p.time == 0.0)


def test_polarisation_is_unit_and_transverse() -> None:
    p = isotropic_point(1, 10_000, (0.0, 0.0, 0.0), 420.0, flags=0x400)
    d = np.stack([p.dx, p.dy, p.dz], axis=1).astype(np.float64)
    q = np.stack([p.polx, p.poly, p.polz], axis=1).astype(np.float64)
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-6)
    assert np.abs(np.einsum("ij,ij->i", d, q)).max() < 1e-6
    assert np.all(p.flags == 0x400)


def test_reproducible_per_seed_and_event() -> None:
    a = isotropic_point(5, 100, (0.0, 0.0, 0.0), 420.0, seed=1)
    assert np.array_equal(a.dx, isotropic_point(5, 100, (0.0, 0.0, 0.0), 420.0, seed=1).dx)
    assert not np.array_equal(a.dx, isotropic_point(6, 100, (0.0, 0.0, 0.0), 420.0, seed=1).dx)
    assert not np.array_equal(a.dx, isotropic_point(5, 100, (0.0, 0.0, 0.0), 420.0, seed=2).dx)
    assert len(isotropic_point(5, 0, (0.0, 0.0, 0.0), 420.0)) == 0
