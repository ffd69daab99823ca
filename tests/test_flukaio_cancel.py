"""A batch whose client has gone is abandoned between engine calls; other clients carry on; a batch
larger than ``gateway.chunk_photons`` is simulated in reproducible chunks."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import numpy as np

from charon.flukaio import codec, mapping
from charon.flukaio.codec import Hsk, Layout, Particle, ParticleBlock, StreamDecoder
from charon.flukaio.gateway import LocalBackend
from tests import inproc
from tests.router_support import wait_for
from tests.test_flukaio_gateway import (
    ENGINE,
    SEED,
    _batch_bytes,
    gateway,
    handshaken,
    local,
    photon_batch,
    read_to_eof,
    run_batches,
    scrape,
    wait_for_log,
)

DELAY_S = 0.1
CHUNK = 100


def _read_reply(sock: socket.socket, n_hits: int, layout: Layout = Layout.CURRENT) -> bytes:
    size = n_hits * layout.value + 3
    data = b""
    while len(data) < size:
        chunk = sock.recv(65536)
        assert chunk, "gateway closed"
        data += chunk
    return data


def test_client_leaving_mid_batch_stops_its_simulation_and_others_are_served() -> None:
    slow = LocalBackend(inproc.echo(DELAY_S))  # 0.1 s per engine call
    rng = np.random.default_rng(41)
    big = photon_batch(30 * CHUNK, Layout.CURRENT, rng)  # 30 calls: 3 s if simulated to the end
    small = photon_batch(2 * CHUNK + 7, Layout.CURRENT, rng)
    with gateway(lambda: slow, {"engine": {"backend": "echo"}, "gateway": {"chunk_photons": CHUNK}}) as gw:
        leaving = handshaken(gw.port)
        leaving.sendall(_batch_bytes(1, big))
        wait_for(lambda: scrape(gw)["charon_gateway_engine_calls_total"] >= 2, 10, "the big batch under way")
        left_at = time.monotonic()
        leaving.close()

        staying = handshaken(gw.port)  # a client arriving meanwhile is served once the engine is free
        staying.sendall(_batch_bytes(2, small))
        reply = _read_reply(staying, len(small))
        served_after = time.monotonic() - left_at
        staying.sendall(codec.END_BYTES)
        assert read_to_eof(staying) == codec.END_BYTES
        staying.close()

        wait_for(lambda: scrape(gw)["charon_gateway_batches_abandoned_total"] == 1, 10, "the batch abandoned")
        wait_for_log(gw, r"event 1 abandoned, the client has gone \(\d+ of 30 engine calls made\)")
        metrics = scrape(gw)
    calls = metrics["charon_gateway_engine_calls_total"]
    assert calls <= 3 + 2 + 3, calls  # the big batch (30 calls) stopped within a call or two; 3 for `small`
    assert served_after < 30 * DELAY_S * 2 / 3  # not after the big batch's 3 s
    assert metrics['charon_gateway_errors_total{reason="connection_lost"}'] == 1
    assert metrics["charon_gateway_batches_total"] == 1
    hits = [m for m in StreamDecoder(Layout.CURRENT).feed(reply) if isinstance(m, Particle)]
    assert len(hits) == len(small)
    channels = len(slow.detector_info())  # echo: channel = photon index in its engine call, mod channels
    assert [h.id for h in hits] == [(i % CHUNK) % channels for i in range(len(small))]


def test_a_client_leaving_does_not_disturb_one_being_simulated_beside_it() -> None:
    slow = LocalBackend(inproc.echo(DELAY_S / 2))
    rng = np.random.default_rng(42)
    batches = [photon_batch(8 * CHUNK, Layout.CURRENT, rng) for _ in range(2)]
    with gateway(lambda: slow, {"engine": {"backend": "echo"}, "gateway": {"chunk_photons": CHUNK}}) as gw:
        leaving, staying = handshaken(gw.port), handshaken(gw.port)
        result: list[bytes] = []
        reader = threading.Thread(target=lambda: result.append(_read_reply(staying, len(batches[1]))))
        staying.sendall(_batch_bytes(7, batches[1]))
        reader.start()
        leaving.sendall(_batch_bytes(8, batches[0]))
        wait_for(lambda: scrape(gw)["charon_gateway_engine_calls_total"] >= 3, 10, "both batches under way")
        leaving.close()
        reader.join(20)
        assert not reader.is_alive()
        wait_for(lambda: scrape(gw)["charon_gateway_batches_abandoned_total"] == 1, 10, "the batch abandoned")
        staying.close()
    hits = [m for m in StreamDecoder(Layout.CURRENT).feed(result[0]) if isinstance(m, Particle)]
    assert len(hits) == len(batches[1])


def test_batches_larger_than_a_chunk_are_simulated_in_reproducible_chunks() -> None:
    rng = np.random.default_rng(43)
    batch = photon_batch(2500, Layout.CURRENT, rng)
    sections: dict[str, dict[str, Any]] = {"engine": {"backend": ENGINE, "seed": SEED},
                                           "gateway": {"chunk_photons": 1000}}
    with gateway(local(ENGINE, SEED), sections) as gw:
        first = run_batches(gw.port, Layout.CURRENT, [(4, batch)])
        again = run_batches(gw.port, Layout.CURRENT, [(4, batch)])
        calls = scrape(gw)["charon_gateway_engine_calls_total"]
    assert first == again
    assert calls == 6  # 1000 + 1000 + 500, twice
    # the first chunk is exactly the unchunked simulation of those photons
    block = ParticleBlock(Layout.CURRENT, b"".join(codec.encode(p, Layout.CURRENT) for p in batch[:1000]))
    photons = mapping.to_photons(mapping.records([block], Layout.CURRENT), Layout.CURRENT, 4, SEED)
    simulator = local(ENGINE, SEED)()
    head = mapping.hits_to_bytes(simulator.simulate(photons), simulator.detector_info(), Layout.CURRENT)
    assert first.startswith(codec.encode(Hsk()) + head)
    n_hits = sum(isinstance(m, Particle) for m in StreamDecoder(Layout.CURRENT).feed(first))
    assert 0.05 < n_hits / len(batch) < 0.2
