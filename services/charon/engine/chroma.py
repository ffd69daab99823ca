"""The ``chroma`` backend: real Chroma (pennneutrinos fork) behind charon's Simulator interface.

Chroma and PyCUDA are imported only when this backend is built, so every other part of charon runs
on hosts without a GPU. The detector is either a pickled ``chroma.detector.Detector`` or RAT's GDML
export plus a RATDB JSON dump, meshed by the fork's ``chroma.rat.RATGeoLoader``.

Requests are run several at a time: the photons of a group of requests (bounded by
``engine.batch_max_photons``) are packed once and handed to ``Simulation.simulate`` as one
``Photons`` per request, which Chroma propagates in a single GPU pass with one event index per
request, asking only for flat hits (no copies of the photons' start or end states).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import pickle
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charon.engine.base import DetectorInfo, Hits, Photons, fingerprint_of
from charon.engine.batching import pack, plan_groups
from charon.engine.chroma_convert import detector_info, hits_from_flat, mark_non_finite, photons_kwargs
from charon.errors import ConfigError, DetectorError
from charon.settings import EngineSettings

log = logging.getLogger(__name__)

INSTALL_HINT = ("the chroma backend needs Chroma (pennneutrinos/chroma fork) and PyCUDA on a CUDA host; "
                "see docs/chroma.md")

_GDML_SUFFIXES = (".gdml", ".xml")


@dataclass(frozen=True, slots=True)
class DetectorSource:
    """Where the detector comes from: a pickle, or a GDML file with its RATDB dump."""

    path: Path
    ratdb: Path | None

    @property
    def is_gdml(self) -> bool:
        return self.ratdb is not None

    @classmethod
    def from_settings(cls, engine: EngineSettings) -> DetectorSource:
        """Validate the detector/ratdb combination; raises ConfigError with one line."""
        if engine.detector is None:
            raise ConfigError(
                "invalid setting engine.detector (--detector / CHARON_ENGINE__DETECTOR) = None: the chroma "
                "backend needs a pickled chroma.detector.Detector (.pkl) or RAT's GDML export (.gdml) "
                "with engine.ratdb (CHARON_ENGINE__RATDB)"
            )
        path = Path(engine.detector)
        is_gdml = path.suffix.lower() in _GDML_SUFFIXES
        if is_gdml and engine.ratdb is None:
            raise ConfigError(
                f"invalid setting engine.ratdb (CHARON_ENGINE__RATDB) = None: the GDML detector {path} "
                "needs RAT's RATDB JSON dump for its PMT channels"
            )
        if not is_gdml and engine.ratdb is not None:
            raise ConfigError(
                f"invalid setting engine.ratdb (CHARON_ENGINE__RATDB) = '{engine.ratdb}': only used with a "
                f"GDML detector (.gdml), but engine.detector is {path}"
            )
        for name, p in (("engine.detector (--detector / CHARON_ENGINE__DETECTOR)", path),
                        ("engine.ratdb (CHARON_ENGINE__RATDB)", engine.ratdb)):
            if p is not None and not Path(p).is_file():
                raise ConfigError(f"invalid setting {name} = '{p}': no such file")
        return cls(path, Path(engine.ratdb) if engine.ratdb is not None else None)

    def digest(self) -> dict[str, str]:
        """sha256 of the detector file(s): part of the worker's fingerprint."""
        out = {"detector": _sha256_file(self.path)}
        if self.ratdb is not None:
            out["ratdb"] = _sha256_file(self.ratdb)
        return out


@dataclass(frozen=True, slots=True)
class _Chroma:
    """The few Chroma/PyCUDA entry points this backend uses."""

    Simulation: Any
    Photons: Any
    create_geometry_from_obj: Any
    cuda: Any


def import_chroma() -> _Chroma:
    """Import Chroma and PyCUDA, or raise ConfigError with one line saying what to install.

    Chroma prints to stdout on import (and while building BVHs); stdout carries the ready line, so
    those prints go to stderr.
    """
    try:
        with contextlib.redirect_stdout(sys.stderr):
            import pycuda.driver as cuda
            from chroma.event import Photons as ChromaPhotons
            from chroma.loader import create_geometry_from_obj
            from chroma.sim import Simulation
    except (ImportError, OSError) as exc:
        raise ConfigError(f"{INSTALL_HINT} (import failed: {_one_line(exc)})") from None
    return _Chroma(Simulation, ChromaPhotons, create_geometry_from_obj, cuda)


