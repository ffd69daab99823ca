"""charon's built-in photon engine: the Warp kernels of ``warp_kernels`` driven over chunks and threads.

Why this layer exists: a request may hold 1e7 photons or 1e3, a worker has a few CPU cores or one
GPU, and results must not depend on how the work is cut. All events of a ``simulate`` call go
through the kernel as one pass (small events would leave a GPU idle and pay the launch costs once
each), cut into chunks of ``chunk_photons`` (bounded memory); on the CPU each chunk is split into
contiguous sub-ranges launched from a fixed pool of Python threads (Warp's CPU launches run on one
core and release the GIL); hits are compacted on the device (prefix sum + scatter), only they are
copied back, and they are split per event. Every photon's random stream is
``wp.rand_init(event_seed, photon_index)``, with ``event_seed`` derived from (seed, event id,
digest of the event's photons), so the output is bit-identical for any grouping of events, thread
count and chunk size.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from charon.engine.base import DetectorInfo, Hits, Photons
from charon.engine.detector import SURFACE_MODELS, Detector, Material, PMTLookup, Scene, WavelengthTable
from charon.engine.detector.scene import scene_from_triangles
from charon.engine.mesh import MeshGeometry, cylinder_vessel_mesh, sphere_vessel_mesh
from charon.engine.optics import event_key, sample_cdf
from charon.errors import ConfigError
from charon.settings import invalid_setting

log = logging.getLogger(__name__)

Device = Literal["cpu", "cuda", "auto"]
Geometry = Literal["auto", "analytic", "mesh"]

#: Below this many photons a chunk is launched from one thread (thread hand-off, about 50 us, costs
#: more than the work saved; the kernel spends about 0.2 us per photon and core).
PARALLEL_MIN_PHOTONS = 4096
#: Cells of the analytic PMT lookup table per PMT (about 0.2 MB for 3000 PMTs: cache-resident).
LOOKUP_CELLS_PER_PMT = 8
#: Wavelength grid of the kernel's tables: at most this many points.
MAX_TABLE_POINTS = 4096
#: Points of each re-emission inverse CDF.
ICDF_POINTS = 2048
#: Stand-in for an infinite length in float32 tables.
INFINITE_MM = 1.0e30

_init_lock = threading.Lock()
_warp: Any = None
_kernels: Any = None


def _load_warp(kernel_cache_dir: Path | None) -> tuple[Any, Any]:
    """Import and initialise Warp once per process, with the kernel cache where the settings say."""
    global _warp, _kernels
    with _init_lock:
        if _warp is None:
            import warp as wp

            wp.config.log_level = wp.LOG_WARNING
            if kernel_cache_dir is not None:
                cache = Path(kernel_cache_dir)
                try:
                    cache.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise invalid_setting("engine.kernel_cache_dir", str(cache), str(exc)) from None
                if not os.access(cache, os.W_OK):
                    raise invalid_setting("engine.kernel_cache_dir", str(cache), "not writable")
                wp.config.kernel_cache_dir = str(cache)
            wp.init()  # type: ignore[no-untyped-call]
            from charon.engine import warp_kernels

            _warp, _kernels = wp, warp_kernels
        elif kernel_cache_dir is not None:
            current = Path(_warp.config.kernel_cache_dir or "").resolve()
            wanted = Path(kernel_cache_dir).resolve()
            if wanted not in (current, current.parent):
                log.warning("Warp is already initialised with kernel cache %s; %s is not used",
                            current, kernel_cache_dir)
        return _warp, _kernels


def cuda_available() -> bool:
    """True when Warp sees at least one CUDA device (imports and initialises Warp)."""
    wp, _ = _load_warp(None)
    return bool(wp.get_cuda_device_count() > 0)


def event_seed(seed: int, event_id: int, digest: int = 0) -> int:
    """The int32 seed of one event's photon streams, from the shared (seed, event id, digest) key."""
    k = event_key(seed, event_id, digest)
    folded = (k ^ (k >> 32)) & 0xFFFFFFFF
    return folded - (1 << 32) if folded >= (1 << 31) else folded


