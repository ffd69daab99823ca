"""Python entry point of the Geant4 harness: photons in, Geant4 hits out, in 1 or k processes.

``run(gdml, ratdb, photons, seed, processes=1)`` writes the photons to an ``.npz``, starts ``k``
``python -m tests.g4.simulate`` processes on consecutive slices (seeds ``seed``, ``seed + 1``, ...;
their BeamOn calls start together behind a file barrier), merges their hits (photon indices made
global, sorted by photon index) and returns a ``Hits`` with the parallel BeamOn wall time: last end
minus first start over all processes. Every process is bounded by ``timeout_s`` and always reaped.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tests.g4.proc import started, wait_all
from tests.g4.simulate import PHOTON_KEYS, load_photons

RUN_TIMEOUT_S = 600.0
HIT_COLUMNS = ("photon", "channel", "time_ns", "wavelength_nm", "pos", "dir")

Array = npt.NDArray[Any]


@dataclass
class Hits:
    """Detected photons (one row per detection) and how the run went."""

    photon: npt.NDArray[np.int64]  # index into the input photons
    channel: npt.NDArray[np.int32]  # PMTINFO index, -1 if the hit volume matched none
    time_ns: npt.NDArray[np.float64]  # global time at detection
    wavelength_nm: npt.NDArray[np.float64]
    pos: npt.NDArray[np.float64]  # (h, 3) mm, on the photocathode boundary
    dir: npt.NDArray[np.float64]  # (h, 3)
    n_photons: int
    beamon_wall_s: float  # parallel BeamOn wall time: last end - first start
    infos: list[dict[str, Any]] = field(default_factory=list)  # one per process (simulate's info)
    pol: npt.NDArray[np.float64] | None = None  # (h, 3), only with record_polarisation

    @property
    def n_hits(self) -> int:
        return len(self.photon)

    @property
    def detected_fraction(self) -> float:
        return self.n_hits / self.n_photons if self.n_photons else 0.0

    @property
    def photons_per_s(self) -> float:
        """Photons over the parallel BeamOn wall time (includes the Python generator and SD)."""
        return self.n_photons / self.beamon_wall_s if self.beamon_wall_s > 0 else float("inf")

    @property
    def geant4_photons_per_s(self) -> float:
        """Estimate without the Python side: each process' BeamOn minus its generator and SD time.

        The processes run in parallel, so the estimate is photons / the longest net BeamOn.
        """
        net = max((i["beamon_wall_s"] - i["generate_s"] - i["sd_s"] for i in self.infos), default=0.0)
        return self.n_photons / net if net > 0 else float("inf")

    def counts(self, n_channels: int) -> npt.NDArray[np.int64]:
        """Hits per channel (unmatched hits, channel -1, are left out)."""
        ok = self.channel >= 0
        return np.bincount(self.channel[ok], minlength=n_channels).astype(np.int64)

    def save(self, path: Path | str) -> None:
        arrays: dict[str, Any] = {k: getattr(self, k) for k in HIT_COLUMNS}
        if self.pol is not None:
            arrays["pol"] = self.pol
        meta = {"n_photons": self.n_photons, "beamon_wall_s": self.beamon_wall_s, "infos": self.infos}
        np.savez(path, info=np.asarray(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path: Path | str) -> Hits:
        with np.load(path) as f:
            meta = json.loads(str(f["info"]))
            cols = {k: f[k] for k in HIT_COLUMNS}
            pol = f.get("pol", None)
        return cls(**cols, n_photons=meta["n_photons"], beamon_wall_s=meta["beamon_wall_s"],
                   infos=meta["infos"], pol=pol)


def unit(v: Array) -> npt.NDArray[np.float64]:
    a = np.asarray(v, dtype=np.float64)
    return np.asarray(a / np.linalg.norm(a, axis=-1, keepdims=True), dtype=np.float64)


def random_polarisation(directions: Array, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Unit vectors perpendicular to each direction, uniformly random about it."""
    d = unit(directions)
    helper = np.where(np.abs(d[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    e1 = unit(np.cross(d, helper))
    e2 = np.cross(d, e1)
    phi = rng.uniform(0.0, 2.0 * np.pi, len(d))[:, None]
    return np.cos(phi) * e1 + np.sin(phi) * e2


def photon_batch(pos: Array, directions: Array, wavelength_nm: float | Array = 420.0,
                 time_ns: float | Array = 0.0, pol: Array | None = None,
                 rng: np.random.Generator | None = None) -> dict[str, npt.NDArray[np.float64]]:
    """The photon dict ``run`` takes; positions broadcast, random transverse polarisation by default."""
    d = unit(np.atleast_2d(directions))
    n = len(d)
    p = np.broadcast_to(np.asarray(pos, dtype=np.float64), (n, 3)).copy()
    if pol is None:
        pol = random_polarisation(d, rng if rng is not None else np.random.default_rng(0))
    return {"pos": p, "dir": d, "pol": unit(np.atleast_2d(pol)),
            "wavelength": np.broadcast_to(np.asarray(wavelength_nm, dtype=np.float64), (n,)).copy(),
            "time": np.broadcast_to(np.asarray(time_ns, dtype=np.float64), (n,)).copy()}


def isotropic(n: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    v = rng.normal(size=(n, 3))
    return unit(v)


def check_photons(photons: dict[str, Array]) -> dict[str, npt.NDArray[np.float64]]:
    """Columns as float64 with the shapes simulate expects; directions and polarisations unit and
    perpendicular (to 1e-6) — Geant4 would otherwise use them as given."""
    missing = [k for k in PHOTON_KEYS if k not in photons]
    if missing:
        raise ValueError(f"photon columns missing: {missing}")
    out = {k: np.asarray(photons[k], dtype=np.float64) for k in PHOTON_KEYS}
    for k in ("dir", "pol"):
        norm = np.linalg.norm(out[k], axis=-1)
        if out[k].ndim != 2 or not np.allclose(norm, 1.0, atol=1e-6):
            raise ValueError(f"{k} must be (n, 3) unit vectors")
    if len(out["dir"]) and np.abs(np.einsum("ij,ij->i", out["dir"], out["pol"])).max() > 1e-6:
        raise ValueError("pol must be perpendicular to dir")
    return out


def run(gdml: Path | str, ratdb: Path | str, photons: dict[str, Array], seed: int, processes: int = 1,
        timeout_s: float = RUN_TIMEOUT_S, *, trim: bool = False, max_photons_per_event: int = 1000,
        warmup: int = 1000, fates: bool = False, record_polarisation: bool = False,
        in_memory: bool = False, work_dir: Path | str | None = None) -> Hits:
    """Propagate ``photons`` through ``gdml`` in Geant4; channels from the PMTINFO table of ``ratdb``.

    ``in_memory=True`` constructs the detector described by the ``meta.json`` next to ``gdml``
    (detector name and parameters, as ``tests.g4.build`` wrote them) in each process instead of
    reading the GDML: the same geometry without the GDML round trip.
    """
    if processes < 1:
        raise ValueError("processes must be at least 1")
    cols = check_photons(photons)
    n = len(cols["wavelength"])
    gdml = Path(gdml).resolve()
    geometry: list[str]
    if in_memory:
        meta = json.loads((gdml.parent / "meta.json").read_text())
        geometry = ["--build", meta["detector"], "--params", json.dumps(meta["params"])]
    else:
        geometry = ["--gdml", str(gdml)]
    bounds = np.linspace(0, n, processes + 1).astype(int)
    with tempfile.TemporaryDirectory(prefix="g4run-", dir=work_dir) as tmp:
        base = Path(tmp)
        barrier = base / "barrier"
        barrier.mkdir()
        commands = []
        for k in range(processes):
            part = base / f"in.{k}.npz"
            arrays: dict[str, Any] = {key: v[bounds[k]:bounds[k + 1]] for key, v in cols.items()}
            np.savez(part, **arrays)
            cmd = ["-m", "tests.g4.simulate", *geometry, "--ratdb", str(Path(ratdb).resolve()),
                   "--photons", str(part), "--out", str(base / f"out.{k}.npz"), "--seed", str(seed + k),
                   "--max-photons-per-event", str(max_photons_per_event), "--warmup", str(warmup),
                   "--barrier", str(barrier), "--index", str(k), "--processes", str(processes)]
            cmd += ["--trim"] if trim else []
            cmd += ["--fates"] if fates else []
            cmd += ["--polarisation"] if record_polarisation else []
            commands.append(cmd)
        with started(commands) as procs:
            wait_all(procs, timeout_s)
        return _merge([base / f"out.{k}.npz" for k in range(processes)], bounds, n, record_polarisation)


def _merge(paths: list[Path], bounds: npt.NDArray[np.int_], n: int, with_pol: bool) -> Hits:
    parts: dict[str, list[Array]] = {k: [] for k in (*HIT_COLUMNS, "pol")}
    infos = []
    for k, path in enumerate(paths):
        with np.load(path) as f:
            infos.append(json.loads(str(f["info"])))
            for key in HIT_COLUMNS:
                parts[key].append(f[key] + (bounds[k] if key == "photon" else 0))
            if with_pol:
                parts["pol"].append(f["pol"])
    merged = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    order = np.argsort(merged["photon"], kind="stable")
    if len(infos) == 1:
        wall = infos[0]["beamon_wall_s"]  # perf_counter: finer than the Unix clock
    else:
        wall = max(i["end_unix"] for i in infos) - min(i["start_unix"] for i in infos)
    return Hits(photon=merged["photon"][order].astype(np.int64), channel=merged["channel"][order].astype(np.int32),
                time_ns=merged["time_ns"][order], wavelength_nm=merged["wavelength_nm"][order],
                pos=merged["pos"][order].reshape(-1, 3), dir=merged["dir"][order].reshape(-1, 3),
                n_photons=n, beamon_wall_s=wall, infos=infos,
                pol=merged["pol"][order].reshape(-1, 3) if with_pol else None)


__all__ = ["Hits", "check_photons", "isotropic", "load_photons", "photon_batch", "random_polarisation", "run"]
