"""What CURVE and the router's reply check cost (echo backend, 127.0.0.1).

* ``plain`` vs ``curve``: client -> ``charon router`` -> ``charon worker --backend echo``, without
  and with CURVE on both router sockets (client and worker allow-lists). Both pairs run for the
  whole bench and are measured interleaved; photons/s per event size with one lock-step REQ
  client, then PING round trips. The figure is the ratio curve / plain per repeat (median, range).
* the reply check: :func:`charon.router.replies.reply_problem` on SIM_COMPLETE replies of 1e3 to
  1e6 hits against the pool's PMT count, beside one copy of the reply's channel frame (the
  cheapest thing a router could do with it), same run.

    .venv/bin/python bench/bench_curve.py             # 5 repeats
    .venv/bin/python bench/bench_curve.py --quick     # smoke run
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import struct
import sys
import tempfile
import time
import timeit
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import procs

from charon.curve import ClientKeys, generate, load_public, load_secret
from charon.protocol import tokens
from charon.router.replies import reply_problem

SIZES = (1_000, 100_000, 1_000_000)
QUIET = {"CHARON_LOG__LEVEL": "warning"}


def photondata(event_id: int, n: int, arrays: list[bytes]) -> list[Any]:
    return [tokens.PHOTONDATA, struct.pack("<II", event_id, n), *arrays]


class Lockstep:
    """One REQ socket per endpoint, lock-step requests with distinct event ids."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, curve: ClientKeys | None) -> None:
        self.sock: zmq.Socket[Any] = ctx.socket(zmq.REQ)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            self.sock.curve_serverkey = curve.server_public
            self.sock.curve_publickey = curve.keys.public
            self.sock.curve_secretkey = curve.keys.secret
        self.sock.connect(endpoint)
        self.next_id = 0

    def request(self, frames: list[Any]) -> list[zmq.Frame]:
        self.sock.send_multipart(frames, copy=False)
        if not self.sock.poll(30_000):
            raise RuntimeError("no reply within 30 s")
        return self.sock.recv_multipart(copy=False)

    def photons_per_s(self, n: int, arrays: list[bytes], window_s: float) -> float:
        start, done = time.perf_counter(), 0
        while done < 3 or time.perf_counter() - start < window_s:
            self.next_id += 1
            reply = self.request(photondata(self.next_id, n, arrays))
            assert reply[0].bytes == tokens.SIM_COMPLETE
            done += 1
        return done * n / (time.perf_counter() - start)

    def ping_us(self, count: int) -> float:
        times = []
        for _ in range(count):
            t = time.perf_counter()
            self.request([tokens.PING])
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e6


def keys(root: Path) -> dict[str, Path]:
    for name in ("router", "worker", "client"):
        generate(root / "keys", name)
    for folder, name in (("workers", "worker"), ("clients", "client")):
        (root / folder).mkdir()
        shutil.copy(root / "keys" / f"{name}.key", root / folder)
    return {"router": root / "keys" / "router.key_secret", "router_pub": root / "keys" / "router.key",
            "worker": root / "keys" / "worker.key_secret", "client": root / "keys" / "client.key_secret",
            "workers": root / "workers", "clients": root / "clients"}


def deployments(stack: ExitStack, k: dict[str, Path]) -> Iterator[tuple[str, str, ClientKeys | None]]:
    plain = stack.enter_context(procs.router(env=QUIET))
    stack.enter_context(procs.worker(plain.workers_endpoint, env=QUIET))
    yield "plain", plain.endpoint, None
    curve_env = {**QUIET, "CHARON_SECURITY__CURVE_SECRET_KEY": str(k["router"]),
                 "CHARON_SECURITY__CURVE_WORKERS": str(k["workers"]),
                 "CHARON_SECURITY__CURVE_CLIENTS": str(k["clients"])}
    curve = stack.enter_context(procs.router(env=curve_env))
    stack.enter_context(procs.worker(curve.workers_endpoint, env={
        **QUIET, "CHARON_SECURITY__CURVE_SECRET_KEY": str(k["worker"]),
        "CHARON_SECURITY__CURVE_SERVER_KEY": str(k["router_pub"])}))
    yield "curve", curve.endpoint, ClientKeys(load_public(k["router_pub"]), load_secret(k["client"]))


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def transport(repeats: int, window_s: float) -> dict[str, Any]:
    ctx: zmq.Context[Any] = zmq.Context()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        k = keys(Path(tmp))
        clients = {name: Lockstep(ctx, ep, curve) for name, ep, curve in deployments(stack, k)}
        for c in clients.values():  # warm-up: registration, first allocations
            time.sleep(0.5)
            c.ping_us(20)
        for n in SIZES:
            arrays = [struct.pack("<f", 1.0) * n] * 11 + [struct.pack("<I", 0x400) * n]
            rates: dict[str, list[float]] = {name: [] for name in clients}
            for _ in range(repeats):
                for name, c in clients.items():
                    rates[name].append(c.photons_per_s(n, arrays, window_s))
            results[f"photons_per_s_{n}"] = {name: _spread(v) for name, v in rates.items()}
            results[f"photons_per_s_{n}"]["curve_over_plain"] = _spread(
                [c / p for c, p in zip(rates["curve"], rates["plain"], strict=True)])
        pings: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(repeats):
            for name, c in clients.items():
                pings[name].append(c.ping_us(300))
        results["ping_p50_us"] = {name: _spread(v) for name, v in pings.items()}
        for c in clients.values():
            c.sock.close(linger=0)
    ctx.term()
    return results


def reply_check(repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    channels = 9000
    for hits in (1_000, 100_000, 1_000_000):
        channel = struct.pack("<I", channels - 1) * hits
        reply = [tokens.SIM_COMPLETE, struct.pack("<I", 7), channel, *([b"\0" * (4 * hits)] * 9)]
        assert reply_problem("photondata", 7, reply, channels) is None
        number = max(1, 200_000 // hits)
        check = [t / number for t in timeit.repeat(lambda r=reply: reply_problem("photondata", 7, r, channels),
                                                   number=number, repeat=repeats)]
        copy = [t / number for t in timeit.repeat(lambda c=channel: bytes(bytearray(c)), number=number,
                                                  repeat=repeats)]
        out[str(hits)] = {"check_s": _spread(check), "copy_s": _spread(copy),
                          "ns_per_hit": statistics.median(check) / hits * 1e9,
                          "check_over_copy": _spread([a / b for a, b in zip(check, copy, strict=True)])}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "curve.json"))
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    window = 0.25 if args.quick else 0.6
    result = {"reply_check": reply_check(repeats), "transport": transport(repeats, window)}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
