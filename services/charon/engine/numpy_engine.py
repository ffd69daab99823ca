"""The NumPy reference photon engine (``--backend numpy``).

Propagates optical photons through an analytic detector (``charon.engine.detector``) with Chroma's
physics and flags, vectorised over the photons still alive: each loop iteration is one step for
every live photon. It runs anywhere numpy does and is the reference the compiled engines are tested
against, so clarity wins over speed where they conflict. The model is described in docs/physics.md.

Reproducibility: every random number a photon uses is ``optics.uniform(key, counter)`` with its key
from (seed, event id and digest, photon index) and ``counter = (step + 1) * DRAWS_PER_STEP + slot`` (step -1 =
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
from charon.errors import ConfigError
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
    """The tables of the material a photon is in (``_at`` reads flat ones as plain constants)."""

    n: WavelengthTable
    absorption: WavelengthTable
    scattering: WavelengthTable
    reemission: WavelengthTable
    group_velocity: WavelengthTable
    material: Material

    @classmethod
    def of(cls, m: Material) -> _Optics:
        assert m.refractive_index is not None  # the analytic detector's materials always have one
        return cls(m.refractive_index, m.absorption_length, m.scattering_length, m.reemission_prob,
                   m.effective_group_velocity, m)


@dataclass(frozen=True)
class _SurfaceOptics:
    """A surface's tables in the order they are drawn, and whether it absorbs everything."""

    absorb: WavelengthTable
    detect: WavelengthTable
    diffuse: WavelengthTable
    specular: WavelengthTable
    transmit: WavelengthTable
    #: dielectric_metal: the remainder is absorbed instead of going to Fresnel.
    metal: bool
    always_absorbs: bool

    @classmethod
    def of(cls, s: Surface) -> _SurfaceOptics:
        return cls(s.absorb, s.detect, s.reflect_diffuse, s.reflect_specular, s.transmit,
                   s.model == "dielectric_metal", bool(np.all(s.absorb.value >= 1.0)))


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
    not depend on it; about 250k keeps the working set in cache and is fastest).
    """

    name = "numpy"

    def __init__(self, detector: Detector, *, seed: int, max_steps: int,
                 chunk_photons: int = 250_000) -> None:
        if max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        if chunk_photons < 1:
            raise ValueError("chunk_photons must be >= 1")
        if detector.vessel is None or detector.pmts is None:
            raise ConfigError("the numpy backend simulates analytic detectors (a vessel with PMTs) only; "
                              "use --backend builtin for this detector")
        self.detector = detector
        self.vessel = detector.vessel
        self.seed = int(seed)
        self.max_steps = int(max_steps)
        self.chunk_photons = int(chunk_photons)
        self._info = detector.info()
        self._lookup = detector.lookup
        v = detector.vessel
        self._inner = _Optics.of(detector.materials[v.inner_material])
        self._outer = _Optics.of(detector.materials[v.outer_material])
        self._wall = None if v.surface is None else _SurfaceOptics.of(detector.surfaces[v.surface])
        self._cathode = _SurfaceOptics.of(detector.surfaces[detector.pmts.surface])

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
        def column(name: str) -> npt.NDArray[np.generic]:
            parts = [np.asarray(getattr(batch[ev], name))[a:b] for ev, a, b in pieces]
            return parts[0] if len(parts) == 1 else np.concatenate(parts)

        cols = {name: column(name) for name in tokens.PHOTON_FIELDS}
        digests = {ev: batch[ev].digest() for ev, _, _ in pieces}
        keys = np.concatenate([optics.photon_keys(self.seed, batch[ev].event_id, np.arange(a, b), digests[ev])
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
        s = _State.from_columns(cols, keys, flags)

        # Set-up: terminal input stays as it is; non-finite input is aborted.
        with np.errstate(over="ignore", invalid="ignore"):
            dnorm2 = s.dx * s.dx + s.dy * s.dy + s.dz * s.dz
            r2 = s.x * s.x + s.y * s.y + s.z * s.z
        finite = np.logical_and.reduce([np.isfinite(getattr(s, c)) for c in (*_VEC, "w", "t")]) & (dnorm2 > 0)
        live = (flags & _TERMINAL) == 0
        flags[live & ~finite] |= _U[Flag.NAN_ABORT]
        live &= finite
        # Photons starting outside the vessel are in the untraced outer world.
        vessel = self.vessel
        if vessel.shape == "sphere":
            outside = live & (r2 > (vessel.radius * (1.0 + 1e-6)) ** 2)
        else:
            outside = np.zeros(n_all, dtype=bool)
            outside[live] = vessel.distance_to_wall(s.points(live)) > 1e-6 * vessel.radius
        flags[outside] |= _U[Flag.NO_HIT]
        live &= ~outside
        if not live.all():
            s = s.take(np.flatnonzero(live))
            dnorm2 = dnorm2[s.idx]
        inv = 1.0 / np.sqrt(dnorm2)
        s.dx *= inv
        s.dy *= inv
        s.dz *= inv
        # Same as optics.transverse_polarization, drawing only where the input polarisation is unusable.
        pd = s.ex * s.dx + s.ey * s.dy + s.ez * s.dz
        s.ex -= pd * s.dx
        s.ey -= pd * s.dy
        s.ez -= pd * s.dz
        e_norm = np.sqrt(s.ex * s.ex + s.ey * s.ey + s.ez * s.ez)
        unusable = ~(e_norm > 1e-6)
        inv = 1.0 / np.where(unusable, 1.0, e_norm)
        s.ex *= inv
        s.ey *= inv
        s.ez *= inv
        if np.any(unusable):
            s.set_pol(unusable, optics.random_perpendicular(
                s.dirs(unusable), optics.uniform(s.k[unusable], SLOT_INIT_POL)))

        inner = self._inner
        for step in range(self.max_steps):
            if s.idx.size == 0:
                break
            base = (step + 1) * DRAWS_PER_STEP
            d_wall = self._distance_to_wall(s)
            d_abs = optics.exponential(optics.uniform(s.k, base + SLOT_ABSORB), _at(inner.absorption, s.w))
            d_sca = optics.exponential(optics.uniform(s.k, base + SLOT_SCATTER), _at(inner.scattering, s.w))
            absorbed = (d_abs <= d_sca) & (d_abs <= d_wall)
            scattered = ~absorbed & (d_sca <= d_wall)
            at_wall = ~(absorbed | scattered)
            dist = np.minimum(np.minimum(d_abs, d_sca), d_wall)
            s.x += dist * s.dx
            s.y += dist * s.dy
            s.z += dist * s.dz
            s.t += dist / np.asarray(_at(inner.group_velocity, s.w))
            done = np.zeros(s.idx.shape[0], dtype=bool)

            if np.any(absorbed):
                a = np.flatnonzero(absorbed)
                reemit = np.zeros(a.shape[0], dtype=bool)
                if inner.material.reemits:
                    u = optics.uniform(s.k[a], base + SLOT_CHOICE)
                    reemit = u < _at(inner.reemission, s.w[a])
                if np.any(reemit):
                    r = a[reemit]
                    kr = s.k[r]
                    cdf = inner.material.reemission_cdf
                    assert cdf is not None
                    s.w[r] = optics.sample_cdf(optics.uniform(kr, base + SLOT_A), cdf.wavelength, cdf.value)
                    new_d = optics.isotropic(optics.uniform(kr, base + SLOT_B), optics.uniform(kr, base + SLOT_C))
                    s.set_dir(r, new_d)
                    s.set_pol(r, optics.random_perpendicular(new_d, optics.uniform(kr, base + SLOT_D)))
                    tau = inner.material.reemission_time_ns
                    if tau > 0:
                        s.t[r] += optics.exponential(optics.uniform(kr, base + SLOT_E), tau)
                    s.fl[r] |= _U[Flag.BULK_REEMIT]
                gone = a[~reemit]
                s.fl[gone] |= _U[Flag.BULK_ABSORB]
                done[gone] = True

            if np.any(scattered):
                sc = np.flatnonzero(scattered)
                ks = s.k[sc]
                new_d, new_e = optics.rayleigh_scatter(s.dirs(sc), s.pols(sc), optics.uniform(ks, base + SLOT_A),
                                                       optics.uniform(ks, base + SLOT_B))
                s.set_dir(sc, new_d)
                s.set_pol(sc, new_e)
                s.fl[sc] |= _U[Flag.RAYLEIGH_SCATTER]

            if np.any(at_wall):
                wsel = np.flatnonzero(at_wall)
                hit_channel = self._wall_step(s, wsel, done, base)
                det = hit_channel >= 0
                if np.any(det):
                    r = wsel[det]
                    rows = s.idx[r]
                    channel[rows] = hit_channel[det]
                    hit_parts.append((rows, s.hits(r, hit_channel[det])))

            bad = ~np.isfinite(s.x + s.y + s.z + s.dx + s.t)
            if np.any(bad):
                s.fl[bad & ~done] |= _U[Flag.NAN_ABORT]
                done |= bad

            if np.any(done):
                flags[s.idx[done]] = s.fl[done]
                s = s.take(np.flatnonzero(~done))

        if s.idx.size:
            flags[s.idx] = s.fl | _U[Flag.NO_HIT]
        if hit_parts:
            rows_all = np.concatenate([r for r, _ in hit_parts])
            return Outcome(flags, channel, rows_all, Hits.concatenate([h for _, h in hit_parts]))
        return Outcome(flags, channel, np.zeros(0, np.intp), Hits.empty())

    def _wall_step(self, s: _State, wsel: npt.NDArray[np.intp], done: npt.NDArray[np.bool_],
                   base: int) -> npt.NDArray[np.int32]:
        """Surface interaction of the photons ``wsel`` that reached the wall (state updated in place).

        Returns, per photon in ``wsel``, the channel where it was detected on a photocathode, else -1.
        """
        ch = self._lookup.find_xyz(s.x[wsel], s.y[wsel], s.z[wsel])
        result = np.full(wsel.shape[0], -1, dtype=np.int32)

        def inward(sel: npt.NDArray[np.bool_]) -> F64:
            return -self.vessel.wall_normal(s.points(wsel[sel]))

        u = optics.uniform(s.k[wsel], base + SLOT_CHOICE)
        fresnel = np.zeros(wsel.shape[0], dtype=bool)
        groups: list[tuple[npt.NDArray[np.bool_], _SurfaceOptics | None]] = [
            (ch >= 0, self._cathode), (ch < 0, self._wall)]
        for sel, surface in groups:
            if surface is None:
                fresnel |= sel
                continue
            g = np.flatnonzero(sel)
            if g.size == 0:
                continue
            if surface.always_absorbs:
                s.fl[wsel[g]] |= _U[Flag.SURFACE_ABSORB]
                done[wsel[g]] = True
                continue
            ug = u[g]
            wl = s.w[wsel[g]]
            # Cumulative thresholds absorb | detect | diffuse | specular | transmit | rest (Fresnel, or
            # absorbed on a metal): index 0..5.
            edge = np.asarray(_at(surface.absorb, wl))
            choice = (ug >= edge).astype(np.int8)
            for table in (surface.detect, surface.diffuse, surface.specular, surface.transmit):
                edge = edge + _at(table, wl)
                choice += ug >= edge
            gr = wsel[g]
            if surface.metal:
                choice[choice == 5] = 0
            absorbed = choice == 0
            s.fl[gr[absorbed]] |= _U[Flag.SURFACE_ABSORB]
            done[gr[absorbed]] = True
            det = choice == 1
            s.fl[gr[det]] |= _U[Flag.SURFACE_DETECT]
            done[gr[det]] = True
            # A detection off the photocathodes (a detecting wall) is terminal but is no hit.
            result[g[det]] = ch[g[det]]
            is_dif = np.zeros(wsel.shape[0], dtype=bool)
            is_dif[g[choice == 2]] = True
            if np.any(is_dif):
                r = wsel[is_dif]
                kr = s.k[r]
                new_d, new_e = optics.lambertian(inward(is_dif), optics.uniform(kr, base + SLOT_A),
                                                 optics.uniform(kr, base + SLOT_B),
                                                 optics.uniform(kr, base + SLOT_C))
                s.set_dir(r, new_d)
                s.set_pol(r, new_e)
                s.fl[r] |= _U[Flag.REFLECT_DIFFUSE]
            is_spe = np.zeros(wsel.shape[0], dtype=bool)
            is_spe[g[choice == 3]] = True
            if np.any(is_spe):
                r = wsel[is_spe]
                new_d, new_e = optics.specular_reflect(s.dirs(r), s.pols(r), inward(is_spe))
                s.set_dir(r, new_d)
                s.set_pol(r, new_e)
                s.fl[r] |= _U[Flag.REFLECT_SPECULAR]
            # Straight on into the untraced outer world.
            s.fl[gr[choice == 4]] |= _U[Flag.NO_HIT]
            done[gr[choice == 4]] = True
            fresnel[g[choice == 5]] = True
        if np.any(fresnel):
            r = wsel[fresnel]
            kr = s.k[r]
            new_d, new_e, reflected = optics.fresnel(
                s.dirs(r), s.pols(r), inward(fresnel), _at(self._inner.n, s.w[r]), _at(self._outer.n, s.w[r]),
                optics.uniform(kr, base + SLOT_D), optics.uniform(kr, base + SLOT_E))
            s.set_dir(r, new_d)
            s.set_pol(r, new_e)
            s.fl[r[reflected]] |= _U[Flag.REFLECT_SPECULAR]
            # Transmitted photons enter the untraced outer world.
            s.fl[r[~reflected]] |= _U[Flag.NO_HIT]
            done[r[~reflected]] = True
        return result

    def _distance_to_wall(self, s: _State) -> F64:
        """Distance along the direction from each point (inside or on the wall) to the wall."""
        v = self.vessel
        if v.shape == "sphere":
            b = s.x * s.dx + s.y * s.dy + s.z * s.dz
            cc = s.x * s.x + s.y * s.y + s.z * s.z - v.radius * v.radius
            return np.asarray(np.maximum(-b + np.sqrt(np.maximum(b * b - cc, 0.0)), 0.0))
        assert v.half_height is not None
        a = s.dx * s.dx + s.dy * s.dy
        b = s.x * s.dx + s.y * s.dy
        cc = s.x * s.x + s.y * s.y - v.radius * v.radius
        with np.errstate(divide="ignore", invalid="ignore"):
            t_side = np.where(a > 0, (-b + np.sqrt(np.maximum(b * b - a * cc, 0.0))) / a, math.inf)
            t_cap = np.where(s.dz > 0, (v.half_height - s.z) / s.dz,
                             np.where(s.dz < 0, (-v.half_height - s.z) / s.dz, math.inf))
        return np.asarray(np.maximum(np.minimum(t_side, t_cap), 0.0))

    def close(self) -> None:
        """Nothing to release."""


_VEC = ("x", "y", "z", "dx", "dy", "dz", "ex", "ey", "ez")


class _State:
    """Live photons as separate float64 columns (faster in numpy than (N, 3) arrays)."""

    __slots__ = ("dx", "dy", "dz", "ex", "ey", "ez", "fl", "idx", "k", "t", "w", "x", "y", "z")

    idx: npt.NDArray[np.intp]
    x: F64
    y: F64
    z: F64
    dx: F64
    dy: F64
    dz: F64
    ex: F64
    ey: F64
    ez: F64
    w: F64
    t: F64
    fl: U32
    k: npt.NDArray[np.uint64]

    @classmethod
    def from_columns(cls, cols: Mapping[str, npt.ArrayLike], keys: npt.NDArray[np.uint64], flags: U32) -> _State:
        s = cls()
        s.idx = np.arange(keys.shape[0])
        for mine, theirs in zip(_VEC, ("x", "y", "z", "dx", "dy", "dz", "polx", "poly", "polz"), strict=True):
            setattr(s, mine, np.array(cols[theirs], dtype=np.float64).reshape(-1))
        s.w = np.array(cols["wavelength"], dtype=np.float64).reshape(-1)
        s.t = np.array(cols["time"], dtype=np.float64).reshape(-1)
        s.fl = flags.copy()
        s.k = keys
        return s

    def take(self, rows: npt.NDArray[np.intp]) -> _State:
        out = _State()
        for name in self.__slots__:
            setattr(out, name, getattr(self, name)[rows])
        return out

    def points(self, sel: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> F64:
        return np.column_stack([self.x[sel], self.y[sel], self.z[sel]])

    def dirs(self, sel: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> F64:
        return np.column_stack([self.dx[sel], self.dy[sel], self.dz[sel]])

    def pols(self, sel: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> F64:
        return np.column_stack([self.ex[sel], self.ey[sel], self.ez[sel]])

    def set_dir(self, sel: npt.NDArray[np.intp] | npt.NDArray[np.bool_], v: F64) -> None:
        self.dx[sel], self.dy[sel], self.dz[sel] = v[:, 0], v[:, 1], v[:, 2]

    def set_pol(self, sel: npt.NDArray[np.intp] | npt.NDArray[np.bool_], v: F64) -> None:
        self.ex[sel], self.ey[sel], self.ez[sel] = v[:, 0], v[:, 1], v[:, 2]

    def hits(self, rows: npt.NDArray[np.intp], channel: npt.NDArray[np.int32]) -> Hits:
        def f32(a: F64) -> npt.NDArray[np.float32]:
            return np.ascontiguousarray(a[rows], dtype=np.float32)

        return Hits(channel=channel.astype(np.uint32), dx=f32(self.dx), dy=f32(self.dy), dz=f32(self.dz),
                    polx=f32(self.ex), poly=f32(self.ey), polz=f32(self.ez), wavelength=f32(self.w),
                    time=f32(self.t), flags=self.fl[rows].copy(), x=f32(self.x), y=f32(self.y), z=f32(self.z))
