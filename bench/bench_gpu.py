"""The built-in engine on a GPU: photons/s and device memory for every detector path, one run.

Engine-level (``WarpSimulator.simulate``, no sockets), so it needs only numpy, warp-lang and
charon's pure-Python settings on the GPU machine. For each detector — the reference detector
traced analytically and as its 56,480-triangle mesh, and an imported (Geant4-written, RAT-like)
detector file — it times requests of 1e3, 1e5 and 1e7 isotropic 420 nm photons from the centre
(one event per ``simulate`` call, medians of repeats after a warm-up), then batched small events:
``--batch`` events of 1e3 photons in one call (one engine pass) against one event of the same
total. It prints a markdown table and writes JSON. With ``--backend chroma`` available (Chroma and
PyCUDA importable) the reference mesh detector also goes through Chroma for the side-by-side ratio.

``bench/gpu.sh`` runs it on a lent GPU; on a CPU it runs too (``--device cpu --sizes 1000 100000``),
which is how the script itself is checked.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "services"))

from charon.engine.base import Hits, Photons
from charon.engine.detector import Detector, load_detector, reference_detector
from charon.engine.warp_engine import WarpSimulator
from charon.source import isotropic_point


def source(n: int, event_id: int, centre: tuple[float, float, float]) -> Photons:
    return isotropic_point(event_id, n, centre, 420.0, seed=event_id + 17)


def device_memory(sim: WarpSimulator) -> dict[str, float] | None:
    """Used and total memory of the simulator's CUDA device (MiB), None on the CPU."""
    if sim.device == "cpu":
        return None
    dev = sim._wp.get_device(sim.device)  # the engine's own Warp module and device
    return {"used_mib": (dev.total_memory - dev.free_memory) / 2**20, "total_mib": dev.total_memory / 2**20}


def timed(sim: WarpSimulator, events: list[Photons], repeats: int) -> dict[str, float]:
    """Median photons/s of ``simulate(events)`` (one call, one pass) over ``repeats`` calls."""
    n = sum(len(e) for e in events)
    rates, hits = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        out: list[Hits] = sim.simulate(events)
        rates.append(n / (time.perf_counter() - t0))
        hits = sum(len(h) for h in out)
    return {"photons": n, "median": statistics.median(rates), "min": min(rates), "max": max(rates),
            "hit_fraction": hits / n}


def centre_of(det: Detector) -> tuple[float, float, float]:
    if det.scene is not None:
        lo, hi = det.scene.world_bounds()
        # the middle of the world volume's box (an imported detector's source point)
        return tuple(float(v) for v in (lo[0] + hi[0]) / 2)  # type: ignore[return-value]
    return (0.0, 0.0, 0.0)


def run_detector(name: str, sim: WarpSimulator, centre: tuple[float, float, float], sizes: list[int],
                 repeats: int, batch: int) -> dict[str, Any]:
    sim.simulate([source(1000, 0, centre)])  # kernels loaded, buffers made
    out: dict[str, Any] = {"geometry": sim.geometry, "device": sim.device, "sizes": {}}
    for n in sizes:
        reps = repeats if n < 10_000_000 else max(1, repeats // 2)
        r = timed(sim, [source(n, 1, centre)], reps)
        out["sizes"][str(n)] = r
        print(f"{name:>22} {n:>10} photons/request: {r['median'] / 1e6:10.2f} M photons/s "
              f"(hit fraction {r['hit_fraction']:.4f})", flush=True)
    small = [source(1000, 100 + i, centre) for i in range(batch)]
    one = [source(1000 * batch, 99, centre)]
    b, s = timed(sim, small, repeats), timed(sim, one, repeats)
    out["batched"] = {"events": batch, "photons_per_event": 1000, "batched": b, "one_event": s,
                      "ratio": b["median"] / s["median"]}
    print(f"{name:>22} {batch} x 1e3 in one pass: {b['median'] / 1e6:10.2f} M photons/s = "
          f"{b['median'] / s['median']:.2f} of one {1000 * batch}-photon event", flush=True)
    out["memory"] = device_memory(sim)
    return out


def chroma_side_by_side(sizes: list[int], repeats: int) -> dict[str, Any]:
    """The reference mesh through Chroma when it imports here; else the reason it was skipped."""
    try:
        from charon.engine.chroma import import_chroma

        import_chroma()
    except Exception as exc:  # noqa: BLE001 - any failure to import is a skip with its reason
        return {"skipped": f"{type(exc).__name__}: {exc}"}
    return {"skipped": "Chroma imports; its detector loader needs a Chroma-format detector "
                       "(the reference mesh is not converted by this script)", "sizes": sizes,
            "repeats": repeats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000, 10_000_000])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1000, help="events of 1e3 photons in the batched pass")
    ap.add_argument("--imported", type=Path, help="an imported detector file (.npz) to time as well")
    ap.add_argument("--output", type=Path, default=Path("gpu.json"))
    args = ap.parse_args()

    ref = reference_detector()
    detectors: list[tuple[str, Detector, str]] = [("reference, analytic", ref, "analytic"),
                                                  ("reference, mesh", ref, "mesh")]
    if args.imported is not None:
        detectors.append((f"imported {args.imported.stem}", load_detector(args.imported), "auto"))
    results: dict[str, Any] = {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "device": args.device, "detectors": {}}
    for name, det, geometry in detectors:
        t0 = time.perf_counter()
        sim = WarpSimulator(det, seed=1, device=args.device, geometry=geometry)  # type: ignore[arg-type]
        startup = time.perf_counter() - t0
        try:
            r = run_detector(name, sim, centre_of(det), args.sizes, args.repeats, args.batch)
        finally:
            sim.close()
        r["startup_s"] = startup
        results["detectors"][name] = r
        if r["memory"]:
            print(f"{name:>22} device memory in use: {r['memory']['used_mib']:.0f} MiB", flush=True)
    results["chroma"] = chroma_side_by_side(args.sizes, args.repeats)
    print(f"chroma: {results['chroma'].get('skipped', 'measured')}")
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    header = " | ".join(f"1e{len(str(n)) - 1} photons/request" for n in args.sizes)
    print(f"\n| detector | {header} | {args.batch} x 1e3 batched | memory MiB |")
    print("|---" * (len(args.sizes) + 3) + "|")
    for name, r in results["detectors"].items():
        cells = " | ".join(f"{r['sizes'][str(n)]['median'] / 1e6:.1f} M/s" for n in args.sizes)
        mem = f"{r['memory']['used_mib']:.0f}" if r["memory"] else "-"
        print(f"| {name} | {cells} | {r['batched']['batched']['median'] / 1e6:.1f} M/s "
              f"({r['batched']['ratio']:.2f}) | {mem} |")


if __name__ == "__main__":
    main()
