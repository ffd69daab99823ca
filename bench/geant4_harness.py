"""Geant4's photon rate on the harness detectors (tests/g4), the baseline charon is compared with.

For each detector (``water_cylinder``, ``rat_like`` with 240 / 1000 / 10 000 PMTs) it builds the
GDML once, then runs N isotropic 420 nm photons from the centre through Geant4 in 1 and 2
processes (``tests.g4.api.run``: the photons come from Python, one G4ParticleGun vertex each, the
hits go to a Python sensitive detector) and reports, per configuration, the median of the
repetitions of:

- ``beamon``: N / parallel BeamOn wall time (last end - first start), everything included;
- ``geant4``: N / (BeamOn - time in the Python generator - time in the Python SD) of the slowest
  process, an estimate of Geant4's own rate without the harness' Python side.

Run: ``python bench/geant4_harness.py [--photons 100000 1000000] [--processes 1 2] [--repeats 3]``;
``--json FILE`` keeps the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.g4 import api, build

DETECTORS: list[tuple[str, str, dict[str, Any]]] = [
    ("water_cylinder", "water_cylinder", {}),
    ("rat_like_240", "rat_like", {"n_pmts": 240}),
    ("rat_like_1000", "rat_like", {"n_pmts": 1000}),
    ("rat_like_10000", "rat_like", {"n_pmts": 10_000}),
]


def measure(det: build.BuiltDetector, n: int, processes: int, repeats: int, trim: bool) -> dict[str, Any]:
    rng = np.random.default_rng(n + processes)
    photons = api.photon_batch((0, 0, 0), api.isotropic(n, rng), 420.0, rng=rng)
    runs = []
    for r in range(repeats):
        hits = api.run(det.gdml, det.ratdb, photons, seed=100 + 10 * r, processes=processes, trim=trim,
                       timeout_s=1800)
        runs.append({"beamon": hits.photons_per_s, "geant4": hits.geant4_photons_per_s,
                     "detected_fraction": hits.detected_fraction,
                     "generate_s": sum(i["generate_s"] for i in hits.infos),
                     "sd_s": sum(i["sd_s"] for i in hits.infos), "wall_s": hits.beamon_wall_s})
    return {
        "photons": n, "processes": processes, "trim": trim, "repeats": runs,
        "beamon_per_s": statistics.median(x["beamon"] for x in runs),
        "beamon_range": [min(x["beamon"] for x in runs), max(x["beamon"] for x in runs)],
        "geant4_per_s": statistics.median(x["geant4"] for x in runs),
        "detected_fraction": statistics.mean(x["detected_fraction"] for x in runs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photons", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--detectors", nargs="+", default=[d[0] for d in DETECTORS])
    ap.add_argument("--no-trim", action="store_true", help="keep OpWLS/OpWLS2 (always off: Cerenkov, ...)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results: dict[str, Any] = {
        "benchmark": "isotropic 420 nm photons from the centre, Geant4 11.4 via geant4-pybind (tests/g4)",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count(), "loadavg_before": list(os.getloadavg())},
        "detectors": {},
    }
    with tempfile.TemporaryDirectory(prefix="g4bench-") as tmp:
        for label, name, params in DETECTORS:
            if label not in args.detectors:
                continue
            t0 = time.perf_counter()
            det = build.build(name, Path(tmp) / label, **params)
            entry: dict[str, Any] = {"params": params, "n_pmts": len(det.pmt_positions),
                                     "build_s": time.perf_counter() - t0, "build": det.meta["build"], "runs": []}
            for n in args.photons:
                for k in args.processes:
                    m = measure(det, n, k, args.repeats, trim=not args.no_trim)
                    entry["runs"].append(m)
                    print(f"{label:16s} N={n:>8d} P={k}  BeamOn {m['beamon_per_s'] / 1e3:7.1f} k/s "
                          f"[{m['beamon_range'][0] / 1e3:.1f}-{m['beamon_range'][1] / 1e3:.1f}]  "
                          f"Geant4 only {m['geant4_per_s'] / 1e3:7.1f} k/s  detected {m['detected_fraction']:.4f}",
                          flush=True)
            results["detectors"][label] = entry
    results["machine"]["loadavg_after"] = list(os.getloadavg())
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
