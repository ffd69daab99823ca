"""Peak memory of ``charon flukaio-gateway`` under concurrent maximum-size batches.

Four clients each send one batch of ``gateway.max_batch_particles`` (1,000,000) photons at once,
the worst a set of well-behaved clients can do, and wait for the hits. The gateway runs as a
subprocess with the NumPy engine on the reference detector; its resident set is sampled every
10 ms (``/proc/PID/status``). Variants, interleaved per repetition: the default in-flight budget
(``gateway.max_inflight_particles``) and no budget (1e9 particles, what the gateway did before it
had one). Linux only.

Run: ``python bench/bench_flukaio_memory.py [--repeats 2] [--clients 4] [--particles 1000000]``;
writes ``bench/results/flukaio_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import procs

from charon.flukaio import codec, mapping
from charon.flukaio.codec import Hsk, Layout

RESULTS = ROOT / "bench" / "results" / "flukaio_memory.json"
VARIANTS = {"default budget": {}, "no budget": {"CHARON_GATEWAY__MAX_INFLIGHT_PARTICLES": "1000000000"}}


def batch_bytes(n: int, turn: int) -> bytes:
    """IPT, ``n`` isotropic 420 nm photons near the centre (current layout), EOB."""
    rng = np.random.default_rng(turn)
    out = np.zeros(n, mapping.CURRENT_DTYPE)
    out["size"], out["type"], out["pdgid"], out["weight"] = Layout.CURRENT.value, 1, 22, 1.0
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1)[:, None]
    out["tx"], out["ty"], out["tz"] = d.T
    out["x"], out["y"], out["z"] = rng.uniform(-10, 10, (3, n))
    out["pc"] = mapping.HC_EV_NM / 420.0 * 1e-9
    return codec.encode(codec.Ipt(turn, 0)) + out.tobytes() + codec.EOB_BYTES


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def client(port: int, payload: bytes, done: list[float]) -> None:
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=600) as sock:
        sock.sendall(codec.encode(Hsk()))
        sock.sendall(payload)
        got = b""
        while not got.endswith(codec.EOB_BYTES) or len(got) < 14:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("gateway closed the connection")
            got += chunk
        sock.sendall(codec.END_BYTES)
    done.append(time.perf_counter() - start)


def run(env: dict[str, str], payloads: list[bytes]) -> dict[str, Any]:
    with procs.running("flukaio-gateway", "--listen", "tcp://127.0.0.1:0", "--backend", "numpy",
                       "--metrics-addr", "127.0.0.1:0", env=env) as gw:
        port = int(str(gw.ready["endpoint"]).rsplit(":", 1)[1])
        pid = gw.proc.pid
        idle = rss_kib(pid)
        peak = idle
        done: list[float] = []
        threads = [threading.Thread(target=client, args=(port, p, done)) for p in payloads]
        start = time.perf_counter()
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            peak = max(peak, rss_kib(pid))
            time.sleep(0.01)
        wall = time.perf_counter() - start
        if len(done) != len(payloads):
            raise RuntimeError("a client failed")
    return {"idle_mib": idle / 1024, "peak_mib": peak / 1024, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--particles", type=int, default=1_000_000)
    args = parser.parse_args()
    payloads = [batch_bytes(args.particles, turn) for turn in range(args.clients)]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, env in VARIANTS.items():
            runs[name].append(run(env, payloads))
            print(name, runs[name][-1], flush=True)
    summary = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items()}
    result = {"clients": args.clients, "particles_per_batch": args.particles, "repeats": args.repeats,
              "median": summary, "runs": runs}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
