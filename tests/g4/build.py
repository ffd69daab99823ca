"""Test detectors written by Geant4 itself: GDML + RATDB PMTINFO + meta.json, one call per detector.

``build_<name>(out_dir, **params)`` constructs the detector of ``tests.g4.detectors`` in a fresh
Geant4 process (``python -m tests.g4.build NAME --out DIR --params JSON``), writes it with
``G4GDMLParser.Write(path, world_logical, True)`` and returns a ``BuiltDetector``. The GDML is
Geant4's own output, unchanged: with ``storeReferences=True`` every name carries its ``0x<address>``
suffix, so matrix, solid, volume and surface names are unique and the file reads back cleanly; the
builder checks that uniqueness instead of rewriting the file. (``refs=False`` would name every
property matrix plainly and collide on read-back.) Geant4 writes property values with 6
significant digits and positions with 15.

Outputs in ``out_dir``: ``detector.gdml``, ``pmtinfo.json`` (RATDB, channel = list order, position =
global translation of each PMT's placed volume) and ``meta.json`` (dimensions, materials, surfaces,
expected physics, build timings).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tests.g4 import detectors
from tests.g4.proc import result_line, run_module
from tests.g4.ratdb import read_pmtinfo, write_pmtinfo

GDML_NAME = "detector.gdml"
RATDB_NAME = "pmtinfo.json"
META_NAME = "meta.json"
BUILD_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class BuiltDetector:
    gdml: Path
    ratdb: Path
    pmt_positions: npt.NDArray[np.float64]  # (P, 3) mm, channel order
    pmt_directions: npt.NDArray[np.float64]  # (P, 3) unit, local +z of each PMT
    meta: dict[str, Any]

    @property
    def meta_path(self) -> Path:
        return self.gdml.parent / META_NAME

    @property
    def name(self) -> str:
        return str(self.meta["detector"])

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.meta["params"])


def build(name: str, out_dir: Path | str, *, check_overlaps: bool = False,
          timeout_s: float = BUILD_TIMEOUT_S, **params: Any) -> BuiltDetector:
    """Build detector ``name`` with ``params`` into ``out_dir`` (created; old outputs replaced)."""
    if name not in detectors.DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(detectors.DETECTORS)}")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for f in (GDML_NAME, RATDB_NAME, META_NAME):
        (out / f).unlink(missing_ok=True)  # G4GDMLParser.Write aborts on an existing file
    args = ["-m", "tests.g4.build", name, "--out", str(out), "--params", json.dumps(params)]
    if check_overlaps:
        args.append("--check-overlaps")
    done = run_module(args, timeout_s)
    result_line(done.stdout, "BUILT")
    return load(out)


def load(out_dir: Path | str) -> BuiltDetector:
    """A detector built earlier into ``out_dir``."""
    out = Path(out_dir)
    pos, d, _ = read_pmtinfo(out / RATDB_NAME)
    meta = json.loads((out / META_NAME).read_text())
    return BuiltDetector(out / GDML_NAME, out / RATDB_NAME, pos, d, meta)


def build_water_cylinder(out_dir: Path | str, **params: Any) -> BuiltDetector:
    return build("water_cylinder", out_dir, **params)


def build_acrylic_vessel(out_dir: Path | str, **params: Any) -> BuiltDetector:
    return build("acrylic_vessel", out_dir, **params)


def build_dispersive(out_dir: Path | str, **params: Any) -> BuiltDetector:
    return build("dispersive", out_dir, **params)


def build_reflector(out_dir: Path | str, **params: Any) -> BuiltDetector:
    return build("reflector", out_dir, **params)


def build_rat_like(out_dir: Path | str, n_pmts: int = 240, **params: Any) -> BuiltDetector:
    return build("rat_like", out_dir, n_pmts=n_pmts, **params)


def build_sphere_wall(out_dir: Path | str, **params: Any) -> BuiltDetector:
    return build("sphere_wall", out_dir, **params)


def build_slab_stack(out_dir: Path | str, **params: Any) -> BuiltDetector:
    return build("slab_stack", out_dir, **params)


# The geometry documentation lives with the construction code; the builders show the same text.
for _fn, _name in ((build_water_cylinder, "water_cylinder"), (build_acrylic_vessel, "acrylic_vessel"),
                   (build_dispersive, "dispersive"), (build_reflector, "reflector"),
                   (build_rat_like, "rat_like"), (build_sphere_wall, "sphere_wall"),
                   (build_slab_stack, "slab_stack")):
    _fn.__doc__ = detectors.DETECTORS[_name].__doc__


# ------------------------------------------------------------------------------ GDML checks

_NAME_KINDS = ("matrix", "opticalsurface", "volume", "physvol", "bordersurface", "skinsurface",
               "material", "element", "isotope")


def duplicate_names(gdml_text: str) -> dict[str, list[str]]:
    """Names used twice within one kind of GDML entity (a clean Geant4 read-back needs none)."""
    dups: dict[str, list[str]] = {}
    for kind in _NAME_KINDS:
        names = re.findall(rf'<{kind}\b[^>]*?\bname="([^"]+)"', gdml_text)
        twice = [n for n, c in Counter(names).items() if c > 1]
        if twice:
            dups[kind] = twice
    return dups


# ------------------------------------------------------------------------------ worker


def _worker(name: str, out: Path, params: dict[str, Any], check_overlaps: bool) -> dict[str, Any]:
    if "GEANT4_DATA_DIR" not in os.environ:  # run by hand: make this process offline-safe first
        from tests.g4.offline import prepare_environment

        os.environ.update(prepare_environment(tempfile.mkdtemp(prefix="g4env-")))
        os.environ.pop("CI", None)
    from tests.g4.kit import Kit
    from tests.g4.offline import geant4_version

    t0 = time.perf_counter()
    kit = Kit(check_overlaps=check_overlaps)
    geo = detectors.construct(kit, name, params)
    t1 = time.perf_counter()
    gdml = out / GDML_NAME
    kit.g4.G4GDMLParser().Write(str(gdml), geo.world_lv, True)
    t2 = time.perf_counter()
    text = gdml.read_text()
    dups = duplicate_names(text)
    if dups:
        raise RuntimeError(f"GDML names not unique: {dups}")
    write_pmtinfo(out / RATDB_NAME, geo.pmt_positions, geo.pmt_directions, geo.pmt_types)
    meta = dict(geo.meta)
    meta["files"] = {"gdml": GDML_NAME, "ratdb": RATDB_NAME}
    meta["gdml_names"] = ("Geant4 appends 0x<address> to every name in the GDML (storeReferences=True); "
                          "the names in this file are those before the first '0x'")
    meta["build"] = {"geant4": geant4_version(), "construct_s": t1 - t0, "write_gdml_s": t2 - t1,
                     "gdml_bytes": len(text.encode()), "overlap_check": check_overlaps,
                     "overlaps": kit.overlaps}
    (out / META_NAME).write_text(json.dumps(meta, indent=1) + "\n")
    return {"detector": name, "n_pmts": len(geo.pmt_positions), **meta["build"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Build a test detector in Geant4 and write GDML + RATDB + meta")
    ap.add_argument("detector", choices=sorted(detectors.DETECTORS))
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--params", default="{}", help="JSON object of keyword parameters")
    ap.add_argument("--check-overlaps", action="store_true")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = _worker(args.detector, args.out, json.loads(args.params), args.check_overlaps)
    sys.stdout.write("BUILT " + json.dumps(summary) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: freeing the kept Geant4 objects in Python's order can crash.
    os._exit(0)


if __name__ == "__main__":
    main()