# ------------------------------------------------------------------------------------ tables


def _grid(tables: Sequence[WavelengthTable]) -> npt.NDArray[np.float64]:
    """A uniform wavelength grid fine enough for every table (2 points when all are flat)."""
    varying = [t for t in tables if not t.is_flat]
    if not varying:
        return np.array([200.0, 800.0])
    pts = np.unique(np.concatenate([t.wavelength for t in varying]))
    lo, hi = float(pts[0]), float(pts[-1])
    if pts.size < 2 or hi <= lo:
        return np.array([lo, lo + 1.0])
    finest = float(np.min(np.diff(pts)))
    n = int(min(MAX_TABLE_POINTS, max(2, np.ceil((hi - lo) / finest * 4) + 1)))
    return np.linspace(lo, hi, n)


def _sample(table: WavelengthTable, grid: npt.NDArray[np.float64], infinite: bool = False) -> npt.NDArray[np.float32]:
    v = table(grid)
    if infinite:
        v = np.where(np.isfinite(v), v, INFINITE_MM)
    return np.asarray(v, dtype=np.float32)


def _icdf(material: Material) -> npt.NDArray[np.float32]:
    cdf = material.reemission_cdf
    if cdf is None:
        return np.zeros(ICDF_POINTS, np.float32)
    u = np.linspace(0.0, 1.0, ICDF_POINTS)
    return sample_cdf(u, cdf.wavelength, cdf.value).astype(np.float32)


@dataclass(frozen=True)
class OpticsTables:
    """The detector's materials and surfaces resampled for the kernel (rows in detector index order)."""

    grid: npt.NDArray[np.float64]
    rindex: npt.NDArray[np.float32]
    groupvel: npt.NDArray[np.float32]
    opaque: npt.NDArray[np.int32]
    abslen: npt.NDArray[np.float32]
    scatlen: npt.NDArray[np.float32]
    reemit_prob: npt.NDArray[np.float32]
    reemit_icdf: npt.NDArray[np.float32]
    reemit_tau: npt.NDArray[np.float32]
    reemit_delta: npt.NDArray[np.int32]
    reemit_red: npt.NDArray[np.int32]
    s_detect: npt.NDArray[np.float32]
    s_absorb: npt.NDArray[np.float32]
    s_rdiff: npt.NDArray[np.float32]
    s_rspec: npt.NDArray[np.float32]
    s_trans: npt.NDArray[np.float32]
    s_model: npt.NDArray[np.int32]

    @classmethod
    def from_detector(cls, det: Detector) -> OpticsTables:
        mats = [det.materials[n] for n in det.material_names]
        surfs = [det.surfaces[n] for n in det.surface_names]
        one = WavelengthTable.flat(1.0)
        tabs: list[WavelengthTable] = []
        for m in mats:
            tabs += [m.refractive_index or one, m.effective_group_velocity, m.absorption_length,
                     m.scattering_length, m.reemission_prob]
        for s in surfs:
            tabs += [s.detect, s.absorb, s.reflect_diffuse, s.reflect_specular, s.transmit]
        g = _grid(tabs)

        def rows(tables: Sequence[WavelengthTable], infinite: bool = False) -> npt.NDArray[np.float32]:
            if not tables:
                return np.zeros((1, g.size), np.float32)
            return np.stack([_sample(t, g, infinite) for t in tables])

        def ints(values: Iterable[int]) -> npt.NDArray[np.int32]:
            return np.asarray(list(values) or [0], np.int32)

        return cls(
            grid=g,
            rindex=rows([m.refractive_index or one for m in mats]),
            groupvel=rows([m.effective_group_velocity for m in mats]),
            opaque=ints(int(m.opaque) for m in mats),
            abslen=rows([m.absorption_length for m in mats], True),
            scatlen=rows([m.scattering_length for m in mats], True),
            reemit_prob=rows([m.reemission_prob for m in mats]),
            reemit_icdf=np.stack([_icdf(m) for m in mats]),
            reemit_tau=np.array([m.reemission_time_ns for m in mats], np.float32),
            reemit_delta=ints(int(m.reemission_profile == "delta") for m in mats),
            reemit_red=ints(int(m.reemission_redshift) for m in mats),
            s_detect=rows([s.detect for s in surfs]),
            s_absorb=rows([s.absorb for s in surfs]),
            s_rdiff=rows([s.reflect_diffuse for s in surfs]),
            s_rspec=rows([s.reflect_specular for s in surfs]),
            s_trans=rows([s.transmit for s in surfs]),
            s_model=ints(SURFACE_MODELS.index(s.model) for s in surfs),
        )


