"""The NumPy reference photon engine (``--backend numpy``).

Propagates optical photons through an analytic detector (``charon.engine.detector``) with Chroma's
physics and flags, vectorised over the photons still alive: each loop iteration is one step for
every live photon. It runs anywhere numpy does and is the reference the compiled engines are tested
against, so clarity wins over speed where they conflict. The model is described in docs/physics.md.

Reproducibility: every random number a photon uses is ``optics.uniform(key, counter)`` with its key
from (seed, event id, photon index) and ``counter = (step + 1) * DRAWS_PER_STEP + slot`` (step -1 =
set-up), so a photon's history does not depend on what else is in the batch or chunk.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from charon.engine import optics
from charon.engine.base import DetectorInfo, Hits, Photons
from charon.engine.detector import Detector, Material, Surface, WavelengthTable
from charon.protocol import tokens
from charon.protocol.tokens import TERMINAL_FLAGS, Flag

F64 = npt.NDArray[np.float64]
U32 = npt.NDArray[np.uint32]

#: Random-number slots per step (and for the set-up before step 0).
DRAWS_PER_STEP: Final = 8
# Slot numbers within a step.
SLOT_ABSORB: Final = 0      # absorption distance
SLOT_SCATTER: Final = 1     # Rayleigh distance
SLOT_CHOICE: Final = 2      # reemission yes/no, or which surface process
SLOT_A: Final = 3           # process-specific draws
SLOT_B: Final = 4
SLOT_C: Final = 5
SLOT_D: Final = 6
SLOT_E: Final = 7
# Set-up slots (step -1).
SLOT_INIT_POL: Final = 0

_TERMINAL: Final = np.uint32(int(TERMINAL_FLAGS))
_U = {f: np.uint32(int(f)) for f in Flag}


@dataclass(frozen=True)
class _Optics:
    """A material's tables, with flat ones reduced to constants (the common case, and much faster)."""

    n: WavelengthTable
    absorption: WavelengthTable
    scattering: WavelengthTable
    reemission: WavelengthTable
    material: Material

    @classmethod
    def of(cls, m: Material) -> _Optics:
        return cls(m.refractive_index, m.absorption_length, m.scattering_length, m.reemission_prob, m)


@dataclass(frozen=True, eq=False)
class Outcome:
    """What happened to every photon of a propagated chunk."""

    flags: U32                          # final history bits of every photon
    channel: npt.NDArray[np.int32]      # photocathode channel where detected, else -1
    hit_rows: npt.NDArray[np.intp]      # photon row of each hit
    hits: Hits                          # detected photons, in detection order


def _at(table: WavelengthTable, wl: F64) -> F64 | float:
    return float(table.value[0]) if table.is_flat else table(wl)


