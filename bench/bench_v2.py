"""Protocol v2 against v1 through the router: photons/s of ``charon simulate`` at 1e3 photons per event.

One ``charon router`` and one ``charon worker --backend echo --capacity 2`` (one hit per photon, no
physics, so only transport, brokering and the protocol are measured; two requests in hand, so it
takes the next v2 job while it simulates one, which a v1 lock-step client with one request in
flight cannot use) stay up for the whole bench. Each
measurement is one ``charon simulate`` process against the router, which generates every event's
photons before its timed phase and reports photons/s over the wall time of that phase:

* ``v1``: warm lock-step, one request in flight on one REQ socket (as the ratpac-two client);
* ``v2``: ``--protocol v2``: many events per message inside the server's credit window, results
  streamed back on one DEALER connection.

The two alternate in every repeat (v1, v2, v1, v2, ...); the ratio is taken per repeat and its
median reported with min-max.

    .venv/bin/python bench/bench_v2.py            # 7 repeats of 6000 events
    .venv/bin/python bench/bench_v2.py --quick    # 2 repeats of 1000 events
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import procs

PHOTONS = 1_000
QUIET = {"CHARON_LOG__LEVEL": "warning"}


_runs = itertools.count(1)


def simulate(endpoint: str, protocol: str, events: int) -> float:
    """One ``charon simulate`` run: its photons/s over the wall time of the request phase.

    Every run has photons of its own (photon seed) and event ids of its own, so the router's
    de-duplication never answers a v1 request from an earlier run's cached reply.
    """
    run = next(_runs)
    cmd = [sys.executable, "-m", "charon", "simulate", "--endpoint", endpoint, "--protocol", protocol,
           "--events", str(events), "--photons", str(PHOTONS), "--timeout", "60",
           "--photon-seed", str(1000 + run), "--first-event", str((run * 100_000) % 2**31)]
    env = {**os.environ, **QUIET}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr[-2000:]}")
    for line in done.stdout.splitlines():
        if line.strip().startswith("photons/s (wall)"):
            return float(line.split()[-1].replace(",", ""))
    raise RuntimeError(f"no 'photons/s (wall)' row in:\n{done.stdout}")


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 repeats of 1000 events (smoke run)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--events", type=int, default=6000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "v2.json"))
    args = ap.parse_args()
    repeats, events = (2, 1000) if args.quick else (args.repeats, args.events)
    runs: dict[str, list[float]] = {"v1": [], "v2": []}
    with procs.router(env=QUIET) as router, procs.worker(router.workers_endpoint, "--capacity", "2", env=QUIET):
        simulate(router.endpoint, "v1", 50)  # warm-up: the worker has registered, caches are filled
        simulate(router.endpoint, "v2", 50)
        for _ in range(repeats):
            for protocol in ("v1", "v2"):
                runs[protocol].append(simulate(router.endpoint, protocol, events))
    ratios = [b / a for a, b in zip(runs["v1"], runs["v2"], strict=True)]
    report: dict[str, Any] = {
        "bench": "v2",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "pyzmq": zmq.__version__,
                    "libzmq": zmq.zmq_version(), "platform": platform.platform()},
        "method": (f"charon simulate through charon router + one charon worker --backend echo --capacity 2, {PHOTONS} "
                   f"photons per event, {events} events per run, photons generated before the timed phase, "
                   f"photons/s over its wall time; v1 lock-step vs --protocol v2, {repeats} interleaved repeats"),
        "photons_per_s": {k: summary(v) for k, v in runs.items()},
        "runs": runs,
        "ratio_v2_over_v1": summary(ratios),
        "quick": args.quick,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    v1s, v2s, r = report["photons_per_s"]["v1"], report["photons_per_s"]["v2"], report["ratio_v2_over_v1"]
    print(f"v1 lock-step: {v1s['median'] / 1e6:.2f} M photons/s [{v1s['min'] / 1e6:.2f}-{v1s['max'] / 1e6:.2f}]")
    print(f"v2 pipelined: {v2s['median'] / 1e6:.2f} M photons/s [{v2s['min'] / 1e6:.2f}-{v2s['max'] / 1e6:.2f}]")
    print(f"v2 / v1: {r['median']:.2f} [{r['min']:.2f}-{r['max']:.2f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
