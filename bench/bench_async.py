"""v1 async mode against synchronous mode for a 1,000-event RAT run, through ``charon serve``.

Both servers run for the whole bench on 127.0.0.1 and are measured interleaved (ratios in one run):

* ``sync``: ``charon serve``; every PHOTONDATA is simulated and answered with its hits;
* ``async``: ``charon serve --async-mode --outdir DIR``; every PHOTONDATA is answered
  SIM_COMPLETE_ASYNC at once and simulated ``runs.flush_events`` (500) events per engine pass,
  written to the run's ROOT file.

The client is this process, as the ratpac-two client behaves (tests/ratpac_client.py): a new REQ
socket per request, one request in flight. A run is RUN_BEGIN, 1,000 PHOTONDATA of isotropic
photons from the centre (generated before the timed phase), RUN_END; its time runs from RUN_BEGIN
to the RUN_END reply, which in async mode comes once every event is simulated, written, fsynced
and the file closed. The async file is read back and checked (1,000 entries, in order) after each
timed run. Medians over repeats with min-max, per backend and photons per event.

    .venv/bin/python bench/bench_async.py            # full: 5 repeats
    .venv/bin/python bench/bench_async.py --quick    # smoke run: 2 repeats, 200 events
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import procs
from tests import ratpac_client as rc
from tests.test_ratpac_compat import isotropic

from charon.runs.writer import read_output

QUIET = {"CHARON_LOG__LEVEL": "warning"}
#: (backend, photons per event)
CASES = (("echo", 100), ("echo", 1_000), ("numpy", 100), ("numpy", 1_000), ("builtin", 100), ("builtin", 1_000))


def run_once(endpoint: str, context: zmq.Context[Any], events: list[Any], name: str) -> float:
    client = rc.RatpacClient(endpoint, context, timeout_ms=600_000, rat_pmt_count=3000)
    client.ping()
    client.detector_info()  # PMT matching (RAT does it once per run) stays out of the timed phase
    start = time.perf_counter()
    assert client.run_begin(name)
    for photons in events:
        client.event(photons)
    assert client.run_end()
    elapsed = time.perf_counter() - start
    assert client.warnings == [], client.warnings[:3]
    return elapsed


def bench(n_events: int, repeats: int) -> dict[str, Any]:
    context: zmq.Context[Any] = zmq.Context()
    results: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as outdir:
            for backend in sorted({b for b, _ in CASES}):
                with procs.serve(backend=backend, env=QUIET) as sync, \
                        procs.serve("--async-mode", "--outdir", outdir, backend=backend, env=QUIET) as asyn:
                    for case_backend, n_photons in CASES:
                        if case_backend != backend:
                            continue
                        events = [isotropic(e, n_photons, 0x400) for e in range(n_events)]
                        run_once(sync.endpoint, context, events[:20], "warm.root")  # engine warm-up
                        run_once(asyn.endpoint, context, events[:20], "warm.root")
                        times: dict[str, list[float]] = {"sync": [], "async": []}
                        for r in range(repeats):
                            times["sync"].append(run_once(sync.endpoint, context, events, f"s{r}.root"))
                            name = f"a{r}.root"
                            times["async"].append(run_once(asyn.endpoint, context, events, name))
                            out = read_output(Path(outdir) / f"a{r}.charon.ntuple.root")
                            assert list(out["event_id"]) == list(range(n_events))
                        ratios = [s / a for s, a in zip(times["sync"], times["async"], strict=True)]
                        key = f"{backend}_{n_photons}"
                        results[key] = {
                            "backend": backend, "photons_per_event": n_photons, "events": n_events,
                            "sync_s": _stats(times["sync"]), "async_s": _stats(times["async"]),
                            "sync_over_async": _stats(ratios),
                            "async_events_per_s": n_events / statistics.median(times["async"]),
                            "sync_events_per_s": n_events / statistics.median(times["sync"]),
                        }
                        print(f"{key:>12}: sync {statistics.median(times['sync']):7.3f} s, async "
                              f"{statistics.median(times['async']):7.3f} s, sync/async "
                              f"{statistics.median(ratios):5.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f})",
                              flush=True)
    finally:
        context.destroy(linger=0)
    return results


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats of 200 events")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "async.json")
    args = parser.parse_args()
    n_events, repeats = (200, 2) if args.quick else (1_000, 5)
    results = bench(n_events, repeats)
    meta = {"python": platform.python_version(), "machine": platform.machine(), "cpus": _cpus(),
            "numpy": np.__version__, "repeats": repeats}
    if not args.quick:
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