# ------------------------------------------------------------------------------------ geometry


def mesh_from_detector(det: Detector, *, level: int = 5, segments: int = 12) -> MeshGeometry:
    """The triangle-mesh form of an analytic detector: vessel wall plus one cap solid per PMT.

    Solid 0 is the wall, solid k + 1 the photocathode of channel k. Caps lie on the ideal wall,
    the tessellated wall just outside it, so caps are always hit first from inside.
    """
    if det.mesh is not None:
        return det.mesh
    v, pmts = det.vessel, det.pmts
    if v is None or pmts is None:
        raise ConfigError("this detector has no analytic vessel to mesh")
    inner = det.material_index(v.inner_material)
    outer = det.material_index(v.outer_material)
    wall = det.surface_index(v.surface)
    cathode = det.surface_index(pmts.surface)
    if v.shape == "sphere":
        return sphere_vessel_mesh(v.radius, pmts.positions, pmts.radius, inner=inner, outer=outer,
                                  wall_surface=wall, pmt_surface=cathode, level=level, segments=segments)
    assert v.half_height is not None
    return cylinder_vessel_mesh(v.radius, v.half_height, pmts.positions, pmts.radius, inner=inner,
                                outer=outer, wall_surface=wall, pmt_surface=cathode, segments=segments)


def scene_of(det: Detector) -> Scene:
    """The instanced-mesh form the scene mode traces: the detector's scene, else its mesh (or the
    mesh of its analytic geometry) grouped into shapes by material, surface and channel."""
    if det.scene is not None:
        return det.scene
    mesh = mesh_from_detector(det)
    return scene_from_triangles(mesh.vertices, mesh.triangles, mat_in=mesh.mat_inner, mat_out=mesh.mat_outer,
                                surface=mesh.surface, channel=mesh.triangle_channel())


@dataclass
class FinalState:
    """Every photon's state after propagation (diagnostics and tests): numpy arrays of length N."""

    pos: npt.NDArray[np.float32]
    dir: npt.NDArray[np.float32]
    pol: npt.NDArray[np.float32]
    wavelength: npt.NDArray[np.float32]
    time: npt.NDArray[np.float32]
    flags: npt.NDArray[np.uint32]
    channel: npt.NDArray[np.int32]
    steps: npt.NDArray[np.int32]


_OUT_FIELDS = (("channel", np.int32), ("dx", np.float32), ("dy", np.float32), ("dz", np.float32),
               ("px", np.float32), ("py", np.float32), ("pz", np.float32), ("wl", np.float32),
               ("t", np.float32), ("flags", np.uint32), ("x", np.float32), ("y", np.float32),
               ("z", np.float32), ("steps", np.int32), ("is_hit", np.int32), ("row", np.int32))
_IN_FIELDS = ("x", "y", "z", "dx", "dy", "dz", "px", "py", "pz", "wl", "t", "flags")


