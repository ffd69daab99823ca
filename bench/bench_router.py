"""Router throughput and latency against a direct server and a bare forwarding hop (echo backend).

Variants, all on 127.0.0.1, all kept running for the whole bench and measured interleaved:

* ``direct``: client -> ``charon serve --backend echo``;
* ``router``: client -> ``charon router`` -> ``charon worker --backend echo``;
* ``router_nodedup``: the same with ``router.dedup_window_s=0`` (no reply cache), to show what
  keeping completed requests and replies for resends costs;
* ``bare``: client -> a minimal Python ROUTER/ROUTER LRU hop (``copy=False``, no other logic)
  -> ``charon worker --backend echo`` (the same worker program as ``router``): the practical
  limit of any Python broker on this machine;
* ``proxy``: client -> C ``zmq.proxy`` (ROUTER/DEALER) -> ``charon serve --backend echo``.

The client is this process: one REQ socket, lock-step, distinct event ids (so nothing is
de-duplicated). Photons/s per event size; then PING requests/s through the router with 1 and 8
client processes and the 1-client latency distribution. Medians over repeats with min-max.

    .venv/bin/python bench/bench_router.py            # full: 7 repeats
    .venv/bin/python bench/bench_router.py --quick    # smoke run: 2 repeats, smaller counts
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import procs

SIZES = (1_000, 100_000, 1_000_000)
VARIANTS = ("direct", "router", "router_nodedup", "bare", "proxy")
#: Seconds of traffic per measurement (at least MIN_EVENTS events).
WINDOW_S = 0.6
MIN_EVENTS = 4
QUIET = {"CHARON_LOG__LEVEL": "warning", "CHARON_METRICS__ENABLED": "true", **dict(e.split("=", 1) for e in os.environ.get("BENCH_ENV", "").split() if e)}


# ---- the bare hops (run as subprocesses of this script) -----------------------------------------


def bare_hop(front_ep: str, back_ep: str) -> None:
    """Minimal LRU broker speaking just enough CHARONW1 to drive a charon worker.

    The client identity (5 bytes from ROUTER) padded to 8 bytes is the request token, so the
    hop keeps no per-request state. Frames are forwarded as received zmq.Frame objects.
    """
    ctx: zmq.Context[Any] = zmq.Context()
    front, back = ctx.socket(zmq.ROUTER), ctx.socket(zmq.ROUTER)
    for s in (front, back):
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.RCVHWM, 0)
    front.bind(front_ep)
    back.bind(back_ep)
    print(f"ready endpoint={_last(front)} workers_endpoint={_last(back)}", flush=True)
    idle: list[bytes] = []
    poller = zmq.Poller()
    poller.register(back, zmq.POLLIN)
    both = zmq.Poller()
    both.register(back, zmq.POLLIN)
    both.register(front, zmq.POLLIN)
    request, proto = b"\x03", b"CHARONW1"
    while True:
        ready = dict((both if idle else poller).poll(1000))
        if back in ready:
            frames = back.recv_multipart(copy=False)
            wid = frames[0].bytes
            if len(frames) > 3 and frames[2].bytes == b"\x04":  # REPLY
                front.send_multipart([frames[3].bytes[:5], b"", *frames[4:]], copy=False)
                idle.append(wid)
            elif frames[2].bytes == b"\x01":  # READY
                idle.append(wid)
        if front in ready and idle:
            frames = front.recv_multipart(copy=False)
            if frames[2].bytes == b"PING":  # so PING rates compare with a bare Python ROUTER
                front.send_multipart([frames[0], b"", b"ACK"], copy=False)
                continue
            token = frames[0].bytes.ljust(8, b"\0")
            back.send_multipart([idle.pop(0), proto, request, token, *frames[2:]], copy=False)


def proxy_hop(front_ep: str, server_ep: str) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    front, back = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    for s in (front, back):
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.RCVHWM, 0)
    front.bind(front_ep)
    back.connect(server_ep)
    print(f"ready endpoint={_last(front)}", flush=True)
    zmq.proxy(front, back)


def _last(sock: zmq.Socket[Any]) -> str:
    return str(sock.getsockopt_string(zmq.LAST_ENDPOINT))


def _start_hop(kind: str, *args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen([sys.executable, __file__, f"--{kind}", *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    fields = dict(w.split("=", 1) for w in line.split()[1:])
    return proc, fields


# ---- client side ---------------------------------------------------------------------------------


def photondata(event_id: int, n: int, arrays: list[bytes]) -> list[Any]:
    return [b"PHOTONDATA", struct.pack("<II", event_id, n), *arrays]


class Driver:
    """Lock-step REQ client; distinct event ids across the whole run."""

    def __init__(self, ctx: zmq.Context[Any]) -> None:
        self.ctx = ctx
        self.next_id = 1
        self.events = 0
        self.socks: dict[str, zmq.Socket[Any]] = {}

    def sock(self, endpoint: str) -> zmq.Socket[Any]:
        if endpoint not in self.socks:
            s = self.ctx.socket(zmq.REQ)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(endpoint)
            self.socks[endpoint] = s
        return self.socks[endpoint]

    def throughput(self, endpoint: str, n: int, arrays: list[bytes]) -> float:
        """Photons/s over about WINDOW_S seconds of lock-step events (``self.events`` counts them)."""
        s = self.sock(endpoint)
        events = 0
        start = time.perf_counter()
        while True:
            eid = self.next_id
            self.next_id += 1
            s.send_multipart(photondata(eid, n, arrays), copy=False)
            reply = s.recv_multipart(copy=False)
            if reply[0].bytes != b"SIM_COMPLETE" or len(reply[2]) != 4 * n:
                raise RuntimeError(f"bad reply from {endpoint}: {reply[0].bytes!r}")
            events += 1
            elapsed = time.perf_counter() - start
            if elapsed >= WINDOW_S and events >= MIN_EVENTS:
                self.events = events
                return events * n / elapsed

    def close(self) -> None:
        for s in self.socks.values():
            s.close(linger=0)


def _ping_client(endpoint: str, duration: float, start_at: float, out: Any, latencies: bool) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    s.send(b"PING")
    s.recv()
    while time.time() < start_at:
        time.sleep(0.001)
    count = 0
    lat: list[float] = []
    t_end = time.perf_counter() + duration
    pc = time.perf_counter
    while True:
        t0 = pc()
        if t0 >= t_end:
            break
        s.send(b"PING")
        s.recv()
        if latencies:
            lat.append(pc() - t0)
        count += 1
    s.close()
    ctx.term()
    out.put((count / duration, lat))


def ping_rate(endpoint: str, clients: int, duration: float, latencies: bool = False) -> tuple[float, list[float]]:
    mpc = mp.get_context("spawn")
    q = mpc.Queue()
    start_at = time.time() + 1.5  # all spawned clients connected before the clock starts
    ps = [mpc.Process(target=_ping_client, args=(endpoint, duration, start_at, q, latencies))
          for _ in range(clients)]
    for p in ps:
        p.start()
    results = [q.get(timeout=60) for _ in ps]
    for p in ps:
        p.join(10)
    return sum(r for r, _ in results), [x for _, lat in results for x in lat]


# ---- main ----------------------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> int:
    global WINDOW_S
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 repeats, shorter windows (smoke run)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "router.json"))
    ap.add_argument("--bare-hop", nargs=2, metavar=("FRONT", "BACK"), help=argparse.SUPPRESS)
    ap.add_argument("--proxy-hop", nargs=2, metavar=("FRONT", "SERVER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_hop:
        bare_hop(*args.bare_hop)
        return 0
    if args.proxy_hop:
        proxy_hop(*args.proxy_hop)
        return 0
    repeats = 2 if args.quick else args.repeats
    if args.quick:
        WINDOW_S = 0.25
    ping_s = 1.0 if args.quick else 2.0

    env = {**QUIET}
    hop_env = {**QUIET, "CHARON_HEARTBEAT__INTERVAL_S": "60"}  # the bare hop sends no heartbeats
    hops: list[subprocess.Popen[str]] = []
    nodedup_env = {**env, "CHARON_ROUTER__DEDUP_WINDOW_S": "0"}
    with procs.serve(env=env) as serve, \
            procs.router(env=env) as router, \
            procs.worker(router.workers_endpoint, env=env), \
            procs.router(env=nodedup_env) as router_nodedup, \
            procs.worker(router_nodedup.workers_endpoint, env=env):
        bare, bare_fields = _start_hop("bare-hop", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
        hops.append(bare)
        proxy, proxy_fields = _start_hop("proxy-hop", "tcp://127.0.0.1:*", serve.endpoint)
        hops.append(proxy)
        try:
            with procs.worker(bare_fields["workers_endpoint"], env=hop_env):
                endpoints = {"direct": serve.endpoint, "router": router.endpoint,
                             "router_nodedup": router_nodedup.endpoint,
                             "bare": bare_fields["endpoint"], "proxy": proxy_fields["endpoint"]}
                brokers = {"router": router.proc.pid, "router_nodedup": router_nodedup.proc.pid, "bare": bare.pid}
                results = run_throughput(endpoints, repeats, brokers)
                ping = run_ping(router.endpoint, bare_fields["endpoint"], repeats, ping_s)
        finally:
            for h in hops:
                h.kill()
                h.wait()
    report = {
        "bench": "router",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "pyzmq": zmq.__version__,
                    "libzmq": zmq.zmq_version(), "platform": platform.platform()},
        "method": ("lock-step REQ client in the bench process, echo backend (one hit per photon, "
                   f"reply = 40 B x N), {WINDOW_S} s windows, {repeats} interleaved repeats, after a "
                   "warm-up that fills the router's reply cache; broker CPU from /proc (all threads)"),
        "throughput_photons_per_s": results,
        "ping": ping,
        "quick": args.quick,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (Linux /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_throughput(endpoints: dict[str, str], repeats: int, brokers: dict[str, int]) -> dict[str, Any]:
    ctx: zmq.Context[Any] = zmq.Context()
    driver = Driver(ctx)
    samples: dict[tuple[str, int], list[float]] = {(v, n): [] for v in VARIANTS for n in SIZES}
    cpu: dict[tuple[str, int], list[float]] = {(v, n): [] for v in brokers for n in SIZES}
    arrays = {n: [struct.pack("<f", 0.5) * n for _ in range(11)] + [struct.pack("<I", 0x400) * n] for n in SIZES}
    try:
        # Warm-up: connections, allocators, and the router's reply cache, which keeps completed
        # requests and replies up to router.dedup_max_bytes (512 MiB): measure a router that has
        # been running a while, not one paying the page faults of first filling that memory.
        for n in SIZES:
            for v in VARIANTS:
                driver.throughput(endpoints[v], n, arrays[n])
        for v in VARIANTS:
            for _ in range(2):  # >= 8 events of 1e6 photons: > 600 MiB of requests + replies
                driver.throughput(endpoints[v], SIZES[-1], arrays[SIZES[-1]])
        for rep in range(repeats):
            order = VARIANTS if rep % 2 == 0 else tuple(reversed(VARIANTS))
            for n in SIZES:
                for v in order:
                    pid = brokers.get(v)
                    before = cpu_seconds(pid) if pid else 0.0
                    samples[v, n].append(driver.throughput(endpoints[v], n, arrays[n]))
                    if pid:
                        cpu[v, n].append((cpu_seconds(pid) - before) / driver.events)
            print(f"repeat {rep + 1}/{repeats} done", file=sys.stderr, flush=True)
    finally:
        driver.close()
        ctx.term()
    out: dict[str, Any] = {}
    for n in SIZES:
        row: dict[str, Any] = {v: summary(samples[v, n]) for v in VARIANTS}
        bare = samples["bare", n]
        for v in ("direct", "router", "router_nodedup", "proxy"):
            ratios = [a / b for a, b in zip(samples[v, n], bare, strict=True)]
            row[f"{v}_vs_bare"] = summary(ratios)
        row["broker_cpu_us_per_event"] = {v: summary([c * 1e6 for c in cpu[v, n]]) for v in brokers}
        out[str(n)] = row
    return out


def run_ping(router_ep: str, bare_ep: str, repeats: int, duration: float) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"router_1": [], "router_8": [], "bare_1": [], "bare_8": []}
    lats: dict[str, list[float]] = {"router": [], "bare": []}
    for _ in range(max(3, repeats // 2)):
        for name, ep in (("router", router_ep), ("bare", bare_ep)):
            r1, lat = ping_rate(ep, 1, duration, latencies=True)
            rates[f"{name}_1"].append(r1)
            lats[name].extend(lat)
            rates[f"{name}_8"].append(ping_rate(ep, 8, duration)[0])
    out: dict[str, Any] = {k: summary(v) for k, v in rates.items()}
    for name, lat in lats.items():
        lat.sort()
        out[f"{name}_latency_1_client_us"] = {"p50": lat[len(lat) // 2] * 1e6, "p99": lat[int(len(lat) * 0.99)] * 1e6,
                                              "samples": len(lat)}
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [("| photons/event | direct (M/s) | bare hop (M/s) | charon router (M/s) | router, dedup off (M/s) "
              "| zmq.proxy->serve (M/s) | router / bare | router dedup off / bare | direct / bare |"),
             "|---|---|---|---|---|---|---|---|---|"]

    def m(s: dict[str, float], scale: float = 1e-6) -> str:
        return f"{s['median'] * scale:.2f} ({s['min'] * scale:.2f}-{s['max'] * scale:.2f})"

    for n, row in report["throughput_photons_per_s"].items():
        lines.append(f"| {int(n):.0e} | {m(row['direct'])} | {m(row['bare'])} | {m(row['router'])} | "
                     f"{m(row['router_nodedup'])} | {m(row['proxy'])} | {m(row['router_vs_bare'], 1)} | "
                     f"{m(row['router_nodedup_vs_bare'], 1)} | {m(row['direct_vs_bare'], 1)} |")
    lines += ["", "| photons/event | broker CPU per event, bare hop (us) | charon router (us) | router, dedup off (us) |",
              "|---|---|---|---|"]
    for n, row in report["throughput_photons_per_s"].items():
        c = row["broker_cpu_us_per_event"]
        lines.append(f"| {int(n):.0e} | {m(c['bare'], 1)} | {m(c['router'], 1)} | {m(c['router_nodedup'], 1)} |")
    p = report["ping"]
    lines += ["", "| PING | charon router | bare Python ROUTER answering ACK |", "|---|---|---|",
              f"| 1 client, req/s | {m(p['router_1'], 1)} | {m(p['bare_1'], 1)} |",
              f"| 8 clients, req/s | {m(p['router_8'], 1)} | {m(p['bare_8'], 1)} |"]
    lat = [p[f"{k}_latency_1_client_us"] for k in ("router", "bare")]
    lines.append(f"| 1 client latency p50 / p99 (us) | {lat[0]['p50']:.0f} / {lat[0]['p99']:.0f} | "
                 f"{lat[1]['p50']:.0f} / {lat[1]['p99']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
