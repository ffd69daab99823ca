"""Small events keep the engine full: many events in one engine pass, through serve and router.

A lean client keeps 16 requests in flight (16 REQ sockets polled by one thread, as 16 RAT-PAC
processes would have them) with photons generated and encoded before the timed phase, and measures photons/s over the wall time
of the request phase. Events of 1,000 photons are compared with events of 100,000 photons (the
goal: at least half their rate), through ``charon serve`` (builtin engine, CPU, reference
detector), through ``charon serve`` with one request per engine pass
(``CHARON_ENGINE__BATCH_MAX_PHOTONS=1``, what serve did before it batched), and through
``charon router`` + one ``charon worker --capacity 16``. Variants interleave in each repetition.

Run: ``python bench/bench_batching.py [--repeats 3]``; writes ``bench/results/batching.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import procs

from charon.engine.base import Photons
from charon.source import isotropic_point

RESULTS = ROOT / "bench" / "results" / "batching.json"
IN_FLIGHT = 16
#: Photons per size, so both sizes take a comparable time.
TOTAL = {1_000: 1_600_000, 100_000: 3_200_000}


def run_clients(endpoint: str, events: list[Photons], shift: int = 0) -> float:
    """photons/s of ``events`` (event ids shifted by ``shift``, so no two repetitions look like
    resends) sent by IN_FLIGHT lock-step REQ sockets from one thread (a lean client: its own cost
    stays small), over the wall time of the request phase."""
    import zmq

    from charon.protocol import tokens

    ctx = zmq.Context()
    socks = []
    for _ in range(IN_FLIGHT):
        s = ctx.socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint)
        socks.append(s)
    requests = [[tokens.PHOTONDATA, replace(ev, event_id=(ev.event_id + shift) & 0xFFFFFFFF).metadata(),
                 *ev.frames()] for ev in events]
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
    t0 = time.perf_counter()
    nxt = 0
    busy = 0
    for s in socks:
        if nxt < len(requests):
            s.send_multipart(requests[nxt], copy=False)
            nxt += 1
            busy += 1
    while busy:
        for s, _ in poller.poll(600_000):
            reply = s.recv_multipart(copy=False)
            if reply[0].bytes != tokens.SIM_COMPLETE:
                raise RuntimeError(f"unexpected reply {reply[0].bytes!r}")
            busy -= 1
            if nxt < len(requests):
                s.send_multipart(requests[nxt], copy=False)
                nxt += 1
                busy += 1
    dt = time.perf_counter() - t0
    ctx.destroy(linger=0)
    return sum(len(e) for e in events) / dt


@contextlib.contextmanager
def targets() -> Iterator[dict[str, str]]:
    engine = ("--device", "cpu")
    batched = {"CHARON_ENGINE__BATCH_MAX_PHOTONS": "2000000"}
    single = {"CHARON_ENGINE__BATCH_MAX_PHOTONS": "1"}
    with procs.serve(*engine, backend="builtin", env=batched) as serve, \
            procs.serve(*engine, backend="builtin", env=single) as serve_single, \
            procs.router() as router, \
            procs.worker(router.workers_endpoint, *engine, "--capacity", str(IN_FLIGHT), backend="builtin",
                         env=batched):
        yield {"serve": serve.endpoint, "serve, one request per pass": serve_single.endpoint,
               "router + worker": router.endpoint}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    events = {size: [isotropic_point(k, size, (0.0, 0.0, 0.0), 420.0, seed=k) for k in range(total // size)]
              for size, total in TOTAL.items()}
    rates: dict[str, dict[int, list[float]]] = {}
    with targets() as endpoints:
        for name, endpoint in endpoints.items():  # warm every engine
            run_clients(endpoint, events[1_000][:IN_FLIGHT])
            rates[name] = {size: [] for size in TOTAL}
        for r in range(args.repeats):
            for name, endpoint in endpoints.items():
                for size in TOTAL:
                    rate = run_clients(endpoint, events[size], shift=(r + 1) * 100_000)
                    rates[name][size].append(rate)
                    print(f"repeat {r}: {name}, {size} photons/event: {rate / 1e6:.3f} M photons/s", flush=True)
    summary: dict[str, Any] = {}
    for name, by_size in rates.items():
        med = {size: statistics.median(v) for size, v in by_size.items()}
        ratios = [a / b for a, b in zip(by_size[1_000], by_size[100_000], strict=True)]
        summary[name] = {"photons_per_s": {str(k): {"median": v, "min": min(by_size[k]), "max": max(by_size[k])}
                                           for k, v in med.items()},
                         "small_over_large": {"median": statistics.median(ratios), "min": min(ratios),
                                              "max": max(ratios)}}
    result = {"in_flight": IN_FLIGHT, "repeats": args.repeats, "load": os.getloadavg(), "results": summary,
              "raw": {n: {str(k): v for k, v in r.items()} for n, r in rates.items()}}
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print("\n| target | 1e3 photons/event, M/s | 1e5 photons/event, M/s | 1e3 / 1e5 |\n|---|---|---|---|")
    for name, s in summary.items():
        a, b = s["photons_per_s"]["1000"], s["photons_per_s"]["100000"]
        q = s["small_over_large"]
        print(f"| {name} | {a['median'] / 1e6:.2f} [{a['min'] / 1e6:.2f}-{a['max'] / 1e6:.2f}] | "
              f"{b['median'] / 1e6:.2f} [{b['min'] / 1e6:.2f}-{b['max'] / 1e6:.2f}] | "
              f"**{q['median']:.2f}** [{q['min']:.2f}-{q['max']:.2f}] |")


if __name__ == "__main__":
    main()
