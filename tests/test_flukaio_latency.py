"""No delayed-ACK stall: a client with the FlukaIO library's default build (Nagle on, no
TCP_NODELAY) gets mid-sized batches answered in a few milliseconds, not ~40 ms.

The client side writes like the C library: whole messages into a 10 KiB buffer flushed at 9216
bytes and at EOB (charon's :class:`Connection` follows the same rules), or one small write per
particle. With Nagle on, the client's last segment waits for the ACK of the previous one; a
server that sends nothing until EOB and delays its ACK holds every such batch up by the delayed-ACK
timer (40 ms on Linux).
"""

from __future__ import annotations

import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from charon.flukaio import codec
from charon.flukaio.client import connect
from charon.flukaio.codec import Eob, Hsk, Layout, Particle
from tests.test_flukaio_gateway import GW, gateway, local, photon_batch

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="TCP_QUICKACK is Linux's")

SIZES = (77, 120, 250, 400, 600)
REPEATS = 5


@pytest.fixture(scope="module")
def gw() -> Iterator[GW]:
    with gateway(local("echo"), {"engine": {"backend": "echo"}, "gateway": {"idle_timeout_s": 60}}) as running:
        yield running


def _batches() -> list[list[Particle]]:
    rng = np.random.default_rng(31)
    return [photon_batch(n, Layout.CURRENT, rng) for n in SIZES for _ in range(REPEATS)]


def _library_client(port: int, batches: list[list[Particle]]) -> list[float]:
    """The C library's write pattern (flush at 9216 B and at EOB), Nagle on."""
    times = []
    with connect("127.0.0.1", port, read_timeout=30) as conn:
        sock = socket.socket(fileno=conn.fileno())
        try:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        finally:
            sock.detach()
        for turn, batch in enumerate(batches):
            start = time.perf_counter()
            conn.send_ipt(turn, 1)
            for particle in batch:
                conn.send_particle(particle)
            conn.send_eob()
            hits = 0
            while not isinstance(conn.wait_message(), Eob):
                hits += 1
            times.append(time.perf_counter() - start)
            assert hits == len(batch)
        conn.send_eoc()
        conn.wait_message()
    return times


def _per_particle_client(port: int, batches: list[list[Particle]]) -> list[float]:
    """One small write per message, Nagle on."""
    times = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(codec.encode(Hsk()))
        assert _read_exactly(sock, 11) == codec.encode(Hsk())
        for turn, batch in enumerate(batches):
            start = time.perf_counter()
            sock.sendall(codec.encode(codec.Ipt(turn, 1)))
            for particle in batch:
                sock.sendall(codec.encode(particle, Layout.CURRENT))
            sock.sendall(codec.EOB_BYTES)
            reply = _read_exactly(sock, len(batch) * Layout.CURRENT.value + 3)
            times.append(time.perf_counter() - start)
            assert reply.endswith(codec.EOB_BYTES)
        sock.sendall(codec.END_BYTES)
    return times


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(65536)
        assert chunk, "gateway closed"
        data += chunk
    return data


@pytest.mark.parametrize("client", [_library_client, _per_particle_client], ids=["library-buffer", "per-particle"])
def test_nagle_client_batch_round_trips_take_milliseconds(gw: GW, client: Callable[[int, list[list[Particle]]],
                                                                                 list[float]]) -> None:
    batches = _batches()
    client(gw.port, batches[:2])  # warm-up: the engine's first call, the connection's first batches
    times = client(gw.port, batches)
    median_ms = statistics.median(times) * 1000
    assert median_ms < 20, f"median batch round trip {median_ms:.1f} ms: " + \
        ", ".join(f"{t * 1000:.1f}" for t in times)
