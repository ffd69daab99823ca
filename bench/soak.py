"""Soak: hundreds of thousands of mutated messages against real charon processes on loopback.

Targets (each a real ``python -m charon`` process tree):

* ``serve``: mutated v1 requests (``tests/mutations.py``) from several DEALER clients, half of them
  framed like REQ (empty delimiter), half bare;
* ``router``: the same through a router to one worker; then mutated CHARONW1 messages on the
  router's worker port from a rogue DEALER;
* ``unread``: one client sends 20,000 valid PHOTONDATA to a router + worker and never reads a
  reply (the router's memory must stay bounded by its settings), while a well-behaved client is
  served;
* ``idle``: a router started with a soft descriptor limit of 1,024 gets 1,100 idle TCP connections
  on its client port and 600 on its metrics port; PING and /metrics must still answer, with the
  router's threads and descriptors reported.

Reported per target: crashes (a process that exited; goal 0), requests neither answered nor
counted as dropped (``sent - replies - Σ charon_requests_total{outcome=~"dropped_.*"}``; goal 0),
replies with a header a v1 client does not know (goal 0), and the resident memory of every
process before and after (after a warm-up of the same traffic). The client sends in batches and
waits for each batch to be accounted for, so the figures do not depend on its speed.

    .venv/bin/python bench/soak.py                 # 100,000 messages per target
    .venv/bin/python bench/soak.py --messages 2000 # a quick look
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import mutations, procs

from charon.protocol import tokens

V1_REPLIES = {tokens.ACK, tokens.DETECTOR_INFO, tokens.SIM_COMPLETE, tokens.SIM_FAILED, tokens.NO_WORKERS,
              tokens.UNKNOWN_REQUEST, tokens.PONG}
_DROPPED = re.compile(r'^charon_requests_total\{[^}]*outcome="dropped_[a-z_]+"[^}]*\} ([0-9.e+]+)$', re.MULTILINE)


@dataclass
class Result:
    target: str
    messages: int
    replies: int = 0
    dropped_counted: int = 0
    unaccounted: int = 0
    undefined_replies: int = 0
    crashes: int = 0
    worker_port_messages: int = 0
    seconds: float = 0.0
    rss_mib: dict[str, tuple[float, float]] = field(default_factory=dict)
    ping_after: bool = False


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def dropped(metrics_url: str) -> int:
    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    return int(sum(float(v) for v in _DROPPED.findall(text)))


class Clients:
    """Several DEALERs: send mutated v1 requests, count the replies and check their headers."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, n: int, rng: random.Random) -> None:
        self.rng = rng
        self.socks: list[zmq.Socket[Any]] = []
        for _ in range(n):
            sock: zmq.Socket[Any] = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.RCVHWM, 0)
            sock.connect(endpoint)
            self.socks.append(sock)
        self.poller = zmq.Poller()
        for sock in self.socks:
            self.poller.register(sock, zmq.POLLIN)
        self.sent = self.replies = self.undefined = 0

    def send(self, n: int) -> None:
        for _ in range(n):
            payload = mutations.mutate(self.rng, mutations.v1_requests(self.rng))
            sock = self.socks[self.sent % len(self.socks)]
            framed = self.rng.random() < 0.5
            sock.send_multipart([b"", *payload] if framed else payload or [b""])
            self.sent += 1

    def collect(self, timeout_ms: int) -> None:
        for sock, _ in self.poller.poll(timeout_ms):
            while sock.poll(0):
                frames = sock.recv_multipart()
                payload = frames[1:] if frames and frames[0] == b"" and len(frames) > 1 else frames
                self.replies += 1
                if not payload or payload[0] not in V1_REPLIES:
                    self.undefined += 1

    def close(self) -> None:
        for sock in self.socks:
            sock.close(linger=0)