class NumpySimulator:
    """Simulator protocol implementation on numpy, float64 internally.

    ``chunk_photons`` bounds memory: a batch is propagated that many photons at a time (results do
    not depend on it).
    """

    name = "numpy"

    def __init__(self, detector: Detector, *, seed: int, max_steps: int,
                 chunk_photons: int = 1_000_000) -> None:
        if max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        if chunk_photons < 1:
            raise ValueError("chunk_photons must be >= 1")
        self.detector = detector
        self.seed = int(seed)
        self.max_steps = int(max_steps)
        self.chunk_photons = int(chunk_photons)
        self._info = detector.info()
        self._lookup = detector.lookup
        v = detector.vessel
        self._inner = _Optics.of(detector.materials[v.inner_material])
        self._outer = _Optics.of(detector.materials[v.outer_material])
        self._wall: Surface | None = None if v.surface is None else detector.surfaces[v.surface]
        self._cathode: Surface = detector.surfaces[detector.pmts.surface]

    @property
    def fingerprint(self) -> str:
        return self.detector.fingerprint

    def detector_info(self) -> DetectorInfo:
        return self._info

    # ------------------------------------------------------------------------------- driver

    def simulate(self, batch: Sequence[Photons]) -> list[Hits]:
        """Hits of every event in ``batch``, in order; hits within an event by photon index."""
        results: list[list[Hits]] = [[] for _ in batch]
        # Work list of (event position in batch, first photon, end) pieces, at most chunk_photons each.
        pending: list[tuple[int, int, int]] = []
        budget = 0
        for ev, photons in enumerate(batch):
            n = len(photons)
            start = 0
            while start < n:
                take = min(n - start, self.chunk_photons - budget)
                pending.append((ev, start, start + take))
                budget += take
                start += take
                if budget >= self.chunk_photons:
                    self._run_chunk(batch, pending, results)
                    pending, budget = [], 0
        if pending:
            self._run_chunk(batch, pending, results)
        return [Hits.concatenate(parts) if parts else Hits.empty() for parts in results]

    def _run_chunk(self, batch: Sequence[Photons], pieces: list[tuple[int, int, int]],
                   results: list[list[Hits]]) -> None:
        cols = {name: np.concatenate([np.asarray(getattr(batch[ev], name))[a:b] for ev, a, b in pieces])
                for name in tokens.PHOTON_FIELDS}
        keys = np.concatenate([optics.photon_keys(self.seed, batch[ev].event_id, np.arange(a, b))
                               for ev, a, b in pieces])
        state = self.propagate(cols, keys)
        order = np.argsort(state.hit_rows, kind="stable")
        rows = state.hit_rows[order]
        hits = state.hits.take(order)
        offset = 0
        for ev, a, b in pieces:
            lo, hi = np.searchsorted(rows, [offset, offset + (b - a)])
            if hi > lo:
                results[ev].append(hits.take(slice(int(lo), int(hi))))
            offset += b - a

    def propagate(self, cols: Mapping[str, npt.ArrayLike], keys: npt.NDArray[np.uint64]) -> Outcome:
        """Propagate photons given as the twelve PHOTONDATA columns, with their random keys.

        Returns the hits (in detection order, with the photon row of each) and every photon's final
        flags and channel (-1 unless detected on a photocathode).
        """
        n_all = keys.shape[0]
        flags = np.array(cols["flags"], dtype=np.uint32).reshape(-1)
        channel = np.full(n_all, -1, dtype=np.int32)
        hit_parts: list[tuple[npt.NDArray[np.intp], Hits]] = []
        if n_all == 0:
            return Outcome(flags, channel, np.zeros(0, np.intp), Hits.empty())
        pos = np.stack([np.asarray(cols[k], dtype=np.float64) for k in ("x", "y", "z")], axis=1)
        d = np.stack([np.asarray(cols[k], dtype=np.float64) for k in ("dx", "dy", "dz")], axis=1)
        pol = np.stack([np.asarray(cols[k], dtype=np.float64) for k in ("polx", "poly", "polz")], axis=1)
        wl = np.asarray(cols["wavelength"], dtype=np.float64)
        t = np.asarray(cols["time"], dtype=np.float64)

        # Set-up: terminal input stays as it is; non-finite input is aborted.
        dnorm2 = optics.dot(d, d)
        finite = np.isfinite(optics.dot(pos, pos) + dnorm2 + optics.dot(pol, pol) + wl + t) & (dnorm2 > 0)
        live = (flags & _TERMINAL) == 0
        flags[live & ~finite] |= _U[Flag.NAN_ABORT]
        live &= finite
        # Photons starting outside the vessel are in the untraced outer world.
        idx = np.flatnonzero(live)
        vessel = self.detector.vessel
        outside = vessel.distance_to_wall(pos[idx]) > 1e-6 * vessel.radius
        flags[idx[outside]] |= _U[Flag.NO_HIT]
        idx = idx[~outside]

        p = pos[idx]
        dd = d[idx] / np.sqrt(dnorm2[idx])[:, None]
        kk = keys[idx]
        ee = optics.transverse_polarization(dd, pol[idx], optics.uniform(kk, SLOT_INIT_POL))
        w = wl[idx]
        tt = t[idx]
        fl = flags[idx]

        inner = self._inner
        c = optics.SPEED_OF_LIGHT_MM_PER_NS
        for step in range(self.max_steps):
            if idx.size == 0:
                break
            base = (step + 1) * DRAWS_PER_STEP
            n1 = _at(inner.n, w)
            d_wall = self._distance_to_wall(p, dd)
            d_abs = optics.exponential(optics.uniform(kk, base + SLOT_ABSORB), _at(inner.absorption, w))
            d_sca = optics.exponential(optics.uniform(kk, base + SLOT_SCATTER), _at(inner.scattering, w))
            absorbed = (d_abs <= d_sca) & (d_abs <= d_wall)
            scattered = ~absorbed & (d_sca <= d_wall)
            at_wall = ~(absorbed | scattered)
            dist = np.minimum(np.minimum(d_abs, d_sca), d_wall)
            p = p + dist[:, None] * dd
            tt = tt + dist * (np.asarray(n1) / c)
            done = np.zeros(idx.shape[0], dtype=bool)

            if np.any(absorbed):
                a = np.flatnonzero(absorbed)
                reemit = np.zeros(a.shape[0], dtype=bool)
                if inner.material.reemits:
                    u = optics.uniform(kk[a], base + SLOT_CHOICE)
                    reemit = u < _at(inner.reemission, w[a])
                if np.any(reemit):
                    r = a[reemit]
                    kr = kk[r]
                    cdf = inner.material.reemission_cdf
                    assert cdf is not None
                    w[r] = optics.sample_cdf(optics.uniform(kr, base + SLOT_A), cdf.wavelength, cdf.value)
                    dd[r] = optics.isotropic(optics.uniform(kr, base + SLOT_B), optics.uniform(kr, base + SLOT_C))
                    ee[r] = optics.random_perpendicular(dd[r], optics.uniform(kr, base + SLOT_D))
                    tau = inner.material.reemission_time_ns
                    if tau > 0:
                        tt[r] += optics.exponential(optics.uniform(kr, base + SLOT_E), tau)
                    fl[r] |= _U[Flag.BULK_REEMIT]
                gone = a[~reemit]
                fl[gone] |= _U[Flag.BULK_ABSORB]
                done[gone] = True

            if np.any(scattered):
                s = np.flatnonzero(scattered)
                ks = kk[s]
                dd[s], ee[s] = optics.rayleigh_scatter(dd[s], ee[s], optics.uniform(ks, base + SLOT_A),
                                                       optics.uniform(ks, base + SLOT_B))
                fl[s] |= _U[Flag.RAYLEIGH_SCATTER]

            if np.any(at_wall):
                wsel = np.flatnonzero(at_wall)
                hit_channel = self._wall_step(wsel, p, dd, ee, w, fl, kk, done, base)
                det = hit_channel >= 0
                if np.any(det):
                    r = wsel[det]
                    rows = idx[r]
                    channel[rows] = hit_channel[det]
                    def f32(a: F64) -> npt.NDArray[np.float32]:
                        return np.ascontiguousarray(a, dtype=np.float32)

                    hit_parts.append((rows, Hits(
                        channel=hit_channel[det].astype(np.uint32), dx=f32(dd[r, 0]), dy=f32(dd[r, 1]),
                        dz=f32(dd[r, 2]), polx=f32(ee[r, 0]), poly=f32(ee[r, 1]), polz=f32(ee[r, 2]),
                        wavelength=f32(w[r]), time=f32(tt[r]), flags=fl[r].copy())))

            bad = ~np.isfinite(p[:, 0] + p[:, 1] + p[:, 2] + dd[:, 0] + tt)
            if np.any(bad):
                fl[bad & ~done] |= _U[Flag.NAN_ABORT]
                done |= bad

            if np.any(done):
                flags[idx[done]] = fl[done]
                keep = np.flatnonzero(~done)
                idx, p, dd, ee, w, tt, fl, kk = (idx[keep], p[keep], dd[keep], ee[keep], w[keep], tt[keep],
                                                 fl[keep], kk[keep])

        if idx.size:
            flags[idx] = fl | _U[Flag.NO_HIT]
        if hit_parts:
            rows_all = np.concatenate([r for r, _ in hit_parts])
            return Outcome(flags, channel, rows_all, Hits.concatenate([h for _, h in hit_parts]))
        return Outcome(flags, channel, np.zeros(0, np.intp), Hits.empty())

    def _wall_step(self, wsel: npt.NDArray[np.intp], p: F64, dd: F64, ee: F64, w: F64, fl: U32,
                   kk: npt.NDArray[np.uint64], done: npt.NDArray[np.bool_], base: int) -> npt.NDArray[np.int32]:
        """Surface interaction of the photons ``wsel`` that reached the wall (arrays updated in place).

        Returns, per photon in ``wsel``, the channel where it was detected on a photocathode, else -1.
        """
        pw = p[wsel]
        ch = self._lookup.find(pw)
        result = np.full(wsel.shape[0], -1, dtype=np.int32)
        inward_cache: list[F64] = []

        def inward(sel: npt.NDArray[np.bool_]) -> F64:
            if not inward_cache:
                inward_cache.append(-self.detector.vessel.wall_normal(pw))
            return inward_cache[0][sel]

        u = optics.uniform(kk[wsel], base + SLOT_CHOICE)
        fresnel = np.zeros(wsel.shape[0], dtype=bool)
        groups: list[tuple[npt.NDArray[np.bool_], Surface | None]] = [(ch >= 0, self._cathode),
                                                                      (ch < 0, self._wall)]
        for sel, surface in groups:
            if not np.any(sel):
                continue
            if surface is None:
                fresnel |= sel
                continue
            wl = w[wsel]
            absorb = _at(surface.absorb, wl)
            detect = _at(surface.detect, wl)
            diffuse = _at(surface.reflect_diffuse, wl)
            specular = _at(surface.reflect_specular, wl)
            c1 = np.asarray(absorb) + 0.0 * u
            c2 = c1 + detect
            c3 = c2 + diffuse
            c4 = c3 + specular
            is_abs = sel & (u < c1)
            is_det = sel & ~is_abs & (u < c2)
            is_dif = sel & ~(is_abs | is_det) & (u < c3)
            is_spe = sel & ~(is_abs | is_det | is_dif) & (u < c4)
            fresnel |= sel & ~(is_abs | is_det | is_dif | is_spe)
            fl[wsel[is_abs]] |= _U[Flag.SURFACE_ABSORB]
            done[wsel[is_abs]] = True
            fl[wsel[is_det]] |= _U[Flag.SURFACE_DETECT]
            done[wsel[is_det]] = True
            result[is_det] = ch[is_det]  # -1 where a detecting wall is no photocathode: no hit
            if np.any(is_dif):
                r = wsel[is_dif]
                kr = kk[r]
                dd[r], ee[r] = optics.lambertian(inward(is_dif), optics.uniform(kr, base + SLOT_A),
                                                 optics.uniform(kr, base + SLOT_B),
                                                 optics.uniform(kr, base + SLOT_C))
                fl[r] |= _U[Flag.REFLECT_DIFFUSE]
            if np.any(is_spe):
                r = wsel[is_spe]
                dd[r], ee[r] = optics.specular_reflect(dd[r], ee[r], inward(is_spe))
                fl[r] |= _U[Flag.REFLECT_SPECULAR]
        if np.any(fresnel):
            r = wsel[fresnel]
            kr = kk[r]
            new_d, new_e, reflected = optics.fresnel(
                dd[r], ee[r], inward(fresnel), _at(self._inner.n, w[r]), _at(self._outer.n, w[r]),
                optics.uniform(kr, base + SLOT_D), optics.uniform(kr, base + SLOT_E))
            dd[r], ee[r] = new_d, new_e
            fl[r[reflected]] |= _U[Flag.REFLECT_SPECULAR]
            # Transmitted photons enter the untraced outer world.
            fl[r[~reflected]] |= _U[Flag.NO_HIT]
            done[r[~reflected]] = True
        # A detection without a channel (detecting wall) is terminal and is no hit.
        return result

    def _distance_to_wall(self, p: F64, d: F64) -> F64:
        """Distance along ``d`` from ``p`` (inside or on the wall) to where the photon leaves the vessel."""
        v = self.detector.vessel
        if v.shape == "sphere":
            b = optics.dot(p, d)
            cc = optics.dot(p, p) - v.radius * v.radius
            return np.asarray(np.maximum(-b + np.sqrt(np.maximum(b * b - cc, 0.0)), 0.0))
        assert v.half_height is not None
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        b = p[:, 0] * d[:, 0] + p[:, 1] * d[:, 1]
        cc = p[:, 0] ** 2 + p[:, 1] ** 2 - v.radius * v.radius
        with np.errstate(divide="ignore", invalid="ignore"):
            t_side = np.where(a > 0, (-b + np.sqrt(np.maximum(b * b - a * cc, 0.0))) / a, math.inf)
            t_cap = np.where(d[:, 2] > 0, (v.half_height - p[:, 2]) / d[:, 2],
                             np.where(d[:, 2] < 0, (-v.half_height - p[:, 2]) / d[:, 2], math.inf))
        return np.asarray(np.maximum(np.minimum(t_side, t_cap), 0.0))
