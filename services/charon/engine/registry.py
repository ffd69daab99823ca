"""Builds the configured backend; every backend module is imported lazily (Warp, Chroma are heavy)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from charon.errors import ConfigError
from charon.settings import EngineSettings, invalid_setting

if TYPE_CHECKING:
    from charon.engine.base import Simulator
    from charon.engine.detector import Detector


def make_simulator(engine: EngineSettings) -> Simulator:
    """The simulator for ``engine.backend``; raises ConfigError (one line) when it cannot be built."""
    if engine.backend == "chroma":
        from charon.engine.chroma import ChromaSimulator

        return ChromaSimulator.from_settings(engine)

    detector = detector_for(engine)
    if engine.backend == "echo":
        from charon.engine.echo import EchoSimulator

        return EchoSimulator(detector, delay_s=engine.echo_delay_s)
    if engine.backend == "numpy":
        from charon.engine.numpy_engine import NumpySimulator

        return NumpySimulator(detector, seed=engine.seed, max_steps=engine.max_steps)
    if engine.backend == "builtin":
        try:
            from charon.engine.warp_engine import WarpSimulator
        except ImportError as exc:
            raise ConfigError(
                f"the builtin backend needs NVIDIA Warp: pip install 'charon[worker]' ({exc})"
            ) from None
        return WarpSimulator(
            detector,
            seed=engine.seed,
            max_steps=engine.max_steps,
            device=engine.device,
            threads=engine.threads,
            chunk_photons=engine.chunk_photons,
            kernel_cache_dir=engine.kernel_cache_dir,
            cuda_device=engine.cuda_device,
        )
    raise invalid_setting("engine.backend", engine.backend, "allowed: builtin, numpy, echo, chroma")


def detector_for(engine: EngineSettings) -> Detector:
    """The detector the settings name: the reference, a ``.npz`` file, or a GDML file imported (and
    cached) with ``engine.ratdb`` / ``engine.pmt_volume``."""
    from charon.engine.detector import load_detector

    path = engine.detector
    if path is not None and path.suffix.lower() == ".gdml":
        try:
            from charon.importer import ImportOptions, imported_detector
        except ImportError as exc:
            raise ConfigError(f"importing GDML needs the worker extra: pip install 'charon[worker]' ({exc})") from None
        options = ImportOptions(ratdb=engine.ratdb, world=engine.world, pmt_volume=engine.pmt_volume,
                                chord_mm=engine.chord_mm)
        return imported_detector(path, options, engine.detector_cache_dir)
    return load_detector(path)
