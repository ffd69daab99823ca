"""Builds the configured backend; every backend module is imported lazily (Warp, Chroma are heavy)."""

from __future__ import annotations

from charon.engine.base import Simulator
from charon.errors import ConfigError
from charon.settings import EngineSettings


def make_simulator(engine: EngineSettings) -> Simulator:
    """The simulator for ``engine.backend``; raises ConfigError (one line) when it cannot be built."""
    if engine.backend == "chroma":
        from charon.engine.chroma import ChromaSimulator

        return ChromaSimulator.from_settings(engine)

    from charon.engine.detector import load_detector

    detector = load_detector(engine.detector)
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
    raise ConfigError(f"invalid setting engine.backend = {engine.backend!r}")