def load_detector(source: DetectorSource) -> Any:
    """The ``chroma.detector.Detector`` described by ``source`` (not yet flattened or uploaded)."""
    if source.is_gdml:
        try:
            with contextlib.redirect_stdout(sys.stderr):
                from chroma.rat import RATGeoLoader
        except ImportError as exc:
            raise ConfigError(f"GDML detectors need the pennneutrinos/chroma fork's chroma.rat and gmsh "
                              f"(pip install gmsh); see docs/chroma.md (import failed: {_one_line(exc)})"
                              ) from None
        started = time.perf_counter()
        try:
            with contextlib.redirect_stdout(sys.stderr):
                loader = RATGeoLoader(str(source.path), ratdb_file=str(source.ratdb))
                detector = loader.build_detector()
        except Exception as exc:  # noqa: BLE001 - Chroma/PyCUDA raise many unrelated types
            raise DetectorError(f"cannot build a Chroma detector from {source.path} and {source.ratdb}: "
                                f"{_one_line(exc)}") from None
        log.info("meshed %s with RATDB %s in %.1f s", source.path, source.ratdb, time.perf_counter() - started)
    else:
        try:
            with source.path.open("rb") as f, contextlib.redirect_stdout(sys.stderr):
                detector = pickle.load(f)
        except Exception as exc:  # noqa: BLE001 - Chroma/PyCUDA raise many unrelated types
            raise DetectorError(f"cannot unpickle a Chroma detector from {source.path}: {_one_line(exc)}"
                                ) from None
    if not hasattr(detector, "num_channels") or not hasattr(detector, "channel_index_to_position"):
        raise DetectorError(f"{source.path} holds a {type(detector).__name__}, not a chroma.detector.Detector "
                            "with PMT channels")
    return detector


class ChromaSimulator:
    """Chroma's ``Simulation`` on one CUDA device, answering many requests per GPU pass."""

    name = "chroma"

    def __init__(self, sim: Any, photons_type: Any, info: DetectorInfo, fingerprint: str, *,
                 max_steps: int, batch_max_photons: int) -> None:
        self._sim = sim
        self._photons_type = photons_type
        self._info = info
        self._fingerprint = fingerprint
        self.max_steps = max_steps
        self.batch_max_photons = batch_max_photons
        self._context: Any = getattr(sim, "context", None)

    @classmethod
    def from_settings(cls, engine: EngineSettings) -> ChromaSimulator:
        """Import Chroma, load the detector, upload it to ``engine.cuda_device`` and build the simulation.

        Raises ConfigError (one line, exit status 2 in the CLI) for a missing Chroma/PyCUDA, bad
        settings or an unusable CUDA device, and DetectorError for a detector that cannot be loaded.
        """
        chroma = import_chroma()
        source = DetectorSource.from_settings(engine)
        _check_device(chroma.cuda, engine.cuda_device)
        cache_dir = _configure_caches(engine.kernel_cache_dir)
        detector = load_detector(source)
        started = time.perf_counter()
        try:
            with contextlib.redirect_stdout(sys.stderr):
                geometry = chroma.create_geometry_from_obj(detector, cuda_device=engine.cuda_device,
                                                           cache_dir=cache_dir)
                sim = chroma.Simulation(geometry, seed=fold_seed(engine.seed), cuda_device=engine.cuda_device,
                                        particle_tracking=False, photon_tracking=False, geant4_processes=0)
        except Exception as exc:  # noqa: BLE001 - Chroma/PyCUDA raise many unrelated types
            _pop_contexts(chroma.cuda)
            raise DetectorError(f"cannot set up Chroma on CUDA device {engine.cuda_device}: {_one_line(exc)}"
                                ) from None
        # Simulation left its context current on this thread; release it so that simulate() can
        # make it current on whichever thread calls it.
        sim.context.pop()
        info = detector_info(geometry)
        log.info("chroma ready on CUDA device %d: %d channels, %d triangles, set up in %.1f s",
                 engine.cuda_device, len(info), len(getattr(getattr(geometry, "mesh", None), "triangles", ())),
                 time.perf_counter() - started)
        fingerprint = fingerprint_of(
            {"engine": "chroma", "max_steps": engine.max_steps, "files": source.digest()},
            {"x": info.x, "y": info.y, "z": info.z, "channel_type": info.channel_type},
        )
        simulator = cls(sim, chroma.Photons, info, fingerprint, max_steps=engine.max_steps,
                        batch_max_photons=engine.batch_max_photons)
        atexit.register(simulator.close)
        return simulator

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def detector_info(self) -> DetectorInfo:
        return self._info

    def simulate(self, batch: Sequence[Photons]) -> list[Hits]:
        """Hits of every request in ``batch``, in order, using as few GPU passes as the budget allows."""
        results: list[Hits] = [Hits.empty() for _ in batch]
        # Zero-photon requests never reach Chroma: their answer is known and Chroma cannot upload
        # an empty batch.
        live = [i for i, p in enumerate(batch) if len(p)]
        if not live:
            return results
        with self._current_context():
            for group in plan_groups([len(batch[i]) for i in live], self.batch_max_photons):
                members = [live[j] for j in group]
                for i, hits in zip(members, self._run_pass([batch[i] for i in members]), strict=True):
                    results[i] = hits
        return results

    def _run_pass(self, requests: Sequence[Photons]) -> list[Hits]:
        packed = pack(requests)
        bad = mark_non_finite(packed)
        if bad:
            log.warning("%d photons with non-finite fields flagged NAN_ABORT and not propagated", bad)
        inputs = [self._photons_type(**photons_kwargs(packed, i)) for i in range(packed.n_events)]
        events = self._sim.simulate(
            inputs, keep_photons_beg=False, keep_photons_end=False, keep_hits=False, keep_flat_hits=True,
            run_daq=False, max_steps=self.max_steps, photons_per_batch=max(1, len(packed)),
        )
        n_channels = len(self._info)
        out = [hits_from_flat(event.flat_hits, n_channels) for event in events]
        if len(out) != len(requests):
            raise RuntimeError(f"Chroma returned {len(out)} events for {len(requests)} inputs")
        return out

    @contextlib.contextmanager
    def _current_context(self) -> Iterator[None]:
        if self._context is None:
            yield
            return
        self._context.push()
        try:
            yield
        finally:
            self._context.pop()

    def close(self) -> None:
        """Release the CUDA context (PyCUDA aborts the process at exit if one is still current)."""
        context, self._context = self._context, None
        if context is not None:
            with contextlib.suppress(Exception):
                context.detach()


