"""The client-side commands: ``ping``, ``info``, ``simulate`` and ``demo``.

``simulate`` generates every event's photons before its timed phase, then sends them over v1 (one
request per event, ``--concurrency`` of them in flight) or v2 (``--protocol v2``: many events per
message within the server's credit window, results streamed back).

``demo`` is the embedded default: it starts ``charon serve`` as a child on a free loopback port,
reads the endpoint from the child's ready line, runs ``simulate`` against it and stops the child.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from charon.client import Client
from charon.errors import ConfigError, RequestFailed, StartupError
from charon.runtime import parse_ready_line
from charon.settings import Settings, environment

if TYPE_CHECKING:  # numpy stays out of `charon ping`, which runs in the numpy-free router image
    from charon.engine.base import DetectorInfo, Hits, Photons

_CHILD_START_TIMEOUT_S = 120.0


def run(command: str, settings: Settings, args: argparse.Namespace) -> int:
    if command == "demo":
        return demo(settings, args)
    from charon.curve import client_keys

    with Client(settings.client.endpoint, timeout_s=settings.client.timeout_s,
                retries=settings.client.retries, curve=client_keys(settings.security)) as client:
        if command == "ping":
            rtt = client.ping()
            print(f"ACK from {settings.client.endpoint} in {rtt * 1e3:.2f} ms")
            return 0
        if command == "info":
            info = client.detector_info()
            _print_info(settings.client.endpoint, info)
            return 0
        return simulate(client, args)


def _print_info(endpoint: str, info: DetectorInfo) -> None:
    import numpy as np

    pos = info.positions().astype(np.float64)
    r = np.linalg.norm(pos, axis=1) if len(info) else np.zeros(0)
    types = sorted(set(info.channel_type.tolist()))
    print(f"detector at {endpoint}: {len(info)} channels")
    if len(info):
        print(f"  PMT radius from origin: {r.min():.1f} .. {r.max():.1f} mm")
        print(f"  channel types: {types[:10]}{' ...' if len(types) > 10 else ''}")


@dataclass
class Summary:
    events: int = 0
    photons: int = 0
    hits: int = 0
    seconds: float = 0.0
    wall_seconds: float = 0.0
    hit_sets: list[Hits] = field(default_factory=list)

    def table(self) -> str:
        rate = self.photons / self.seconds if self.seconds > 0 else 0.0  # request time only
        rows = [
            ("events", f"{self.events}"),
            ("photons", f"{self.photons}"),
            ("hits", f"{self.hits}"),
            ("hits/photon", f"{self.hits / self.photons:.4f}" if self.photons else "-"),
            ("request time", f"{self.seconds:.3f} s"),
            ("wall time", f"{self.wall_seconds:.3f} s"),
            ("photons/s", f"{rate:,.0f}"),
            ("photons/s (wall)", f"{self.photons / self.wall_seconds:,.0f}" if self.wall_seconds > 0 else "-"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"  {k:<{width}}  {v:>14}" for k, v in rows)


def _parse_source(text: str) -> tuple[float, float, float]:
    try:
        x, y, z = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--source {text!r}: expected three numbers in mm, e.g. 0,0,0") from None
    return x, y, z


def _validate(args: argparse.Namespace) -> tuple[float, float, float]:
    if args.events < 1:
        raise ConfigError(f"--events {args.events}: must be at least 1")
    if not 0 <= args.photons <= 100_000_000:
        raise ConfigError(f"--photons {args.photons}: must be between 0 and 100000000")
    if not 60.0 <= args.wavelength <= 1000.0:
        raise ConfigError(f"--wavelength {args.wavelength}: must be between 60 and 1000 nm")
    if args.first_event < 0 or args.first_event + args.events > 2**32:
        raise ConfigError(
            f"--first-event {args.first_event}: the {args.events} event ids must fit in uint32 "
            f"(0 .. {2**32 - 1})"
        )
    if args.plot:
        folder = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(folder):
            raise ConfigError(f"--plot {args.plot!r}: directory {folder!r} does not exist")
        if not os.access(folder, os.W_OK):
            raise ConfigError(f"--plot {args.plot!r}: directory {folder!r} is not writable")
    return _parse_source(args.source)


def simulate(client: Client, args: argparse.Namespace) -> int:
    from charon.source import isotropic_point

    source = _validate(args)
    concurrency = getattr(args, "concurrency", 1)
    protocol = getattr(args, "protocol", "v1")
    if not 1 <= concurrency <= 256:
        raise ConfigError(f"--concurrency {concurrency}: must be between 1 and 256")
    if protocol == "v2" and concurrency != 1:
        raise ConfigError(f"--concurrency {concurrency}: v2 pipelines by itself; leave --concurrency out")
    run_seed = getattr(args, "run_seed", 0)
    if not 0 <= run_seed < 2**64:
        raise ConfigError(f"--run-seed {run_seed}: must be between 0 and {2**64 - 1}")

    def generate(i: int) -> Photons:
        return isotropic_point(args.first_event + i, args.photons, source, args.wavelength, seed=args.photon_seed)

    make = _pregenerated(generate, args.events, args.photons)
    summary = Summary()
    progress = _Progress(args.events)
    start = time.perf_counter()
    if protocol == "v2":
        results = _pipelined(client, make, args.events, run_seed)
    elif concurrency == 1:
        results = _sequential(client, make, args.events)
    else:
        results = _concurrent(client, make, args.events, concurrency)
    for photons, hits, seconds in results:
        summary.seconds += seconds
        summary.events += 1
        summary.photons += len(photons)
        summary.hits += len(hits)
        if args.plot:
            summary.hit_sets.append(hits)
        progress.update(summary.events, time.perf_counter() - start)
    summary.wall_seconds = time.perf_counter() - start
    progress.done()
    mode = (f" (v2, credit {client.welcome.credit} events)" if protocol == "v2" and client.welcome
            else f" ({concurrency} requests in flight)" if concurrency > 1 else "")
    print(f"charon simulate: {client.endpoint}{mode}")
    print(summary.table())
    if args.plot:
        from charon.plot import plot_hits

        try:
            plot_hits(client.detector_info(), summary.hit_sets, args.plot)
        except OSError as exc:
            raise ConfigError(f"--plot {args.plot!r}: {exc.strerror or exc}") from None
        print(f"  hit map and hit-time histogram written to {args.plot}")
    return 0


Result = tuple["Photons", "Hits", float]
#: Photon data generated before a concurrent run's timed phase, at most (bytes; 48 per photon).
PREGENERATED_BYTES = 256 * 1024**2


def _pregenerated(make: Callable[[int], Photons], n: int, photons: int) -> Callable[[int], Photons]:
    """Events generated before the timed phase (generation is not the server's work): as many
    distinct ones as fit in PREGENERATED_BYTES, reused round-robin under each event's own id."""
    from dataclasses import replace

    distinct = max(1, min(n, PREGENERATED_BYTES // max(48 * photons, 1)))
    pool = [make(i) for i in range(distinct)]
    first = pool[0].event_id

    def take(i: int) -> Photons:
        ev = pool[i % distinct]
        return ev if i < distinct else replace(ev, event_id=(first + i) & 0xFFFFFFFF)

    return take


def _sequential(client: Client, make: Callable[[int], Photons], n: int) -> Iterator[Result]:
    """One request at a time; the seconds are each request's round trip."""
    for i in range(n):
        photons = make(i)
        sent = time.perf_counter()
        hits = client.simulate(photons)
        yield photons, hits, time.perf_counter() - sent


def _pipelined(client: Client, make: Callable[[int], Photons], n: int, seed: int) -> Iterator[Result]:
    """v2: every event through one pipelined connection; results as they arrive. The seconds
    reported add up to the wall time of the request phase, as for ``_concurrent``."""
    events = [make(i) for i in range(n)]
    last = time.perf_counter()
    for result in client.simulate_many(events, seed=seed):
        if result.error is not None:
            raise RequestFailed(f"event {result.event_id}: {result.error.code.name}: {result.error.message}",
                                b"CHARON/2")
        assert result.hits is not None
        now = time.perf_counter()
        yield events[result.index], result.hits, now - last
        last = now


def _concurrent(client: Client, make: Callable[[int], Photons], n: int, window: int) -> Iterator[Result]:
    """Up to ``window`` requests in flight, each on its own Lazy Pirate REQ socket, results in order.

    A router spreads them over its workers (``charon serve`` batches them into engine passes). The
    seconds reported add up to the wall time of the request phase (the photons were generated
    before it), so photons/s is what the server delivers.
    """
    local = threading.local()
    clients: list[Client] = []
    lock = threading.Lock()

    def one(i: int) -> tuple[Photons, Hits]:
        mine: Client | None = getattr(local, "client", None)
        if mine is None:
            mine = local.client = Client(client.endpoint, timeout_s=client.timeout_s, retries=client.retries,
                                         curve=client.curve)
            with lock:
                clients.append(mine)
        photons = make(i)
        return photons, mine.simulate(photons)

    pool = ThreadPoolExecutor(window, thread_name_prefix="simulate")
    pending: deque[Future[tuple[Photons, Hits]]] = deque()
    submitted = 0
    last = time.perf_counter()
    try:
        while submitted < n or pending:
            while submitted < n and len(pending) < window:
                pending.append(pool.submit(one, submitted))
                submitted += 1
            photons, hits = pending.popleft().result()
            now = time.perf_counter()
            yield photons, hits, now - last
            last = now
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for c in clients:
            c.close()


class _Progress:
    """A one-line progress bar on stderr, shown only for runs longer than a second or two."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.shown = False

    def update(self, done: int, elapsed: float) -> None:
        if elapsed < 1.5 and not self.shown:
            return
        self.shown = True
        width = 30
        filled = int(width * done / self.total)
        eta = elapsed / done * (self.total - done)
        bar = "#" * filled + "." * (width - filled)
        sys.stderr.write(f"\r  [{bar}] {done}/{self.total} events, {elapsed:.1f} s, eta {eta:.1f} s ")
        sys.stderr.flush()

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


def demo(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``simulate`` against an embedded ``charon serve`` child on a free loopback port."""
    _validate(args)
    print(f"charon demo: starting an embedded server ({settings.engine.backend} backend) ...", flush=True)
    child = subprocess.Popen([sys.executable, "-m", "charon", "serve"], stdout=subprocess.PIPE, text=True,
                             env=child_environment(settings))
    try:
        ready = _read_ready(child)
        endpoint = ready["endpoint"]
        print(f"charon demo: server ready on {endpoint}", flush=True)
        with Client(endpoint, timeout_s=max(settings.client.timeout_s, 60.0), retries=1) as client:
            info = client.detector_info()
            _print_info(endpoint, info)
            return simulate(client, args)
    finally:
        _stop(child)


def child_environment(settings: Settings) -> dict[str, str]:
    """The embedded server's environment: this process's, with every setting of ``settings``
    (so each flag given to ``demo`` reaches it), on a free loopback port, logging only warnings,
    and plain: the demo's own client on loopback holds no CURVE keys."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHARON_")}
    env.update({k: v for k, v in environment(settings).items() if not k.startswith("CHARON_SECURITY__")})
    env["CHARON_SERVER__BIND"] = "tcp://127.0.0.1:*"
    env["CHARON_METRICS__ADDR"] = "127.0.0.1:0"
    if settings.log.level == "info":
        env["CHARON_LOG__LEVEL"] = "warning"
    return env


def _read_ready(child: subprocess.Popen[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    got = threading.Event()

    def reader() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("ready "):
                result.update(parse_ready_line(line))
                got.set()
                break

    threading.Thread(target=reader, daemon=True).start()
    deadline = time.monotonic() + _CHILD_START_TIMEOUT_S
    while not got.wait(0.1):
        if child.poll() is not None:
            raise StartupError(f"embedded server exited with status {child.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise StartupError(f"embedded server not ready after {_CHILD_START_TIMEOUT_S:.0f} s")
    return result


def _stop(child: subprocess.Popen[str]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    if child.stdout:
        child.stdout.close()