def drive(clients: Clients, metrics_url: str, total: int, batch: int, settle_s: float) -> int:
    """Send ``total`` messages in batches; after each, wait until every one is answered or
    counted as dropped (or ``settle_s`` passes). Returns the dropped count at the end."""
    drops = 0
    while clients.sent < total:
        clients.send(min(batch, total - clients.sent))
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            clients.collect(50)
            drops = dropped(metrics_url)
            if clients.replies + drops >= clients.sent:
                break
    for _ in range(10):  # late replies
        clients.collect(100)
    return dropped(metrics_url)


def ping(ctx: zmq.Context[Any], endpoint: str) -> bool:
    sock: zmq.Socket[Any] = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send(tokens.PING)
        return bool(sock.poll(5000)) and sock.recv() == tokens.ACK
    finally:
        sock.close()


def soak(target: str, total: int, args: argparse.Namespace) -> Result:
    rng = random.Random(args.seed)
    ctx: zmq.Context[Any] = zmq.Context()
    result = Result(target, total)
    env = {"CHARON_LOG__LEVEL": "error"}
    stack: list[tuple[str, procs.Proc]] = []
    try:
        if target == "serve":
            front = procs.start("serve", "--bind", "tcp://127.0.0.1:*", "--metrics-addr", "127.0.0.1:0",
                                "--backend", args.backend, env=env)
            stack.append(("serve", front))
        else:
            front = procs.start("router", "--bind", "tcp://127.0.0.1:*", "--workers-bind", "tcp://127.0.0.1:*",
                                "--metrics-addr", "127.0.0.1:0", env=env)
            stack.append(("router", front))
            stack.append(("worker", procs.start("worker", "--router", front.workers_endpoint, "--metrics-addr",
                                                "127.0.0.1:0", "--backend", args.backend, "--capacity", "4", env=env)))
            time.sleep(1.0)  # registration
        clients = Clients(ctx, front.endpoint, args.clients, rng)
        warm = min(2000, total // 10)
        drive(clients, front.metrics_url, warm, args.batch, args.settle)
        before = {name: rss_mib(p.proc.pid) for name, p in stack}
        start = time.monotonic()
        result.dropped_counted = drive(clients, front.metrics_url, warm + total, args.batch, args.settle)
        if target == "router":
            result.worker_port_messages = rogue_worker(ctx, front.workers_endpoint, total // 5, rng)
        result.seconds = time.monotonic() - start
        after = {name: rss_mib(p.proc.pid) for name, p in stack}
        result.rss_mib = {name: (round(before[name], 1), round(after[name], 1)) for name in before}
        result.replies = clients.replies
        result.undefined_replies = clients.undefined
        result.unaccounted = clients.sent - clients.replies - result.dropped_counted
        result.ping_after = ping(ctx, front.endpoint)
        clients.close()
        result.crashes = sum(not p.alive() for _, p in stack)
        for _, p in reversed(stack):
            if p.terminate() not in (0, -15):
                result.crashes += 1
    finally:
        for _, p in stack:
            p.kill()
        ctx.destroy(linger=0)
    return result


def rogue_worker(ctx: zmq.Context[Any], endpoint: str, n: int, rng: random.Random) -> int:
    """Mutated CHARONW1 / ChAR0N messages on the worker port, from fresh DEALERs now and then."""
    sock: zmq.Socket[Any] | None = None
    for i in range(n):
        if sock is None or i % 500 == 0:
            if sock is not None:
                sock.close(linger=0)
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.connect(endpoint)
        sock.send_multipart(mutations.mutate(rng, mutations.from_worker(rng)) or [b""])
        while sock.poll(0):
            sock.recv_multipart()
    if sock is not None:
        time.sleep(0.5)
        sock.close(linger=0)
    return n


def unread(args: argparse.Namespace, n: int = 20_000, photons: int = 1000) -> dict[str, Any]:
    """A client that never reads: router memory before and after, replies dropped at the HWM."""
    ctx: zmq.Context[Any] = zmq.Context()
    env = {"CHARON_LOG__LEVEL": "error", **dict(kv.split("=", 1) for kv in args.unread_env)}
    router = procs.start("router", "--bind", "tcp://127.0.0.1:*", "--workers-bind", "tcp://127.0.0.1:*",
                         "--metrics-addr", "127.0.0.1:0", env=env)
    worker = procs.start("worker", "--router", router.workers_endpoint, "--metrics-addr", "127.0.0.1:0",
                         "--backend", "echo", "--capacity", "4", env=env)
    try:
        time.sleep(1.0)
        before = rss_mib(router.proc.pid)
        greedy: zmq.Socket[Any] = ctx.socket(zmq.DEALER)
        greedy.setsockopt(zmq.LINGER, 0)
        greedy.setsockopt(zmq.SNDHWM, 0)
        greedy.setsockopt(zmq.RCVHWM, 1)
        greedy.setsockopt(zmq.RCVBUF, 64 * 1024)
        greedy.connect(router.endpoint)
        peak = before
        for i in range(n):
            greedy.send_multipart([b"", *mutations.photondata(i, photons)])
            if i % 1000 == 0:
                peak = max(peak, rss_mib(router.proc.pid))
        deadline = time.monotonic() + 120
        text = ""
        while time.monotonic() < deadline:
            with urllib.request.urlopen(router.metrics_url, timeout=5) as resp:
                text = resp.read().decode()
            peak = max(peak, rss_mib(router.proc.pid))
            done = re.search(r'^charon_requests_total\{kind="photondata",outcome="ok"\} ([0-9.e+]+)$', text, re.MULTILINE)
            if done and float(done.group(1)) + sum(float(v) for v in _DROPPED.findall(text)) >= n:
                break
            time.sleep(0.5)
        answered = float(done.group(1)) if done else 0.0
        hwm = re.search(r'^charon_replies_dropped_total\{reason="hwm"\} ([0-9.e+]+)$', text, re.MULTILINE)
        served = ping(ctx, router.endpoint)
        after = rss_mib(router.proc.pid)
        greedy.close(linger=0)
        return {"requests": n, "photons": photons, "answered_by_worker": answered,
                "dropped_counted": sum(float(v) for v in _DROPPED.findall(text)),
                "replies_dropped_hwm": float(hwm.group(1)) if hwm else 0.0,
                "router_rss_mib": {"before": round(before, 1), "peak": round(peak, 1), "after": round(after, 1)},
                "ping_while_flooded": served, "env": env,
                "crashes": int(not router.alive()) + int(not worker.alive())}
    finally:
        worker.kill()
        router.kill()
        ctx.destroy(linger=0)


def idle(clients: int = 1100, http: int = 600) -> dict[str, Any]:
    """Idle connections against a router whose soft descriptor limit starts at 1,024."""
    import resource
    import socket

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))  # inherited by the router
    try:
        router = procs.start("router", "--bind", "tcp://127.0.0.1:*", "--workers-bind", "tcp://127.0.0.1:*",
                             "--metrics-addr", "127.0.0.1:0", env={"CHARON_LOG__LEVEL": "warning"})
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    ctx: zmq.Context[Any] = zmq.Context()
    held: list[socket.socket] = []
    try:
        host, port = router.endpoint.removeprefix("tcp://").rsplit(":", 1)
        mhost, mport = router.metrics.rsplit(":", 1)
        for _ in range(clients):
            held.append(socket.create_connection((host, int(port)), timeout=5))
        for _ in range(http):
            held.append(socket.create_connection((mhost, int(mport)), timeout=5))
        time.sleep(2.0)
        status = Path(f"/proc/{router.proc.pid}/status").read_text()
        threads = int(re.search(r"^Threads:\s+(\d+)", status, re.MULTILINE).group(1))  # type: ignore[union-attr]
        fds = len(list(Path(f"/proc/{router.proc.pid}/fd").iterdir()))
        limit = int(re.search(r"^Max open files\s+(\d+)", Path(f"/proc/{router.proc.pid}/limits").read_text(),
                              re.MULTILINE).group(1))  # type: ignore[union-attr]
        pinged = ping(ctx, router.endpoint)
        start = time.monotonic()
        scraped = False
        while not scraped and time.monotonic() - start < 30:
            try:
                with urllib.request.urlopen(router.metrics_url, timeout=5) as resp:
                    text = resp.read().decode()
                scraped = True
            except OSError:
                time.sleep(0.2)
        refused = re.search(r"^charon_client_connections_refused_total ([0-9.e+]+)$", text, re.MULTILINE) if scraped else None
        return {"client_connections": clients, "http_connections": http, "router_threads": threads,
                "router_descriptors": fds, "router_descriptor_limit": limit, "ping": pinged,
                "metrics_scraped_after_s": round(time.monotonic() - start, 2) if scraped else None,
                "client_connections_refused": float(refused.group(1)) if refused else None,
                "crashes": int(not router.alive())}
    finally:
        for sock in held:
            sock.close()
        router.kill()
        ctx.destroy(linger=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000, help="mutated v1 messages per target")
    parser.add_argument("--targets", nargs="+", default=["serve", "router", "unread", "idle"],
                        choices=["serve", "router", "unread", "idle"])
    parser.add_argument("--unread-requests", type=int, default=20_000, help="requests of the unread scenario")
    parser.add_argument("--unread-env", nargs="*", default=[], metavar="VAR=VALUE",
                        help="extra environment of the unread scenario's router (e.g. CHARON_ROUTER__DEDUP_WINDOW_S=0)")
    parser.add_argument("--backend", default="echo", help="engine of serve / the worker")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=400, help="messages sent before waiting for them")
    parser.add_argument("--settle", type=float, default=10.0, help="longest wait for a batch (s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = [soak(target, args.messages, args) for target in args.targets if target in ("serve", "router")]
    flood = unread(args, args.unread_requests) if "unread" in args.targets else None
    for r in results:
        rss = ", ".join(f"{name} {a:.1f} -> {b:.1f} MiB" for name, (a, b) in r.rss_mib.items())
        print(f"{r.target}: {r.messages} mutated v1 messages in {r.seconds:.1f} s"
              f"{f' (+{r.worker_port_messages} on the worker port)' if r.worker_port_messages else ''}: "
              f"{r.replies} replies ({r.undefined_replies} undefined), {r.dropped_counted} dropped and counted, "
              f"{r.unaccounted} unaccounted, {r.crashes} crashes, PING after: {'ok' if r.ping_after else 'FAILED'}; "
              f"RSS {rss}")
    if flood is not None:
        rss = flood["router_rss_mib"]
        print(f"unread: {flood['requests']} x {flood['photons']}-photon requests never read: "
              f"{flood['answered_by_worker']:.0f} simulated, {flood['dropped_counted']:.0f} dropped and counted, "
              f"{flood['replies_dropped_hwm']:.0f} replies dropped at the "
              f"HWM; router RSS {rss['before']} -> peak {rss['peak']} -> {rss['after']} MiB; PING meanwhile: "
              f"{'ok' if flood['ping_while_flooded'] else 'FAILED'}; {flood['crashes']} crashes")
    crowd = idle() if "idle" in args.targets else None
    if crowd is not None:
        print(f"idle: {crowd['client_connections']} idle client and {crowd['http_connections']} idle HTTP "
              f"connections, router descriptor limit {crowd['router_descriptor_limit']}: PING "
              f"{'ok' if crowd['ping'] else 'FAILED'}, /metrics after {crowd['metrics_scraped_after_s']} s, "
              f"{crowd['router_threads']} threads, {crowd['router_descriptors']} descriptors, "
              f"{crowd['client_connections_refused']} connections refused, {crowd['crashes']} crashes")
    if args.json:
        args.json.write_text(json.dumps({"targets": [asdict(r) for r in results], "unread": flood, "idle": crowd},
                                        indent=2))
    bad = any(r.crashes or r.unaccounted or r.undefined_replies or not r.ping_after for r in results)
    bad = bad or (flood is not None and (flood["crashes"] or not flood["ping_while_flooded"]))
    bad = bad or (crowd is not None and (crowd["crashes"] or not crowd["ping"] or crowd["metrics_scraped_after_s"] is None))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