def write_detector_pickle(gdml: Path, ratdb: Path, out: Path) -> int:
    """Mesh RAT's GDML export with its RATDB dump once and pickle the Detector for fast worker starts.

    Returns the number of PMT channels. Needs Chroma (fork) and gmsh, but no GPU.
    """
    source = DetectorSource(Path(gdml), Path(ratdb))
    detector = load_detector(source)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as f:
        pickle.dump(detector, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(out)
    return int(detector.num_channels())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m charon.engine.chroma GDML RATDB OUT.pkl``: build a detector pickle offline."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m charon.engine.chroma",
                                     description="Mesh a RAT GDML export + RATDB JSON dump into a Chroma "
                                                 "detector pickle for --backend chroma --detector OUT.pkl")
    parser.add_argument("gdml", type=Path)
    parser.add_argument("ratdb", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    for p in (args.gdml, args.ratdb):
        if not p.is_file():
            parser.error(f"{p}: no such file")
    channels = write_detector_pickle(args.gdml, args.ratdb, args.out)
    log.info("wrote %s: %d PMT channels", args.out, channels)
    return 0


def fold_seed(seed: int) -> int:
    """charon's 63-bit seed folded into the 32 bits Chroma's numpy/CURAND seeding accepts."""
    return (seed ^ (seed >> 32)) & 0xFFFFFFFF


def _check_device(cuda: Any, index: int) -> None:
    try:
        cuda.init()
        count = int(cuda.Device.count())
    except Exception as exc:  # noqa: BLE001 - Chroma/PyCUDA raise many unrelated types
        raise ConfigError(f"{INSTALL_HINT} (no usable CUDA driver: {_one_line(exc)})") from None
    if index >= count:
        raise ConfigError(f"invalid setting engine.cuda_device (CHARON_ENGINE__CUDA_DEVICE) = {index}: "
                          f"this host has {count} CUDA device(s), allowed: 0..{count - 1}")


def _pop_contexts(cuda: Any) -> None:
    """Leave no CUDA context current on this thread (PyCUDA aborts at exit otherwise)."""
    for _ in range(16):
        try:
            if cuda.Context.get_current() is None:
                return
            cuda.Context.pop()
        except Exception:  # noqa: BLE001 - best effort while already failing
            return


def _configure_caches(kernel_cache_dir: Path | None) -> str | None:
    """Point PyCUDA's kernel cache and Chroma's BVH cache below ``kernel_cache_dir`` when it is set.

    Returns Chroma's cache directory (None = Chroma's default ``~/.chroma``).
    """
    if kernel_cache_dir is None:
        return None
    root = Path(kernel_cache_dir)
    try:
        (root / "pycuda").mkdir(parents=True, exist_ok=True)
        (root / "chroma").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"invalid setting engine.kernel_cache_dir (CHARON_ENGINE__KERNEL_CACHE_DIR) = "
                          f"'{root}': {exc.strerror}") from None
    os.environ.setdefault("PYCUDA_CACHE_DIR", str(root / "pycuda"))
    return str(root / "chroma")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ConfigError, DetectorError) as exc:
        sys.stderr.write(f"python -m charon.engine.chroma: error: {exc}\n")
        sys.exit(2)
