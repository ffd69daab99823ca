"""Analytic geometry: a sphere or z-cylinder vessel whose wall carries PMT photocathode patches.

Traced exactly (no triangles) by the NumPy reference engine and the Warp engine's analytic mode. A
photocathode is the part of the wall inside a cylinder of radius ``radius`` around the PMT axis
(``position``, inward ``normal``): on a sphere a spherical cap whose rim has radius ``radius``, on a
flat end cap a disk. :class:`PMTLookup` turns a point on the wall into the channel whose
photocathode contains it, exactly and cheaply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from charon.errors import DetectorError

F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]

#: Distance (mm) within which a PMT centre must lie on the vessel wall, and normal tolerance.
PLACEMENT_TOLERANCE_MM = 1e-3
NORMAL_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Vessel:
    """The detector volume, centred on the origin: a sphere, or a cylinder along z.

    ``surface`` names the optical surface covering the whole wall (outside the photocathodes);
    ``None`` means a bare dielectric boundary (Fresnel) between ``inner_material`` and
    ``outer_material``. Photons that cross into the outer material leave the detector (NO_HIT).
    """

    shape: Literal["sphere", "cylinder"]
    radius: float
    inner_material: str
    outer_material: str
    surface: str | None = None
    half_height: float | None = None

    def __post_init__(self) -> None:
        if self.shape not in ("sphere", "cylinder"):
            raise DetectorError(f"vessel shape must be 'sphere' or 'cylinder', got {self.shape!r}")
        if not (math.isfinite(self.radius) and self.radius > 0):
            raise DetectorError(f"vessel radius must be a finite number > 0 mm, got {self.radius!r}")
        if self.shape == "cylinder":
            if self.half_height is None or not (math.isfinite(self.half_height) and self.half_height > 0):
                raise DetectorError("cylinder vessel needs a finite half_height > 0 mm")
        elif self.half_height is not None:
            raise DetectorError("sphere vessel takes no half_height")

    def canonical(self) -> dict[str, Any]:
        return {"shape": self.shape, "radius": float(self.radius),
                "half_height": None if self.half_height is None else float(self.half_height),
                "inner_material": self.inner_material, "outer_material": self.outer_material,
                "surface": self.surface}

    def wall_normal(self, points: F64) -> F64:
        """Outward unit normal of the wall at ``points`` (N, 3) lying on it."""
        p = np.asarray(points, dtype=np.float64)
        if self.shape == "sphere":
            return np.asarray(p / np.sqrt(np.einsum("ij,ij->i", p, p))[:, None], dtype=np.float64)
        assert self.half_height is not None
        rho = np.hypot(p[:, 0], p[:, 1])
        on_cap = np.abs(p[:, 2]) - self.half_height >= rho - self.radius
        out = np.zeros_like(p)
        out[:, 0] = np.where(on_cap, 0.0, p[:, 0] / np.where(rho > 0, rho, 1.0))
        out[:, 1] = np.where(on_cap, 0.0, p[:, 1] / np.where(rho > 0, rho, 1.0))
        out[:, 2] = np.where(on_cap, np.sign(p[:, 2]), 0.0)
        return out

    def distance_to_wall(self, points: F64) -> F64:
        """Signed distance of ``points`` from the wall (> 0 outside), exact for the sphere."""
        p = np.asarray(points, dtype=np.float64)
        if self.shape == "sphere":
            return np.asarray(np.sqrt(np.einsum("ij,ij->i", p, p)) - self.radius, dtype=np.float64)
        assert self.half_height is not None
        d_side = np.hypot(p[:, 0], p[:, 1]) - self.radius
        d_cap = np.abs(p[:, 2]) - self.half_height
        return np.asarray(np.maximum(d_side, d_cap))


@dataclass(frozen=True, eq=False)
class PMTArray:
    """The PMTs (channels), indexed by channel id.

    ``positions`` (P, 3) mm: photocathode centres on the vessel wall; ``normals`` (P, 3): inward
    unit normals of the wall there; ``radius`` (mm): photocathode aperture radius; ``shape``:
    "cap" (the patch follows the wall: a spherical cap on a sphere) or "disk" (a flat disk, which
    the analytic geometry allows only on a flat wall, where it equals the patch).
    """

    positions: F64
    normals: F64
    radius: float
    surface: str
    channel_type: I32
    shape: Literal["cap", "disk"] = "cap"

    def __post_init__(self) -> None:
        pos = np.array(self.positions, dtype=np.float64, copy=True)
        nrm = np.array(self.normals, dtype=np.float64, copy=True)
        typ = np.array(self.channel_type, copy=True)
        if pos.ndim != 2 or pos.shape[1] != 3 or nrm.shape != pos.shape:
            raise DetectorError(f"PMT positions and normals must both be (P, 3) arrays, got {pos.shape} "
                                f"and {nrm.shape}")
        if pos.shape[0] == 0:
            raise DetectorError("a detector needs at least one PMT")
        if typ.shape != (pos.shape[0],) or not np.issubdtype(typ.dtype, np.integer):
            raise DetectorError(f"PMT channel_type must be {pos.shape[0]} integers")
        if np.any(typ < -(2**31)) or np.any(typ >= 2**31):
            raise DetectorError("PMT channel_type must fit in int32")
        if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(nrm))):
            raise DetectorError("PMT positions and normals must be finite")
        if np.any(np.abs(np.linalg.norm(nrm, axis=1) - 1.0) > NORMAL_TOLERANCE):
            raise DetectorError("PMT normals must be unit vectors")
        if not (math.isfinite(self.radius) and self.radius > 0):
            raise DetectorError(f"PMT radius must be a finite number > 0 mm, got {self.radius!r}")
        if self.shape not in ("cap", "disk"):
            raise DetectorError(f"PMT shape must be 'cap' or 'disk', got {self.shape!r}")
        for a in (pos, nrm):
            a.flags.writeable = False
        typ = typ.astype(np.int32)
        typ.flags.writeable = False
        object.__setattr__(self, "positions", pos)
        object.__setattr__(self, "normals", nrm)
        object.__setattr__(self, "channel_type", typ)

    def __len__(self) -> int:
        return int(self.positions.shape[0])


def _patch_max_depth(vessel: Vessel, radius: float) -> float:
    """Largest depth (along the PMT normal) of a photocathode patch of ``radius`` below its centre."""
    if radius >= vessel.radius:
        return math.inf
    return vessel.radius - math.sqrt(vessel.radius**2 - radius**2)


def check_pmt_placement(vessel: Vessel, pmts: PMTArray) -> None:
    """Every photocathode lies on the wall, faces inward, fits the wall and touches no other."""
    pos, nrm, r = pmts.positions, pmts.normals, pmts.radius
    if r >= 0.5 * vessel.radius:
        raise DetectorError(f"PMT radius {r} mm is too large for a vessel of radius {vessel.radius} mm")
    off = np.abs(vessel.distance_to_wall(pos))
    if np.any(off > PLACEMENT_TOLERANCE_MM):
        k = int(np.argmax(off))
        raise DetectorError(f"PMT {k} lies {off[k]:.3g} mm off the vessel wall (allowed "
                            f"{PLACEMENT_TOLERANCE_MM} mm)")
    inward = -vessel.wall_normal(pos)
    dev = np.linalg.norm(nrm - inward, axis=1)
    if np.any(dev > 1e-4):
        k = int(np.argmax(dev))
        raise DetectorError(f"PMT {k} normal is not the inward wall normal there")
    if vessel.shape == "cylinder":
        _check_cylinder_fit(vessel, pmts)
    elif pmts.shape == "disk":
        raise DetectorError("disk photocathodes need a flat wall; on a sphere use shape 'cap'")
    _check_no_overlap(vessel, pmts)


def _check_cylinder_fit(vessel: Vessel, pmts: PMTArray) -> None:
    assert vessel.half_height is not None
    pos, r = pmts.positions, pmts.radius
    on_cap = np.abs(pmts.normals[:, 2]) > 0.5
    if pmts.shape == "disk" and not np.all(on_cap):
        raise DetectorError("disk photocathodes need a flat wall: put them on the cylinder end caps "
                            "or use shape 'cap'")
    side = ~on_cap
    if np.any(np.abs(pos[side, 2]) + r > vessel.half_height):
        raise DetectorError("a barrel photocathode reaches over the cylinder edge")
    if np.any(np.hypot(pos[on_cap, 0], pos[on_cap, 1]) + r > vessel.radius):
        raise DetectorError("an end-cap photocathode reaches over the cylinder edge")


def _check_no_overlap(vessel: Vessel, pmts: PMTArray) -> None:
    """Photocathodes must not overlap, so that a wall point belongs to at most one channel."""
    pos, r = pmts.positions, pmts.radius
    angular = vessel.shape == "sphere"
    if angular:
        u = pos / np.linalg.norm(pos, axis=1, keepdims=True)
        min_cos = math.cos(2.0 * math.asin(r / vessel.radius))
    else:
        u = pos
        min_sep = 2.0 * math.hypot(r, _patch_max_depth(vessel, r))
    block = 512
    for start in range(0, len(pmts), block):
        a = u[start:start + block]
        diagonal = (np.arange(a.shape[0]), np.arange(start, start + a.shape[0]))
        if angular:
            c = a @ u.T
            c[diagonal] = -1.0
            bad = np.argwhere(c > min_cos + 1e-12)
        else:
            d2 = ((a[:, None, :] - u[None, :, :]) ** 2).sum(axis=2)
            d2[diagonal] = np.inf
            bad = np.argwhere(d2 < min_sep**2)
        if bad.size:
            i, j = int(bad[0, 0]) + start, int(bad[0, 1])
            raise DetectorError(f"photocathodes of PMTs {i} and {j} overlap")


# --------------------------------------------------------------------------------------- lookup


@dataclass(frozen=True, eq=False)
class PMTLookup:
    """Hit point on the wall -> channel id, or -1 where the point is on no photocathode.

    A coarse grid over the direction of the point seen from the origin, (cos theta, phi) with
    ``n_u`` x ``n_phi`` equal-area cells, lists every PMT whose photocathode can reach into each
    cell (``candidates``, padded with -1). ``find`` then checks exactly, for each candidate, that
    the point lies within ``radius`` of the PMT axis and within ``max_depth`` of its centre along
    the normal; photocathodes do not overlap, so at most one candidate passes.
    """

    n_u: int
    n_phi: int
    candidates: I32  # (n_u * n_phi, K)
    #: Per cell: the channel whose photocathode covers the whole cell, -1 where no photocathode
    #: reaches into it, -2 where the exact check must decide.
    settled: I32
    positions: F64
    normals: F64
    radius: float
    max_depth: float

    @classmethod
    def build(cls, vessel: Vessel, pmts: PMTArray, cells_per_pmt: int = 160) -> PMTLookup:
        pos = pmts.positions
        p = len(pmts)
        n_u = max(8, int(math.sqrt(cells_per_pmt * p / 2.0)))
        n_phi = 2 * n_u
        r = pmts.radius
        depth = _patch_max_depth(vessel, r)
        dist = np.linalg.norm(pos, axis=1)
        # Every patch point lies within rho of its centre, hence within angle `ang` of the centre's
        # direction seen from the origin.
        rho = math.hypot(r, depth)
        ang = np.where(dist > rho, np.arcsin(np.clip(rho / np.maximum(dist, rho), 0.0, 1.0)) + 1e-9, math.pi)
        theta = np.arccos(np.clip(pos[:, 2] / dist, -1.0, 1.0))
        phi = np.arctan2(pos[:, 1], pos[:, 0])
        th_lo = np.maximum(theta - ang, 0.0)
        th_hi = np.minimum(theta + ang, math.pi)
        i_lo = np.clip(np.floor((np.cos(th_hi) + 1.0) * 0.5 * n_u).astype(np.int64) - 1, 0, n_u - 1)
        i_hi = np.clip(np.floor((np.cos(th_lo) + 1.0) * 0.5 * n_u).astype(np.int64) + 1, 0, n_u - 1)
        # Azimuthal half-width of the cone: asin(sin(ang) / sin(theta)) at its widest row; a cone
        # reaching a pole covers every phi.
        sin_min = np.sin(np.minimum(th_lo, math.pi - th_hi))
        full = (th_lo <= 0.0) | (th_hi >= math.pi) | (np.sin(ang) >= sin_min)
        half = np.arcsin(np.clip(np.sin(ang) / np.where(full, 1.0, sin_min), -1.0, 1.0))
        cell_w = 2.0 * math.pi / n_phi
        j_lo = np.floor((phi - half + math.pi) / cell_w).astype(np.int64) - 1
        j_hi = np.floor((phi + half + math.pi) / cell_w).astype(np.int64) + 1
        full |= (j_hi - j_lo + 1) >= n_phi
        j_lo = np.where(full, 0, j_lo)
        j_hi = np.where(full, n_phi - 1, j_hi)
        cells: list[npt.NDArray[np.int64]] = []
        owners: list[npt.NDArray[np.int64]] = []
        for k in range(p):
            ii = np.arange(i_lo[k], i_hi[k] + 1)
            jj = np.arange(j_lo[k], j_hi[k] + 1) % n_phi
            c = (ii[:, None] * n_phi + jj[None, :]).reshape(-1)
            cells.append(c)
            owners.append(np.full(c.shape[0], k, dtype=np.int64))
        cell = np.concatenate(cells)
        owner = np.concatenate(owners)
        if vessel.shape == "sphere":
            # Drop candidates whose cap misses the cell: the point of a (theta, phi) cell nearest an
            # axis is at the clamped azimuth difference and the clamped optimal polar angle.
            alpha = math.asin(r / vessel.radius)
            ci, cj = np.divmod(cell, n_phi)
            t_hi = np.arccos(np.clip(ci * (2.0 / n_u) - 1.0, -1.0, 1.0))
            t_lo = np.arccos(np.clip((ci + 1) * (2.0 / n_u) - 1.0, -1.0, 1.0))
            ph_lo = cj * cell_w - math.pi
            dphi = np.mod(phi[owner] - ph_lo, 2.0 * math.pi)
            dmin = np.where(dphi <= cell_w, 0.0, np.minimum(dphi - cell_w, 2.0 * math.pi - dphi))
            a_coef = np.cos(theta[owner])
            b_coef = np.sin(theta[owner]) * np.cos(np.minimum(dmin, math.pi))
            # A cos(t) + B sin(t) = R cos(t - t*): its maximum on [t_lo, t_hi] is at t* when t* lies
            # inside, else at an end.
            t_star = np.arctan2(b_coef, a_coef)
            nearest = np.maximum(a_coef * np.cos(t_lo) + b_coef * np.sin(t_lo),
                                 a_coef * np.cos(t_hi) + b_coef * np.sin(t_hi))
            nearest = np.where((t_star >= t_lo) & (t_star <= t_hi), np.hypot(a_coef, b_coef), nearest)
            reach = nearest >= math.cos(alpha + 1e-9)
            cell, owner = cell[reach], owner[reach]
        # Within a cell, try first the PMT whose centre is nearest the cell centre.
        ci, cj = np.divmod(cell, n_phi)
        cu = (ci + 0.5) * (2.0 / n_u) - 1.0
        cphi = (cj + 0.5) * cell_w - math.pi
        cs = np.sqrt(np.maximum(0.0, 1.0 - cu * cu))
        cdir = np.stack([cs * np.cos(cphi), cs * np.sin(cphi), cu], axis=1)
        closeness = -(cdir * (pos[owner] / dist[owner, None])).sum(axis=1)
        order = np.lexsort((owner, closeness, cell))
        cell, owner = cell[order], owner[order]
        keep = np.ones(cell.shape[0], dtype=bool)
        keep[1:] = (cell[1:] != cell[:-1]) | (owner[1:] != owner[:-1])
        cell, owner = cell[keep], owner[keep]
        first = np.searchsorted(cell, cell, side="left")
        rank = np.arange(cell.shape[0]) - first
        width = int(rank.max()) + 1 if rank.size else 1
        cand = np.full((n_u * n_phi, width), -1, dtype=np.int32)
        cand[cell, rank] = owner
        cand.flags.writeable = False
        settled = np.where(cand[:, 0] < 0, -1, -2).astype(np.int32)
        if vessel.shape == "sphere":
            # On a sphere a photocathode is the cap of half-angle alpha around its axis; the point of
            # a (theta, phi) cell farthest from any axis is one of the cell's corners, so a cell whose
            # four corners lie within alpha is covered entirely (tiny margin for rounding).
            cos_alpha = math.cos(math.asin(r / vessel.radius) - 1e-9)
            ci, cj = np.divmod(cell, n_phi)
            axis = pos[owner] / dist[owner, None]
            inside = np.ones(cell.shape[0], dtype=bool)
            for di in (0, 1):
                cu = np.clip((ci + di) * (2.0 / n_u) - 1.0, -1.0, 1.0)
                sn = np.sqrt(np.maximum(0.0, 1.0 - cu * cu))
                for dj in (0, 1):
                    ph = (cj + dj) * cell_w - math.pi
                    corner = np.stack([sn * np.cos(ph), sn * np.sin(ph), cu], axis=1)
                    inside &= np.einsum("ij,ij->i", corner, axis) >= cos_alpha
            settled[cell[inside]] = owner[inside]
        settled.flags.writeable = False
        return cls(n_u, n_phi, cand, settled, pos, pmts.normals, r, depth)

    def _cells(self, x: F64, y: F64, z: F64) -> npt.NDArray[np.intp]:
        norm = np.sqrt(x * x + y * y + z * z)
        norm[norm == 0] = 1.0
        i = np.clip(((z / norm + 1.0) * (0.5 * self.n_u)).astype(np.intp), 0, self.n_u - 1)
        phi = np.arctan2(y, x)
        j = np.clip(((phi + math.pi) * (self.n_phi / (2.0 * math.pi))).astype(np.intp), 0, self.n_phi - 1)
        return np.asarray(i * self.n_phi + j)

    def on_photocathode(self, x: F64, y: F64, z: F64, channel: npt.NDArray[np.integer[Any]]
                        ) -> npt.NDArray[np.bool_]:
        """The exact test: does each point (x, y, z) lie on the photocathode of the paired channel?"""
        c = self.positions[channel]
        n = self.normals[channel]
        vx, vy, vz = x - c[:, 0], y - c[:, 1], z - c[:, 2]
        depth = vx * n[:, 0] + vy * n[:, 1] + vz * n[:, 2]
        lateral2 = vx * vx + vy * vy + vz * vz - depth * depth
        return np.asarray((lateral2 <= self.radius * self.radius)
                          & (np.abs(depth) <= self.max_depth + PLACEMENT_TOLERANCE_MM))

    def find(self, points: F64) -> I32:
        """Channel id of the photocathode each point (N, 3) on the wall lies on, else -1."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        return self.find_xyz(p[:, 0], p[:, 1], p[:, 2])

    def find_xyz(self, x: F64, y: F64, z: F64) -> I32:
        """``find`` for points given as three coordinate arrays."""
        cells = self._cells(x, y, z)
        out = self.settled[cells].copy()
        idx = np.flatnonzero(out == -2)
        out[idx] = -1
        cells = cells[idx]
        for col in range(self.candidates.shape[1]):
            if idx.size == 0:
                break
            k = self.candidates[cells, col]
            valid = k >= 0
            if not np.all(valid):
                idx, cells, k = idx[valid], cells[valid], k[valid]
            on = self.on_photocathode(x[idx], y[idx], z[idx], k)
            out[idx[on]] = k[on]
            miss = ~on
            idx, cells = idx[miss], cells[miss]
        return out
