"""Photon engine throughput on the reference detector: Geant4 vs Warp (analytic, mesh) vs NumPy.

Same photons for every engine (isotropic 420 nm from the centre of the 6 m, 3000-PMT reference
detector), same cores (Geant4: one process per core; Warp: one launch thread per core; the NumPy
reference is single-threaded by design). Engines are interleaved within each repetition, so slow
phases of a shared machine hit all of them; reported figures are medians over the repetitions
with min-max. Warp is warmed up (kernel load, first launch) before timing; Geant4 times only
``BeamOn`` after a warm-up run, as bench/geant4_baseline.py explains.

Usage: python bench/bench_engine.py [--repeats 5] [--sizes 100000 1000000] [--no-geant4]
Writes bench/results/engine.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from charon.engine.base import Hits, Photons
from charon.engine.detector import reference_detector
from charon.engine.numpy_engine import NumpySimulator
from charon.engine.warp_engine import WarpSimulator
from charon.source import isotropic_point

RESULTS = ROOT / "bench" / "results" / "engine.json"


def centre_source(n: int, event_id: int) -> Photons:
    return isotropic_point(event_id, n, (0.0, 0.0, 0.0), 420.0, seed=1000)


def timed(sim: Any, photons: Photons) -> dict[str, float]:
    t0 = time.perf_counter()
    hits: Hits = sim.simulate([photons])[0]
    dt = time.perf_counter() - t0
    n = len(photons)
    return {"seconds": dt, "rate": n / dt, "detected_fraction": len(hits) / n,
            "mean_hit_time_ns": float(np.mean(hits.time)) if len(hits) else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--no-geant4", action="store_true")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()

    det = reference_detector()
    t0 = time.perf_counter()
    analytic = WarpSimulator(det, seed=1, device="cpu", threads=args.cores, geometry="analytic")
    start_analytic = time.perf_counter() - t0
    t0 = time.perf_counter()
    mesh = WarpSimulator(det, seed=1, device="cpu", threads=args.cores, geometry="mesh")
    start_mesh = time.perf_counter() - t0
    numpy_ref = NumpySimulator(det, seed=1, max_steps=1000)
    assert mesh.scene is not None
    engines: dict[str, Callable[[Photons], dict[str, float]]] = {
        "warp_analytic": lambda ph: timed(analytic, ph),
        "warp_mesh": lambda ph: timed(mesh, ph),
        "numpy": lambda ph: timed(numpy_ref, ph),
    }
    geant4_note = None
    if not args.no_geant4:
        import geant4_baseline

        if geant4_baseline.available():
            engines = {"geant4": lambda ph: geant4_baseline.run(len(ph), args.cores), **engines}
        else:
            geant4_note = "geant4-pybind not installed: pip install geant4-pybind"
            print(geant4_note, file=sys.stderr)

    for name, fn in engines.items():  # warm-up: kernel loads, first launches, Geant4 start-up
        if name != "geant4":
            fn(centre_source(20_000, 999))

    runs: dict[str, dict[int, list[dict[str, float]]]] = {e: {n: [] for n in args.sizes} for e in engines}
    load_before = os.getloadavg()
    for rep in range(args.repeats):
        for n in args.sizes:
            photons = centre_source(n, rep)
            for name, fn in engines.items():
                r = fn(photons)
                runs[name][n].append(r)
                print(f"rep {rep} n={n:>8} {name:>14}: {r['rate'] / 1e6:8.3f} M photons/s "
                      f"(detected {r['detected_fraction']:.4f}, <t> {r['mean_hit_time_ns']:.2f} ns)",
                      file=sys.stderr, flush=True)
    load_after = os.getloadavg()

    summary: dict[str, Any] = {}
    for name, per_n in runs.items():
        summary[name] = {}
        for n, rs in per_n.items():
            rates = [r["rate"] for r in rs]
            summary[name][str(n)] = {
                "median_rate": statistics.median(rates), "min_rate": min(rates), "max_rate": max(rates),
                "rates": rates,
                "detected_fraction": statistics.median(r["detected_fraction"] for r in rs),
                "mean_hit_time_ns": statistics.median(r["mean_hit_time_ns"] for r in rs),
            }
    ratios: dict[str, Any] = {}
    paired: dict[str, Any] = {}
    if "geant4" in summary:
        for name in summary:
            if name != "geant4":
                ratios[name] = {str(n): summary[name][str(n)]["median_rate"] / summary["geant4"][str(n)]["median_rate"]
                                for n in args.sizes}
                # ratio within each repetition (both measured back to back under the same load)
                paired[name] = {}
                for n in args.sizes:
                    per_rep = [a["rate"] / g["rate"] for a, g in zip(runs[name][n], runs["geant4"][n], strict=True)]
                    paired[name][str(n)] = {"median": statistics.median(per_rep), "min": min(per_rep),
                                            "max": max(per_rep)}
    out = {
        "benchmark": "isotropic 420 nm photons from the centre of the reference detector "
                     "(6 m water sphere, 3000 PMT caps r=160 mm, QE 0.25, 30 m absorption, 50 m Rayleigh)",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": load_after},
        "cores": args.cores,
        "repeats": args.repeats,
        "notes": {
            "geant4": geant4_note or f"geant4-pybind, {args.cores} processes, PMT disks in a container shell",
            "warp_analytic": f"{args.cores} launch threads, device cpu; start-up {start_analytic:.2f} s",
            "warp_mesh": f"{args.cores} launch threads, device cpu, {mesh.scene.n_triangles} triangles; "
                         f"start-up {start_mesh:.2f} s",
            "numpy": "single thread (reference implementation)",
        },
        "results": summary,
        "ratio_to_geant4": ratios,
        "paired_ratio_to_geant4": paired,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2) + "\n")
    print(table(summary, ratios, args.sizes))
    for name, per_n in paired.items():
        print(f"{name}: per-repetition ratio to Geant4 " + ", ".join(
            f"N={n}: {r['median']:.1f}x [{r['min']:.1f}-{r['max']:.1f}]" for n, r in per_n.items()))


def table(summary: dict[str, Any], ratios: dict[str, Any], sizes: list[int]) -> str:
    head = "| engine | " + " | ".join(f"N = {n:.0e}: M photons/s, median [min-max]" for n in sizes)
    head += f" | vs Geant4 (N = {sizes[-1]:.0e}) | detected | mean hit time (ns) |"
    lines = [head, "|" + "---|" * (len(sizes) + 4)]
    for name, per_n in summary.items():
        cells = [f"{per_n[str(n)]['median_rate'] / 1e6:.3f} [{per_n[str(n)]['min_rate'] / 1e6:.3f}-"
                 f"{per_n[str(n)]['max_rate'] / 1e6:.3f}]" for n in sizes]
        ratio = ratios.get(name, {}).get(str(sizes[-1]))
        last = per_n[str(sizes[-1])]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {f'{ratio:.1f}x' if ratio else '-'} | "
                     f"{last['detected_fraction']:.4f} | {last['mean_hit_time_ns']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