class WarpSimulator:
    """The ``builtin`` backend: Chroma-equivalent optics in Warp kernels, CPU threads or CUDA."""

    name = "builtin"

    def __init__(self, detector: Detector, *, seed: int = 0, max_steps: int = 1000, device: Device = "auto",
                 threads: int = 0, chunk_photons: int = 1_000_000, kernel_cache_dir: Path | None = None,
                 geometry: Geometry = "auto", cuda_device: int = 0, analytic_shapes: bool = True) -> None:
        if max_steps < 1:
            raise invalid_setting("engine.max_steps", max_steps, "must be >= 1")
        if chunk_photons < 1:
            raise invalid_setting("engine.chunk_photons", chunk_photons, "must be >= 1")
        if threads < 0:
            raise invalid_setting("engine.threads", threads, "must be >= 0 (0 = all cores)")
        if geometry not in ("auto", "analytic", "mesh"):
            raise ConfigError(f"invalid geometry {geometry!r}: allowed auto, analytic, mesh")
        wp, k = _load_warp(kernel_cache_dir)
        self._wp, self._k = wp, k
        self.detector = detector
        self.seed = int(seed)
        self.max_steps = int(max_steps)
        self.chunk_photons = int(chunk_photons)
        self.device = self._pick_device(device, cuda_device)
        self.threads = 1 if self.device != "cpu" else (threads or _cpu_count())
        if geometry == "analytic" and not detector.is_analytic:
            raise ConfigError("this detector has no analytic form: it is traced as a mesh")
        analytic = geometry == "analytic" or (geometry == "auto" and detector.is_analytic
                                              and detector.mesh is None and detector.scene is None)
        self.geometry: Literal["analytic", "mesh"] = "analytic" if analytic else "mesh"
        #: Trace a scene's analytic shapes exactly (else by their meshes, for comparisons).
        self.analytic_shapes = bool(analytic_shapes)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="warp") if self.threads > 1 else None
        self._keep: list[Any] = []
        self.tables = OpticsTables.from_detector(detector)
        self._optics = self._make_optics()
        self._analytic = self._make_analytic()
        self.scene: Scene | None = None
        self._scene = self._make_scene()
        self._out: Any = None
        self._out_arrays: dict[str, Any] = {}
        self._out_size = 0
        #: CPU input arrays allocated once (grown when a pass needs more), and numpy views of them.
        self._in: Any = None
        self._host_in: dict[str, npt.NDArray[Any]] = {}
        self._in_size = 0
        # Compile (or load from the cache) now, so the first request does not pay for it. The block
        # size is part of the module hash: it must be the one launches use (1 on CPU, 256 on CUDA).
        k.propagate.module.load(self.device, block_dim=1 if self.device == "cpu" else 256)

    # -- construction helpers ------------------------------------------------------------------

    def _pick_device(self, device: str, cuda_device: int) -> str:
        wp = self._wp
        n_cuda = int(wp.get_cuda_device_count())
        if device not in ("cpu", "cuda", "auto"):
            raise invalid_setting("engine.device", device, "allowed: cpu, cuda, auto")
        if device == "cpu" or (device == "auto" and n_cuda == 0):
            return "cpu"
        if n_cuda == 0:
            raise invalid_setting("engine.device", "cuda", "no CUDA device is available (allowed: cpu, cuda, auto)")
        if not 0 <= cuda_device < n_cuda:
            raise invalid_setting("engine.cuda_device", cuda_device,
                                  f"this host has {n_cuda} CUDA device(s), 0..{n_cuda - 1}")
        return f"cuda:{cuda_device}"

    def _arr(self, a: npt.NDArray[Any], dtype: Any) -> Any:
        arr = self._wp.array(np.ascontiguousarray(a), dtype=dtype, device=self.device)
        self._keep.append(arr)
        return arr

    def _make_optics(self) -> Any:
        wp, t = self._wp, self.tables
        o = self._k.Optics()
        o.wl0 = float(t.grid[0])
        o.inv_dwl = float((t.grid.size - 1) / (t.grid[-1] - t.grid[0]))
        o.nwl = int(t.grid.size)
        for name in ("rindex", "groupvel", "abslen", "scatlen", "reemit_prob", "reemit_icdf", "s_detect",
                     "s_absorb", "s_rdiff", "s_rspec", "s_trans"):
            setattr(o, name, self._arr(getattr(t, name), wp.float32))
        o.reemit_tau = self._arr(t.reemit_tau, wp.float32)
        for name in ("opaque", "reemit_delta", "reemit_red", "s_model"):
            setattr(o, name, self._arr(getattr(t, name), wp.int32))
        return o

    def _make_analytic(self) -> Any:
        wp, det = self._wp, self.detector
        a = self._k.Analytic()
        v, pmts = det.vessel, det.pmts
        if self.geometry != "analytic" or v is None or pmts is None:
            a.pmt_pos = a.pmt_nrm = self._arr(np.zeros((1, 3), np.float32), wp.vec3)
            a.candidates = self._arr(np.full((1, 1), -1, np.int32), wp.int32)
            return a
        # A coarser cell table than the NumPy engine's: it stays in cache (same exact test behind it).
        lk = PMTLookup.build(v, pmts, cells_per_pmt=LOOKUP_CELLS_PER_PMT)
        a.shape = 0 if v.shape == "sphere" else 1
        a.radius = float(v.radius)
        a.half_height = float(v.half_height or 0.0)
        a.mat_in = det.material_index(v.inner_material)
        a.mat_out = det.material_index(v.outer_material)
        a.wall_surface = det.surface_index(v.surface)
        a.pmt_surface = det.surface_index(pmts.surface)
        a.pmt_pos = self._arr(lk.positions.astype(np.float32), wp.vec3)
        a.pmt_nrm = self._arr(lk.normals.astype(np.float32), wp.vec3)
        a.pmt_r2 = float(lk.radius) ** 2
        # float32 hit points on a wall metres away carry ~1e-3 mm of rounding.
        a.max_depth = float(lk.max_depth) + 1e-3 + 2e-7 * float(v.radius)
        a.n_u = int(lk.n_u)
        a.n_phi = int(lk.n_phi)
        a.candidates = self._arr(lk.candidates.astype(np.int32), wp.int32)
        return a

    def _make_scene(self) -> Any:
        """The scene mode's geometry: a ``wp.Mesh`` per shape and a ``wp.Bvh`` over instance bounds."""
        wp = self._wp
        g = self._k.SceneGeo()
        if self.geometry != "mesh":
            g.top = 0
            g.meshes = self._arr(np.zeros(1, np.uint64), wp.uint64)
            g.lin = g.inv = self._arr(np.eye(3, dtype=np.float32)[None], wp.mat33)
            g.offset = self._arr(np.zeros((1, 3), np.float32), wp.vec3)
            g.shape = g.mat_in = g.mat_out = g.surf_exit = g.surf_enter = g.channel = g.tag_row = \
                self._arr(np.zeros(1, np.int32), wp.int32)
            g.tri_tags = self._arr(np.zeros((1, 4), np.int32), wp.int32)
            g.kind = self._arr(np.zeros(1, np.int32), wp.int32)
            g.par = self._arr(np.zeros((1, 6), np.float32), wp.float32)
            return g
        scene = scene_of(self.detector)
        if scene.n_channels > self.detector.n_channels:
            raise ConfigError(f"detector geometry has {scene.n_channels} channels, the detector "
                              f"{self.detector.n_channels}")
        if scene.n_instances == 0:
            raise ConfigError("detector geometry has no volumes to trace")
        self.scene = scene
        meshes = []
        for sh in range(scene.n_shapes):
            v, f = scene.shape_mesh(sh)
            if f.shape[0] == 0:
                raise ConfigError(f"detector shape {scene.shape_names[sh]!r} has no triangles")
            mesh = wp.Mesh(points=self._arr(v, wp.vec3), indices=self._arr(f.reshape(-1), wp.int32))
            self._keep.append(mesh)
            meshes.append(mesh.id)
        g.meshes = self._arr(np.asarray(meshes, np.uint64), wp.uint64)
        lin = scene.transform[:, :, :3]
        g.lin = self._arr(lin.astype(np.float32), wp.mat33)
        g.inv = self._arr(np.linalg.inv(lin).astype(np.float32), wp.mat33)
        g.offset = self._arr(scene.transform[:, :, 3].astype(np.float32), wp.vec3)
        for name in ("shape", "mat_in", "mat_out", "surf_exit", "surf_enter", "channel"):
            setattr(g, name, self._arr(getattr(scene, name), wp.int32))
        g.tag_row = self._arr(scene.tag_rows(), wp.int32)
        assert scene.shape_kind is not None
        assert scene.shape_params is not None
        kinds = scene.shape_kind if self.analytic_shapes else np.zeros_like(scene.shape_kind)
        g.kind = self._arr(kinds, wp.int32)
        g.par = self._arr(scene.shape_params.astype(np.float32), wp.float32)
        tags = scene.triangle_tags if scene.triangle_tags is not None else np.zeros((1, 4), np.int32)
        g.tri_tags = self._arr(tags, wp.int32)
        lo, hi = scene.world_bounds()
        pad = 1e-3 + 1e-6 * np.abs(np.concatenate([lo, hi], axis=1)).max(axis=1, keepdims=True)
        self._top = wp.Bvh(self._arr((lo - pad).astype(np.float32), wp.vec3),
                           self._arr((hi + pad).astype(np.float32), wp.vec3))
        g.top = self._top.id
        return g

    # -- Simulator protocol -------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        return str(self.detector.fingerprint)

    def detector_info(self) -> DetectorInfo:
        return self.detector.info()

    def simulate(self, batch: Sequence[Photons]) -> list[Hits]:
        """Every event of ``batch`` in one pass (see the module docstring); hits per event, in order."""
        with self._lock:
            return self._run(batch, keep_all=False)[0]

    def propagate(self, photons: Photons) -> FinalState:
        """Every photon's final state (not just hits): for tests and diagnostics."""
        with self._lock:
            state = self._run([photons], keep_all=True)[1]
        assert state is not None
        return state

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> WarpSimulator:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the work -----------------------------------------------------------------------------

    def _ensure_out(self, n: int) -> None:
        if self._out is not None and self._out_size >= n:
            return
        wp = self._wp
        size = max(n, 1)
        out = self._k.PhotonsOut()
        arrays = {}
        for name, dt in _OUT_FIELDS:
            wdt = {np.int32: wp.int32, np.float32: wp.float32, np.uint32: wp.uint32}[dt]
            arrays[name] = wp.empty(size, dtype=wdt, device=self.device)
            setattr(out, name, arrays[name])
        self._out, self._out_arrays, self._out_size = out, arrays, size
        self._index = wp.empty(size, dtype=wp.int32, device=self.device)
        #: On the CPU, numpy views of the output arrays (same memory; read after each launch).
        self._host_out = {name: a.numpy() for name, a in arrays.items()} if self.device == "cpu" else {}

    def _inputs(self, cols: Sequence[npt.NDArray[Any]], ev: npt.NDArray[np.int32], a: int, b: int) -> Any:
        """The kernel's input struct for photons ``a:b`` of the pass (copies on a GPU)."""
        wp = self._wp
        inp = self._k.PhotonsIn()
        keep = []
        for name, col in zip((*_IN_FIELDS, "ev"), (*cols, ev), strict=True):
            dt = {"flags": wp.uint32, "ev": wp.int32}.get(name, wp.float32)
            host = np.ascontiguousarray(col[a:b], dtype={"flags": np.uint32, "ev": np.int32}.get(name, np.float32))
            arr = wp.array(host, dtype=dt, device=self.device, copy=True)
            keep.append(arr)
            setattr(inp, name, arr)
        return inp, keep

    def _staged(self, per_event: Sequence[Sequence[npt.NDArray[Any]]], starts: npt.NDArray[np.int64],
                a: int, b: int) -> Any:
        """On the CPU: photons ``a:b`` of the pass copied straight from each event's columns into
        input arrays allocated once (no concatenation, no Warp arrays made per pass)."""
        m = b - a
        if self._in is None or self._in_size < m:
            wp = self._wp
            size = max(m, 1)
            inp = self._k.PhotonsIn()
            host = {}
            for name in (*_IN_FIELDS, "ev"):
                dt = {"flags": wp.uint32, "ev": wp.int32}.get(name, wp.float32)
                arr = wp.empty(size, dtype=dt, device=self.device)
                setattr(inp, name, arr)
                host[name] = arr.numpy()
            self._in, self._host_in, self._in_size = inp, host, size
        columns = [self._host_in[name] for name in _IN_FIELDS]
        ev = self._host_in["ev"]
        first = int(np.searchsorted(starts, a, side="right")) - 1
        for e in range(first, len(per_event)):
            lo, hi = max(a, int(starts[e])), min(b, int(starts[e + 1]))
            if lo >= b:
                break
            if hi <= lo:
                continue
            src = slice(lo - int(starts[e]), hi - int(starts[e]))
            for dst, col in zip(columns, per_event[e], strict=True):
                dst[lo - a : hi - a] = col[src]
            ev[lo - a : hi - a] = e
        return self._in

    def _events(self, batch: Sequence[Photons], starts: npt.NDArray[np.int64]) -> tuple[Any, list[Any]]:
        ev = self._k.Events()
        seeds = np.array([event_seed(self.seed, ph.event_id, ph.digest()) for ph in batch], np.int32)
        keep = [self._wp.array(seeds, dtype=self._wp.int32, device=self.device),
                self._wp.array(starts[:-1].astype(np.int32), dtype=self._wp.int32, device=self.device)]
        ev.seed, ev.start = keep
        return ev, keep

    def _launch(self, inp: Any, events: Any, n: int, first: int, write_all: bool = False) -> None:
        wp, k = self._wp, self._k
        mode = 1 if self.geometry == "mesh" else 0

        cpu = self.device == "cpu"

        def run(offset: int, count: int) -> None:
            wp.launch(k.propagate, dim=1 if cpu else count, device=self.device,
                      inputs=[inp, self._out, self._optics, self._analytic, self._scene, mode, events, first,
                              offset, count, count if cpu else 1, self.max_steps, int(write_all)])

        if self._pool is None or n < PARALLEL_MIN_PHOTONS:
            run(0, n)
            return
        bounds = np.linspace(0, n, self.threads + 1).astype(int)
        futures = [self._pool.submit(run, int(lo), int(hi - lo))
                   for lo, hi in itertools.pairwise(bounds) if hi > lo]
        for f in futures:
            f.result()

    def _run(self, batch: Sequence[Photons], keep_all: bool) -> tuple[list[Hits], FinalState | None]:
        if not batch:
            return [], None
        sizes = np.array([len(ph) for ph in batch], np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        n = int(starts[-1])
        if n >= 2**31:
            raise ValueError(f"one engine pass holds at most 2**31 - 1 photons, got {n}")
        per_event = [ph.columns() for ph in batch]
        cpu = self.device == "cpu"
        if not cpu:  # one concatenated host copy of the pass, uploaded chunk by chunk
            cols: Sequence[npt.NDArray[Any]] = (
                per_event[0] if len(batch) == 1
                else [np.concatenate([c[k] for c in per_event]) for k in range(len(_IN_FIELDS))])
        ev = np.repeat(np.arange(len(batch), dtype=np.int32), sizes)
        events, _keep_events = self._events(batch, starts)
        parts: list[list[Hits]] = [[] for _ in batch]
        full: list[dict[str, npt.NDArray[Any]]] = []
        for a in range(0, n, self.chunk_photons):
            b = min(n, a + self.chunk_photons)
            m = b - a
            self._ensure_out(m)
            if cpu:
                inp, _keep = self._staged(per_event, starts, a, b), None
            else:
                inp, _keep = self._inputs(cols, ev, a, b)
            self._launch(inp, events, m, a, write_all=keep_all)
            if keep_all:
                full.append({name: self._out_arrays[name].numpy()[:m].copy() for name, _ in _OUT_FIELDS})
            hits, rows = self._compact(m)
            if len(hits):
                owner = ev[a + rows]
                cut = np.searchsorted(owner, np.arange(len(batch) + 1))
                for e in np.flatnonzero(np.diff(cut)):
                    parts[e].append(hits.take(slice(int(cut[e]), int(cut[e + 1]))))
        results = [Hits.concatenate(p) if len(p) != 1 else p[0] for p in parts]
        state = None
        if keep_all:
            cat: dict[str, npt.NDArray[Any]] = {
                name: (np.concatenate([f[name] for f in full]) if full else np.zeros(0, dt))
                for name, dt in _OUT_FIELDS}

            def vec(*names: str) -> npt.NDArray[np.float32]:
                return np.stack([cat[x] for x in names], 1).astype(np.float32, copy=False)

            state = FinalState(pos=vec("x", "y", "z"), dir=vec("dx", "dy", "dz"), pol=vec("px", "py", "pz"),
                               wavelength=cat["wl"], time=cat["t"], flags=cat["flags"],
                               channel=cat["channel"], steps=cat["steps"])
        return results, state

    def _compact(self, m: int) -> tuple[Hits, npt.NDArray[np.int64]]:
        """The chunk's hits and each one's photon row within the chunk (rising).

        On a GPU: prefix-sum the hit mask on the device, scatter the hits to a dense buffer and
        copy only that back. On the CPU the output already is host memory: numpy gathers the
        hits directly (no scan, no scatter kernel, no buffers to allocate per chunk).
        """
        if self.device == "cpu":
            out = self._host_out
            rows = np.flatnonzero(out["is_hit"][:m])
            g = {name: out[name][rows] for name in ("channel", "dx", "dy", "dz", "px", "py", "pz", "wl", "t",
                                                      "flags", "x", "y", "z")}
            hits = Hits(g["channel"].astype(np.uint32), g["dx"], g["dy"], g["dz"], g["px"], g["py"], g["pz"],
                        g["wl"], g["t"], g["flags"], g["x"], g["y"], g["z"])
            return hits, rows.astype(np.int64)
        wp, k = self._wp, self._k
        is_hit = self._out_arrays["is_hit"]
        wp.utils.array_scan(is_hit[:m], self._index[:m], inclusive=False)
        last = np.zeros(2, np.int32)
        last[0] = int(self._index[m - 1:m].numpy()[0])
        last[1] = int(is_hit[m - 1:m].numpy()[0])
        count = int(last[0] + last[1])
        if count == 0:
            return Hits.empty(), np.zeros(0, np.int64)
        dst = k.PhotonsOut()
        dense = {}
        for name, dt in _OUT_FIELDS:
            wdt = {np.int32: wp.int32, np.float32: wp.float32, np.uint32: wp.uint32}[dt]
            dense[name] = wp.empty(count, dtype=wdt, device=self.device)
            setattr(dst, name, dense[name])
        src = self._slice_out(m)
        wp.launch(k.compact_hits, dim=m, device=self.device, inputs=[src, self._index, dst])
        host = {name: dense[name].numpy() for name in ("channel", "dx", "dy", "dz", "px", "py", "pz", "wl",
                                                        "t", "flags", "row", "x", "y", "z")}
        hits = Hits(host["channel"].astype(np.uint32), host["dx"], host["dy"], host["dz"], host["px"],
                    host["py"], host["pz"], host["wl"], host["t"], host["flags"], host["x"], host["y"], host["z"])
        return hits, host["row"].astype(np.int64)

    def _slice_out(self, m: int) -> Any:
        if m == self._out_size:
            return self._out
        s = self._k.PhotonsOut()
        for name, _ in _OUT_FIELDS:
            setattr(s, name, self._out_arrays[name][:m])
        return s


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)
