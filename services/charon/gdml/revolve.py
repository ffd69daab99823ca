"""Sweep an (r, z) cross-section about the z axis into a closed, outward-wound triangle mesh.

Written here rather than taken from ``manifold3d.Manifold.revolve`` because the sweep must sample
phi exactly where Geant4's solid has its corners: a polyhedra's sides are the chords between
``numsides`` + 1 corner angles over [startphi, startphi + deltaphi], so a partial-phi polyhedra is
exact, not approximated. Points on the axis (r = 0) become one vertex, so there are no degenerate
triangles, and a partial turn gets its two end caps from the cross-section's triangulation.
"""

from __future__ import annotations

import math

import numpy as np
from manifold3d import triangulate

from charon.gdml.mesh import I32, TriangleMesh, oriented
from charon.gdml.profiles import Profile, is_full_turn


def revolve(profile: Profile, startphi: float, deltaphi: float, n_phi: int) -> TriangleMesh:
    """Sweep ``profile`` over [startphi, startphi + deltaphi] in ``n_phi`` equal steps
    (a full turn when ``deltaphi`` >= 2 pi)."""
    full = is_full_turn(deltaphi)
    span = 2.0 * math.pi if full else deltaphi
    n_phi = max(int(n_phi), 1 if not full else 3)
    n_cols = n_phi if full else n_phi + 1
    phi = startphi + span * np.arange(n_cols) / n_phi
    cos, sin = np.cos(phi), np.sin(phi)
    for arr in (cos, sin):
        for target in (0.0, 1.0, -1.0):
            arr[np.abs(arr - target) < 1e-15] = target

    vertex_blocks: list[np.ndarray] = []
    face_blocks: list[np.ndarray] = []
    loop_index: list[np.ndarray] = []  # per loop: (k, n_cols) vertex ids
    count = 0
    for loop in profile.loops:
        r, z = loop[:, 0], loop[:, 1]
        k = loop.shape[0]
        idx = np.empty((k, n_cols), dtype=np.int64)
        on_axis = r == 0.0
        # In a full turn, a profile point on the axis between two edges off the axis is the apex of
        # two cones meeting at a point (a G4Cons with rmin1 = 0, say): give each cone its own vertex
        # there, so every vertex is manifold. ``idx`` serves edges leaving a point, ``idx_in`` those
        # arriving at it.
        idx_in = idx
        for i in range(k):
            if on_axis[i]:
                vertex_blocks.append(np.array([[0.0, 0.0, z[i]]]))
                idx[i, :] = count
                count += 1
            else:
                vertex_blocks.append(np.column_stack([r[i] * cos, r[i] * sin, np.full(n_cols, z[i])]))
                idx[i, :] = count + np.arange(n_cols)
                count += n_cols
        pinched = [i for i in range(k) if full and on_axis[i] and not on_axis[i - 1] and not on_axis[(i + 1) % k]]
        if pinched:
            idx_in = idx.copy()
            for i in pinched:
                vertex_blocks.append(np.array([[0.0, 0.0, z[i]]]))
                idx_in[i, :] = count
                count += 1
        loop_index.append(idx)
        nxt = np.roll(np.arange(k), -1)
        j = np.arange(n_phi)
        j1 = (j + 1) % n_cols
        for i in range(k):
            i1 = int(nxt[i])
            a, b = idx[i, j], idx[i, j1]
            c, d = idx_in[i1, j1], idx_in[i1, j]
            if not on_axis[i]:
                face_blocks.append(np.column_stack([a, b, c]))
            if not on_axis[i1]:
                face_blocks.append(np.column_stack([a, c, d]))

    if not full:
        caps = triangulate([np.ascontiguousarray(loop) for loop in profile.loops], epsilon=-1)
        caps = np.asarray(caps, dtype=np.int64).reshape(-1, 3)
        flat_start = np.concatenate([ix[:, 0] for ix in loop_index])
        flat_end = np.concatenate([ix[:, n_phi] for ix in loop_index])
        face_blocks.append(flat_start[caps])            # CCW in (r, z): normal -e_phi, outward here
        face_blocks.append(flat_end[caps][:, ::-1])     # and reversed at the far end

    vertices = np.vstack(vertex_blocks)
    faces: I32 = np.vstack(face_blocks).astype(np.int32) if face_blocks else np.zeros((0, 3), np.int32)
    return oriented(vertices, faces)
