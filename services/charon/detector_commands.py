"""``charon detector import|info|plot``: turn a Geant4/RAT-PAC detector into a charon detector file,
and show what a detector file holds.

``import`` reads GDML (+ RATDB PMTINFO), prints what it found and every approximation it made, and
writes the ``.npz`` that ``serve``/``worker --detector`` load (they also accept the GDML itself).
``info`` and ``plot`` accept a ``.npz`` or a GDML file (imported on the fly), or nothing for the
built-in reference detector.
"""

from __future__ import annotations

import sys
from pathlib import Path

from charon.engine.detector import Detector, save_detector
from charon.errors import ConfigError
from charon.settings import EngineSettings


def import_detector(gdml: Path, output: Path, engine: EngineSettings) -> int:
    """Import ``gdml`` with the engine's GDML settings (ratdb, world, pmt_volume, chord_mm) and save it."""
    from charon.importer import ImportOptions, import_gdml

    if gdml.suffix.lower() != ".gdml":
        raise ConfigError(f"charon detector import reads a .gdml file, got {str(gdml)!r}")
    if output.suffix.lower() != ".npz":
        raise ConfigError(f"-o/--output must name a .npz file, got {str(output)!r}")
    if not output.parent.is_dir():
        raise ConfigError(f"-o/--output {str(output)!r}: directory {str(output.parent)!r} does not exist")
    report = import_gdml(gdml, ImportOptions(ratdb=engine.ratdb, world=engine.world,
                                             pmt_volume=engine.pmt_volume, chord_mm=engine.chord_mm))
    det = report.detector
    save_detector(det, output)
    from charon.detector_view import summary

    for line in summary(det):
        print(line)
    t = report.timings
    print(f"  import        {sum(t.values()):.2f} s (parse {t.get('parse_s', 0):.2f}, walk {t.get('walk_s', 0):.2f}, "
          f"PMT match {t.get('match_s', 0):.2f}, optics {t.get('optics_s', 0):.2f}, "
          f"meshes {t.get('mesh_s', 0):.2f})")
    print(f"wrote {output}")
    return 0


def load_for_view(path: Path | None, engine: EngineSettings) -> Detector:
    from charon.engine.registry import detector_for

    return detector_for(engine.model_copy(update={"detector": path}))


def info(path: Path | None, engine: EngineSettings) -> int:
    from charon.detector_view import summary

    for line in summary(load_for_view(path, engine)):
        print(line)
    return 0


def plot(path: Path | None, out: Path, engine: EngineSettings) -> int:
    from charon.detector_view import plot as draw

    if not out.parent.is_dir():
        raise ConfigError(f"--out {str(out)!r}: directory {str(out.parent)!r} does not exist")
    written = draw(load_for_view(path, engine), out)
    print(f"wrote {written}", file=sys.stdout)
    return 0
