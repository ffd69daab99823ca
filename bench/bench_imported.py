"""Imported (Geant4-written) detectors: import time and memory, and charon against Geant4 on one file.

1. Import: ``charon detector import`` of RAT-like detectors (tests/g4's ``rat_like``: envelope,
   glass body, two vacuum halves, photocathode and mirror border surfaces) with 240, 1000 and
   10,000 PMTs, each in a fresh process: wall time and peak resident memory; then the peak resident
   memory of ``charon serve`` holding the 10,000-PMT detector after simulating.
2. Speed: the same Geant4-written GDML detector and the same photon source (isotropic 420 nm from
   a point) on the same two cores: charon through ``charon serve`` (CPU, lock-step requests of
   1e5 photons pre-generated before the timed phase: photons/s over the wall time of the request
   phase) against Geant4 in two processes (tests/g4: ``beamon`` includes the harness' Python
   photon generator and sensitive detector, ``geant4`` subtracts their measured time: Geant4's own
   rate). Variants are interleaved in every repetition; medians and [min-max] are reported.

Run: ``python bench/bench_imported.py [--repeats 3] [--requests 10]``; writes
``bench/results/imported.json`` and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import procs
from tests.g4 import api, build

from charon.client import Client
from charon.engine.base import Photons

RESULTS = ROOT / "bench" / "results" / "imported.json"
PHOTONS_PER_REQUEST = 100_000

IMPORT_CODE = r"""
import json, resource, sys, time
from pathlib import Path
from charon.importer import ImportOptions, import_gdml
from charon.engine.detector import save_detector
t0 = time.perf_counter()
report = import_gdml(Path(sys.argv[1]), ImportOptions(ratdb=Path(sys.argv[2])))
save_detector(report.detector, Path(sys.argv[3]))
print(json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_mb": resource.getrusage(
    resource.RUSAGE_SELF).ru_maxrss / 1024, "counts": report.counts, "timings": report.timings}))
"""


def _median(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def import_scale(work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in (240, 1000, 10_000):
        det = build.build("rat_like", work / f"rat{n}", n_pmts=n)
        npz = work / f"rat{n}.npz"
        done = subprocess.run([sys.executable, "-c", IMPORT_CODE, str(det.gdml), str(det.ratdb), str(npz)],
                              capture_output=True, text=True, check=True, timeout=600)
        out[str(n)] = json.loads(done.stdout.strip().splitlines()[-1])
        out[str(n)]["gdml_mb"] = det.gdml.stat().st_size / 1e6
        print(f"import rat_like {n}: {out[str(n)]['seconds']:.2f} s, peak {out[str(n)]['peak_rss_mb']:.0f} MB",
              flush=True)
    return out


def serve_memory(npz: Path) -> float:
    """Peak resident memory (MB) of `charon serve` holding ``npz`` after a 1e5-photon request."""
    with procs.serve("--detector", str(npz), "--device", "cpu", backend="builtin") as server, \
            Client(server.endpoint, timeout_s=600, retries=0) as client:
        client.simulate(_photons(PHOTONS_PER_REQUEST, 0, seed=1))
        status = Path(f"/proc/{server.proc.pid}/status").read_text()
        return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")) / 1024


def _photons(n: int, event_id: int, seed: int) -> Photons:
    rng = np.random.default_rng(seed)
    p = api.photon_batch(SOURCE, api.isotropic(n, rng), 420.0, rng=rng)
    return Photons.from_arrays(event_id, p["pos"], p["dir"], p["pol"], p["wavelength"], p["time"])


SOURCE = (150.0, -250.0, 300.0)


def charon_rate(client: Client, requests: list[Photons]) -> float:
    t0 = time.perf_counter()
    for ph in requests:
        client.simulate(ph)
    return sum(len(p) for p in requests) / (time.perf_counter() - t0)


def speed(work: Path, repeats: int, n_requests: int) -> dict[str, Any]:
    det = build.build("water_cylinder", work / "wc")
    npz = work / "wc.npz"
    subprocess.run([sys.executable, "-c", IMPORT_CODE, str(det.gdml), str(det.ratdb), str(npz)], check=True,
                   capture_output=True, timeout=600)
    n = n_requests * PHOTONS_PER_REQUEST
    rows: dict[str, list[float]] = {"charon": [], "geant4_beamon": [], "geant4": []}
    with procs.serve("--detector", str(npz), "--device", "cpu", backend="builtin") as server, \
            Client(server.endpoint, timeout_s=600, retries=0) as client:
        client.simulate(_photons(10_000, 99, seed=99))  # warm
        for r in range(repeats):
            requests = [_photons(PHOTONS_PER_REQUEST, k, seed=1000 * r + k) for k in range(n_requests)]
            rows["charon"].append(charon_rate(client, requests))
            rng = np.random.default_rng(7 + r)
            photons = api.photon_batch(SOURCE, api.isotropic(n, rng), 420.0, rng=rng)
            g4 = api.run(det.gdml, det.ratdb, photons, seed=100 + r, processes=2, timeout_s=1800)
            rows["geant4_beamon"].append(g4.photons_per_s)
            rows["geant4"].append(g4.geant4_photons_per_s)
            print(f"repeat {r}: charon {rows['charon'][-1] / 1e6:.3f} M/s, Geant4 {g4.geant4_photons_per_s / 1e6:.3f} "
                  f"(with the Python harness {g4.photons_per_s / 1e6:.3f})", flush=True)
    ratios = {"vs_geant4": [c / g for c, g in zip(rows["charon"], rows["geant4"], strict=True)],
              "vs_geant4_beamon": [c / g for c, g in zip(rows["charon"], rows["geant4_beamon"], strict=True)]}
    return {"detector": "water_cylinder (48 union-solid PMT bulbs)", "photons_per_request": PHOTONS_PER_REQUEST,
            "requests": n_requests, "rates": {k: _median(v) for k, v in rows.items()},
            "ratios": {k: _median(v) for k, v in ratios.items()}, "raw": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="charon-bench-imported-") as tmp:
        work = Path(tmp)
        result: dict[str, Any] = {
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load": os.getloadavg()},
            "import": import_scale(work),
        }
        result["serve_peak_rss_mb_10000_pmts"] = serve_memory(work / "rat10000.npz")
        print(f"serve with 10,000 PMTs: peak {result['serve_peak_rss_mb_10000_pmts']:.0f} MB", flush=True)
        result["speed"] = speed(work, args.repeats, args.requests)
        result["machine"]["load_after"] = os.getloadavg()
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print("\n| PMTs | GDML MB | import s | peak RSS MB | placements | instances | shapes | placed triangles |")
    print("|---|---|---|---|---|---|---|---|")
    for n, r in result["import"].items():
        c = r["counts"]
        print(f"| {n} | {r['gdml_mb']:.1f} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} | {c['placements']} | "
              f"{c['instances']} | {c['shapes']} | {c['placed_triangles']} |")
    s = result["speed"]
    print("\n| variant | M photons/s |\n|---|---|")
    for k, v in s["rates"].items():
        print(f"| {k} | {v['median'] / 1e6:.3f} [{v['min'] / 1e6:.3f}-{v['max'] / 1e6:.3f}] |")
    for k, v in s["ratios"].items():
        print(f"| charon / {k[3:]} | {v['median']:.2f} [{v['min']:.2f}-{v['max']:.2f}] |")


if __name__ == "__main__":
    main()
