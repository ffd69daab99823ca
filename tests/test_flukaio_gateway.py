"""``charon flukaio-gateway`` in-process on 127.0.0.1: captured C sessions replayed, photons
simulated end to end, malformed input, handshake refusal, timeouts, limits, metrics, the drain."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from charon.engine.base import DetectorInfo, Hits, Photons
from charon.engine.registry import make_simulator
from charon.flukaio import codec, mapping
from charon.flukaio.client import connect
from charon.flukaio.codec import End, Eob, Hsk, Layout, Particle, ParticleBlock, StreamDecoder
from charon.flukaio.gateway import Backend, Gateway, LocalBackend, router_backend_factory
from charon.flukaio.vectors import load_stream, load_writes, parse_hex
from charon.server import Server
from charon.settings import EngineSettings
from tests import inproc
from tests.router_support import wait_for

VECTORS = Path(__file__).resolve().parents[1] / "proto-spec" / "vectors" / "flukaio"
SESSIONS = [
    ("legacy_c_3x2.c2s.hex", "legacy_c_3x2.s2c.hex"),
    ("legacy_fortran_3x2.c2s.hex", "legacy_c_3x2.s2c.hex"),
    ("current_c_3x2.c2s.hex", "current_c_3x2.s2c.hex"),
    ("legacy_api_driver.c2s.hex", None),
    ("current_api_driver.c2s.hex", None),
]
SEED = 7


def _numpy_backend() -> str:
    try:
        make_simulator(EngineSettings(backend="numpy"))
    except Exception:  # noqa: BLE001 - fall back to the plumbing backend
        return "echo"
    return "numpy"


ENGINE = _numpy_backend()


@dataclass
class GW:
    """A gateway running in this process, its log lines and its metrics."""

    service: Gateway
    handle: inproc.Running
    logs: inproc.LogLines

    @property
    def port(self) -> int:
        return int(self.handle.endpoint.rsplit(":", 1)[1])


def port_of(gw: GW) -> int:
    return gw.port


def local(backend: str, seed: int = 0) -> Callable[[], Backend]:
    shared = LocalBackend(make_simulator(EngineSettings(backend=backend, seed=seed)))  # type: ignore[arg-type]
    return lambda: shared


@contextlib.contextmanager
def gateway(factory: Callable[[], Backend], *sections: dict[str, dict[str, Any]]) -> Iterator[GW]:
    settings = inproc.settings({"gateway": {"listen": "tcp://127.0.0.1:0"}}, *sections)
    service = Gateway(settings, factory)
    with inproc.log_lines() as logs, inproc.running(service) as handle:
        yield GW(service, handle, logs)
        assert handle.stop.is_set() or handle.thread.is_alive(), logs.text()[-3000:]


def _unused() -> Backend:
    raise AssertionError("echo mode never simulates")


@pytest.fixture(scope="module")
def echo_gw() -> Iterator[GW]:
    with gateway(_unused, {"gateway": {"echo": True, "max_connections": 4, "idle_timeout_s": 30}}) as gw:
        yield gw


@pytest.fixture(scope="module")
def engine_gw() -> Iterator[GW]:
    with gateway(local(ENGINE, SEED), {"engine": {"backend": ENGINE, "seed": SEED},
                                       "gateway": {"idle_timeout_s": 60}}) as gw:
        yield gw


@pytest.fixture(scope="module")
def strict_gw() -> Iterator[GW]:
    """Echo engine, legacy layout only, 1 s idle / 0.5 s write timeout, batches of at most 50 particles."""
    with gateway(local("echo"), {"engine": {"backend": "echo"}, "gateway": {
            "layout": "legacy", "idle_timeout_s": 1.0, "write_timeout_s": 0.5, "max_batch_particles": 50}}) as gw:
        yield gw


def exchange(port: int, writes: list[bytes], *, fragment: int | None = None, timeout: float = 20.0) -> bytes:
    """Send ``writes`` (or all of it ``fragment`` bytes at a time), then read until the gateway closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        if fragment is None:
            for w in writes:
                sock.sendall(w)
        else:
            data = b"".join(writes)
            for i in range(0, len(data), fragment):
                sock.sendall(data[i:i + fragment])
        return read_to_eof(sock, timeout)


def read_to_eof(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def handshaken(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(codec.encode(Hsk()))
    reply = b""
    while len(reply) < 11:
        chunk = sock.recv(11 - len(reply))
        assert chunk
        reply += chunk
    assert reply == codec.encode(Hsk())
    return sock


def scrape(gw: GW) -> dict[str, float]:
    """Every charon_gateway_* sample, keyed as Prometheus prints it."""
    values = {}
    for metric in gw.service.registry.collect():
        for sample in metric.samples:
            if sample.name.startswith("charon_gateway_"):
                labels = ",".join(f'{k}="{v}"' for k, v in sample.labels.items())
                values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def wait_for_log(gw: GW, pattern: str, timeout: float = 10.0) -> str:
    found: list[str] = []

    def seen() -> bool:
        match = re.search(pattern, gw.logs.text())
        if match:
            found.append(match.group(0))
        return bool(match)

    wait_for(seen, timeout, f"a log line matching {pattern!r}")
    return found[0]


def expected_echo(client_file: str) -> bytes:
    """The C sample server's answer: HSK echoed, particles echoed, EOB for EOB, END for END."""
    out = b""
    for type_name, raw in parse_hex((VECTORS / client_file).read_text()):
        if type_name in {"HSK", "PART", "EOB", "END"}:
            out += raw
    return out


# -- echo mode: the library's sample server ---------------------------------------------------

@pytest.mark.parametrize(("client_file", "server_file"), SESSIONS)
def test_echo_mode_answers_captured_sessions_byte_exactly(echo_gw: GW, client_file: str,
                                                          server_file: str | None) -> None:
    expected = load_stream(VECTORS / server_file) if server_file else expected_echo(client_file)
    assert exchange(port_of(echo_gw), load_writes(VECTORS / client_file)) == expected


@pytest.mark.parametrize("fragment", [1, 7, 100])
def test_echo_mode_reassembles_fragmented_writes(echo_gw: GW, fragment: int) -> None:
    reply = exchange(port_of(echo_gw), load_writes(VECTORS / "current_c_3x2.c2s.hex"), fragment=fragment)
    assert reply == load_stream(VECTORS / "current_c_3x2.s2c.hex")


def test_echo_mode_large_batch_is_flushed_like_the_library(echo_gw: GW) -> None:
    particles = [codec.encode(Particle(id=i, pdgid=2212), Layout.CURRENT) for i in range(1000)]
    writes = [codec.encode(Hsk()), codec.encode(codec.Ipt(1, 0)) + b"".join(particles) + codec.EOB_BYTES,
              codec.END_BYTES]
    reply = exchange(port_of(echo_gw), writes)
    assert reply == codec.encode(Hsk()) + b"".join(particles) + codec.EOB_BYTES + codec.END_BYTES


PROBES = json.loads((VECTORS / "probes.json").read_text())["probes"]


@pytest.mark.parametrize("probe", PROBES, ids=[p["name"] for p in PROBES])
def test_echo_mode_answers_captured_probes(echo_gw: GW, probe: dict[str, object]) -> None:
    port = port_of(echo_gw)
    sock = handshaken(port) if probe["after_handshake"] else socket.create_connection(("127.0.0.1", port))
    with sock:
        sock.sendall(bytes.fromhex(str(probe["send"])))
        expected = bytes.fromhex(str(probe["reply"])) if probe["reply"] else b""
        if probe["closes"]:
            assert read_to_eof(sock) == expected
        else:
            sock.settimeout(10)
            got = b""
            while len(got) < len(expected):
                got += sock.recv(len(expected) - len(got))
            assert got == expected
            sock.settimeout(0.2)
            with pytest.raises(TimeoutError):
                sock.recv(1)  # still open, nothing more


def test_connection_limit_refuses_extra_clients_only(echo_gw: GW) -> None:
    port = port_of(echo_gw)
    held = [handshaken(port) for _ in range(4)]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
            extra.sendall(codec.encode(Hsk()))
            assert read_to_eof(extra) == b""
        wait_for_log(echo_gw, r"refused, 4 connections already open")
        held[0].sendall(codec.EOB_BYTES)
        assert held[0].recv(3) == codec.EOB_BYTES  # the open ones are unaffected
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while scrape(echo_gw)["charon_gateway_connections"] > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert exchange(port, load_writes(VECTORS / "current_c_3x2.c2s.hex")) == load_stream(
        VECTORS / "current_c_3x2.s2c.hex")
    assert scrape(echo_gw)['charon_gateway_errors_total{reason="too_many_connections"}'] >= 1


# -- engine mode: photons in, hits out --------------------------------------------------------

@pytest.mark.parametrize(("client_file", "turns"), [
    ("legacy_c_3x2.c2s.hex", 2), ("legacy_fortran_3x2.c2s.hex", 2), ("current_c_3x2.c2s.hex", 2),
    ("legacy_api_driver.c2s.hex", 1), ("current_api_driver.c2s.hex", 1),
])
def test_engine_mode_answers_captured_sessions_with_hsk_one_eob_per_batch_and_end(
        engine_gw: GW, client_file: str, turns: int) -> None:
    before = scrape(engine_gw)
    reply = exchange(port_of(engine_gw), load_writes(VECTORS / client_file))
    # the captured particles are protons: skipped, so every batch is answered with a bare EOB
    assert reply == codec.encode(Hsk()) + codec.EOB_BYTES * turns + codec.END_BYTES
    after = scrape(engine_gw)
    assert after["charon_gateway_batches_total"] - before["charon_gateway_batches_total"] == turns
    skipped = 'charon_gateway_particles_total{kind="skipped"}'
    n_parts = sum(1 for t, _ in parse_hex((VECTORS / client_file).read_text()) if t == "PART")
    assert after[skipped] - before[skipped] == n_parts


def photon_batch(n: int, layout: Layout, rng: np.random.Generator, *, protons: int = 0) -> list[Particle]:
    """Isotropic photons from near the detector centre (cm, GeV, s), plus some protons."""
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1)[:, None]
    pol = np.cross(d, rng.normal(size=(n, 3)))
    pol /= np.linalg.norm(pol, axis=1)[:, None]
    wavelength = rng.uniform(350, 550, n)
    pos = rng.uniform(-10, 10, (n, 3))
    out = []
    for i in range(n):
        fields = {"sx": pol[i, 0], "sy": pol[i, 1], "sz": pol[i, 2], "pdgid": 22} \
            if layout is Layout.CURRENT else {}
        out.append(Particle(id=i, gen=0x400, x=pos[i, 0], y=pos[i, 1], z=pos[i, 2], tx=d[i, 0], ty=d[i, 1],
                            tz=d[i, 2], m=0.0, pc=mapping.HC_EV_NM / wavelength[i] / 1e9,
                            t=rng.uniform(0, 1e-8), weight=1.0, **fields))
    for j in range(protons):
        proton = {"pdgid": 2212, "q": 1} if layout is Layout.CURRENT else {"aa": 1, "zz": 1}
        out.insert(j * 7 % (len(out) + 1), Particle(id=10_000 + j, m=0.938272, pc=450.0, **proton))
    return out


def expected_hits(batch: list[Particle], layout: Layout, event_id: int) -> bytes:
    """What the gateway must answer: the same engine, same seed, same photons, run here."""
    block = ParticleBlock(layout, b"".join(codec.encode(p, layout) for p in batch))
    records = mapping.records([block], layout)
    photons = mapping.to_photons(records, layout, event_id, SEED)
    simulator = make_simulator(EngineSettings(backend=ENGINE, seed=SEED))  # type: ignore[arg-type]
    hits: Hits = simulator.simulate([photons])[0]
    return mapping.hits_to_bytes(hits, simulator.detector_info(), layout) + codec.EOB_BYTES


def run_batches(port: int, layout: Layout, batches: list[tuple[int, list[Particle]]], *,
                fragment: int | None = None) -> bytes:
    writes = [codec.encode(Hsk())]
    for turn, batch in batches:
        writes.append(codec.encode(codec.Ipt(turn, 3)) + b"".join(codec.encode(p, layout) for p in batch)
                      + codec.EOB_BYTES)
    writes.append(codec.END_BYTES)
    return exchange(port, writes, fragment=fragment, timeout=60)


@pytest.mark.parametrize("layout", [Layout.CURRENT, Layout.LEGACY])
def test_end_to_end_hits_equal_the_engine_run_directly(engine_gw: GW, layout: Layout) -> None:
    rng = np.random.default_rng(11)
    batches = [(5, photon_batch(3000, layout, rng, protons=4)), (6, photon_batch(1000, layout, rng))]
    before = scrape(engine_gw)
    reply = run_batches(port_of(engine_gw), layout, batches)
    expected = codec.encode(Hsk()) + b"".join(expected_hits(b, layout, turn) for turn, b in batches) \
        + codec.END_BYTES
    messages = StreamDecoder(layout).feed(reply)
    n_hits = sum(isinstance(m, Particle) for m in messages)
    assert n_hits > 0
    assert reply == expected
    after = scrape(engine_gw)
    assert after['charon_gateway_particles_total{kind="photon"}'] - \
        before['charon_gateway_particles_total{kind="photon"}'] == 4000
    assert after['charon_gateway_particles_total{kind="hit"}'] - \
        before['charon_gateway_particles_total{kind="hit"}'] == n_hits
    info = make_simulator(EngineSettings(backend="echo")).detector_info()
    for m in messages:
        if isinstance(m, Particle):
            assert m.id < len(info)
            assert m.x == pytest.approx(float(info.x[m.id]) / 10)
            assert m.weight == 1.0
            assert m.m == 0.0
            if layout is Layout.CURRENT:
                assert (m.pdgid, m.q) == (22, 0)


def test_end_to_end_with_one_byte_writes(engine_gw: GW) -> None:
    rng = np.random.default_rng(12)
    batches = [(9, photon_batch(60, Layout.CURRENT, rng))]
    reply = run_batches(port_of(engine_gw), Layout.CURRENT, batches, fragment=1)
    assert reply == codec.encode(Hsk()) + expected_hits(batches[0][1], Layout.CURRENT, 9) + codec.END_BYTES


def test_python_flukaio_client_drives_the_gateway(engine_gw: GW) -> None:
    rng = np.random.default_rng(13)
    batch = photon_batch(500, Layout.CURRENT, rng)
    with connect("127.0.0.1", port_of(engine_gw), read_timeout=60) as conn:
        conn.send_npart(500)
        conn.send_brhono(1.5)
        for turn in (1, 2):
            conn.send_ipt(turn, 0)
            for p in batch:
                conn.send_particle(p)
            conn.send_eob()
            got = []
            while not isinstance(message := conn.wait_message(), Eob):
                got.append(message)
            expected = expected_hits(batch, Layout.CURRENT, turn)
            assert b"".join(codec.encode(p, Layout.CURRENT) for p in got) + codec.EOB_BYTES == expected
        conn.send_eoc()
        assert conn.wait_message() == End()


def test_concurrent_clients_are_independent(engine_gw: GW) -> None:
    port = port_of(engine_gw)
    results: dict[int, bool] = {}
    rng = np.random.default_rng(14)
    batches = {k: [(100 * k + t, photon_batch(200, Layout.CURRENT, rng)) for t in range(3)] for k in range(6)}

    def client(k: int) -> None:
        reply = run_batches(port, Layout.CURRENT, batches[k])
        expected = codec.encode(Hsk()) + b"".join(expected_hits(b, Layout.CURRENT, turn)
                                                  for turn, b in batches[k]) + codec.END_BYTES
        results[k] = reply == expected

    threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    bad = handshaken(port)  # a stalled, half-sent message on another connection changes nothing
    try:
        bad.sendall(codec.encode(Particle(), Layout.CURRENT)[:50])
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        bad.close()
    assert results == dict.fromkeys(range(6), True)


def test_echo_engine_maps_fields_back_legacy(strict_gw: GW) -> None:
    """The echo engine returns one hit per photon carrying the photon's own values."""
    rng = np.random.default_rng(15)
    batch = photon_batch(20, Layout.LEGACY, rng, protons=3)
    reply = run_batches(port_of(strict_gw), Layout.LEGACY, [(4, batch)])
    messages = StreamDecoder(Layout.LEGACY).feed(reply)
    hits = [m for m in messages if isinstance(m, Particle)]
    photons = [p for p in batch if p.aa == 0]
    assert len(hits) == len(photons) == 20
    info = make_simulator(EngineSettings(backend="echo")).detector_info()
    for index, (hit, photon) in enumerate(zip(hits, photons, strict=True)):
        assert hit.id == index % len(info)
        assert hit.gen == 0x400 | 0x4  # CHERENKOV kept, SURFACE_DETECT added
        assert (hit.x, hit.y, hit.z) == pytest.approx(
            (info.x[hit.id] / 10, info.y[hit.id] / 10, info.z[hit.id] / 10))
        assert (hit.tx, hit.ty, hit.tz) == pytest.approx((photon.tx, photon.ty, photon.tz), abs=1e-6)
        assert hit.pc == pytest.approx(photon.pc, rel=1e-6)
        assert hit.t == pytest.approx(photon.t, rel=1e-6, abs=1e-15)
        assert (hit.m, hit.aa, hit.zz, hit.weight) == (0.0, 0, 0, 1.0)


# -- malformed input, limits, timeouts ---------------------------------------------------------

MALFORMED = [
    ("zero_size", b"\x00\x00\x01"),
    ("short_size", b"\x02\x00\x02"),
    ("short_size", b"\x01\x00\x05"),
    ("oversize", b"\x20\x4e\x01"),
    ("unknown_type", b"\x03\x00\x09\x03\x00\x02"),
    ("unknown_type", b"\x03\x00\x00"),
    ("unknown_type", b"\x03\x00\xff"),
    ("size_mismatch", b"\x00\x03\x02"),
    ("particle_size", b"\x17\x00\x01" + bytes(20)),
    ("particle_size", b"\xc8\x00\x01" + bytes(197)),
    ("layout_mismatch", codec.encode(Particle(), Layout.CURRENT)),
    ("unexpected", codec.encode(Hsk())),
]


@pytest.mark.parametrize(("reason", "data"), MALFORMED, ids=[f"{r}-{d[:3].hex()}" for r, d in MALFORMED])
def test_malformed_input_closes_only_that_connection_without_reply(strict_gw: GW, reason: str,
                                                                   data: bytes) -> None:
    port = port_of(strict_gw)
    before = scrape(strict_gw).get(f'charon_gateway_errors_total{{reason="{reason}"}}', 0.0)
    with handshaken(port) as good, handshaken(port) as bad:
        bad.sendall(data)
        assert read_to_eof(bad) == b""  # closed for `reason` (counted below), not by the idle timeout
        good.sendall(codec.encode(codec.Ipt(1, 1)) + codec.encode(Particle(id=1, pc=3e-9, tz=1.0),
                                                                  Layout.LEGACY) + codec.EOB_BYTES)
        good.settimeout(10)
        answer = good.recv(95 + 3)
        assert len(answer) >= 95
    wait_for_log(strict_gw, rf"reason={reason}\); closing without reply")
    assert scrape(strict_gw)[f'charon_gateway_errors_total{{reason="{reason}"}}'] == before + 1


@pytest.mark.parametrize("hsk", [Hsk(4, 0, 42), Hsk(2, 9, 42)])
def test_version_mismatch_closes_without_reply(strict_gw: GW, hsk: Hsk) -> None:
    assert exchange(port_of(strict_gw), [codec.encode(hsk)]) == b""
    wait_for_log(strict_gw, r"handshake major version \d \(this side speaks 3\)")


def test_batch_larger_than_the_limit_is_refused(strict_gw: GW) -> None:
    writes = [codec.encode(Hsk()), b"".join(codec.encode(Particle(id=i), Layout.LEGACY) for i in range(51))]
    assert exchange(port_of(strict_gw), writes) == codec.encode(Hsk())
    wait_for_log(strict_gw, r"reason=batch_too_large")


@pytest.mark.parametrize("partial", [b"", codec.encode(Hsk())[:5]], ids=["silent", "mid-message"])
def test_idle_timeout_closes_a_stalled_peer(strict_gw: GW, partial: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port_of(strict_gw)), timeout=10) as sock:
        sock.sendall(partial)
        start = time.monotonic()
        assert read_to_eof(sock) == b""
        waited = time.monotonic() - start
    assert 0.8 < waited < 8
    if partial:
        wait_for_log(strict_gw, r"nothing received for 1 s \(gateway.idle_timeout_s\), 5 bytes of an "
                                r"incomplete message held")


def test_write_timeout_closes_a_peer_that_does_not_read(strict_gw: GW) -> None:
    batch = codec.encode(codec.Ipt(1, 0)) + b"".join(
        codec.encode(Particle(id=i, tz=1.0, pc=3e-9), Layout.LEGACY) for i in range(50)) + codec.EOB_BYTES
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    with sock:
        sock.connect(("127.0.0.1", port_of(strict_gw)))
        sock.sendall(codec.encode(Hsk()))
        start = time.monotonic()
        with pytest.raises(OSError):  # noqa: PT012 - keep writing until the gateway gives up
            while time.monotonic() - start < 30:
                sock.sendall(batch * 20)
    wait_for_log(strict_gw, r"reply not written within 0.5 s \(gateway.write_timeout_s\); closing")


def test_peer_closing_mid_message_is_logged(strict_gw: GW) -> None:
    with handshaken(port_of(strict_gw)) as sock:
        sock.sendall(b"\x5f\x00\x01" + bytes(10))
    wait_for_log(strict_gw, r"peer closed in the middle of a message \(13 bytes\)")


def test_simulation_failure_closes_without_reply() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    sections = {"client": {"timeout_s": 0.3, "retries": 0}, "gateway": {"router": f"tcp://127.0.0.1:{dead}"}}
    settings = inproc.settings({"gateway": {"listen": "tcp://127.0.0.1:0"}}, sections)
    with gateway(router_backend_factory(settings), sections) as gw:
        rng = np.random.default_rng(16)
        reply = run_batches(port_of(gw), Layout.CURRENT, [(1, photon_batch(5, Layout.CURRENT, rng))])
        assert reply == codec.encode(Hsk())
        wait_for_log(gw, r"simulation failed: .*; closing without reply")
        assert scrape(gw)['charon_gateway_errors_total{reason="simulation_failed"}'] == 1
        # a batch without photons needs no simulation and still works
        assert exchange(port_of(gw), load_writes(VECTORS / "current_c_3x2.c2s.hex")) == \
            codec.encode(Hsk()) + codec.EOB_BYTES * 2 + codec.END_BYTES
    assert gw.handle.join() == 0


def test_router_mode_forwards_to_a_v1_server() -> None:
    with inproc.running(Server(inproc.settings({"server": {"bind": "tcp://127.0.0.1:*"}}), inproc.echo())) as server:
        sections = {"engine": {"seed": SEED}, "gateway": {"router": server.endpoint}}
        settings = inproc.settings({"gateway": {"listen": "tcp://127.0.0.1:0"}}, sections)
        with gateway(router_backend_factory(settings), sections) as gw:
            rng = np.random.default_rng(17)
            batch = photon_batch(100, Layout.CURRENT, rng, protons=2)
            reply = run_batches(port_of(gw), Layout.CURRENT, [(3, batch)])
        block = ParticleBlock(Layout.CURRENT, b"".join(codec.encode(p, Layout.CURRENT) for p in batch))
        photons = mapping.to_photons(mapping.records([block], Layout.CURRENT), Layout.CURRENT, 3, SEED)
        simulator = make_simulator(EngineSettings(backend="echo"))
        hits = simulator.simulate([photons])[0]
        expected = mapping.hits_to_bytes(hits, simulator.detector_info(), Layout.CURRENT)
        assert reply == codec.encode(Hsk()) + expected + codec.EOB_BYTES + codec.END_BYTES


def _free_dual_stack_port() -> int:
    with socket.socket(socket.AF_INET6) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", 0))
        return int(s.getsockname()[1])


def test_star_listen_accepts_ipv4_and_ipv6_loopback_clients() -> None:
    try:
        port = _free_dual_stack_port()
    except OSError:
        pytest.skip("no IPv6 on this host")
    with gateway(_unused, {"gateway": {"listen": f"tcp://*:{port}", "echo": True}}) as gw:
        assert port_of(gw) == port
        for host in ("127.0.0.1", "::1"):
            conn = connect(host, port, read_timeout=10)
            conn.close()


# -- the drain: SIGTERM finishes what arrived, refuses the rest ---------------------------------


class HeldBackend:
    """A local echo engine whose simulations wait until the test lets them go."""

    def __init__(self) -> None:
        self.inner = LocalBackend(inproc.echo())
        self.entered = threading.Event()
        self.go = threading.Event()

    def detector_info(self) -> DetectorInfo:
        return self.inner.detector_info()

    def simulate(self, photons: Photons) -> Hits:
        self.entered.set()
        assert self.go.wait(30)
        return self.inner.simulate(photons)

    def close(self) -> None:
        self.go.set()


def _batch_bytes(turn: int, batch: list[Particle], layout: Layout = Layout.CURRENT) -> bytes:
    return codec.encode(codec.Ipt(turn, 3)) + b"".join(codec.encode(p, layout) for p in batch) + codec.EOB_BYTES


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(codec.encode(Hsk()))
            return read_to_eof(sock, 5) == b""
    except ConnectionRefusedError:
        return True


def test_drain_answers_a_batch_whose_eob_arrived_and_refuses_new_connections() -> None:
    backend = HeldBackend()
    rng = np.random.default_rng(18)
    batch = photon_batch(50, Layout.CURRENT, rng)
    try:
        with gateway(lambda: backend, {"engine": {"backend": "echo"}}) as gw:
            sock = handshaken(gw.port)
            sock.sendall(_batch_bytes(5, batch))
            assert backend.entered.wait(10)
            gw.handle.stop.request()  # SIGTERM while the batch is being simulated
            gw.logs.wait_for("draining: 1 connection(s) open, 1 with a batch in hand")
            assert _refused(gw.port)
            backend.go.set()
            reply = read_to_eof(sock, 10)
            sock.close()
            assert gw.handle.join() == 0
        assert reply == expected_hits_echo(batch, 5)  # answered whole; then closed, no END
        metrics = scrape(gw)
        assert metrics["charon_gateway_batches_total"] == 1
        assert metrics['charon_gateway_errors_total{reason="shutdown"}'] == 1
    finally:
        backend.go.set()


def expected_hits_echo(batch: list[Particle], event_id: int) -> bytes:
    block = ParticleBlock(Layout.CURRENT, b"".join(codec.encode(p, Layout.CURRENT) for p in batch))
    photons = mapping.to_photons(mapping.records([block], Layout.CURRENT), Layout.CURRENT, event_id, 0)
    simulator = inproc.echo()
    hits = simulator.simulate([photons])[0]
    return mapping.hits_to_bytes(hits, simulator.detector_info(), Layout.CURRENT) + codec.EOB_BYTES


def test_drain_closes_idle_connections_and_unfinished_batches_without_reply() -> None:
    rng = np.random.default_rng(19)
    with gateway(local("echo"), {"engine": {"backend": "echo"}}) as gw:
        idle = handshaken(gw.port)
        partial = handshaken(gw.port)
        partial.sendall(_batch_bytes(1, photon_batch(10, Layout.CURRENT, rng))[:-3])  # no EOB yet
        wait_for(lambda: sorted(c.session.pending_particles for c in gw.service._connections.values()) == [0, 10],
                 5, "an idle connection and one in the middle of a batch")
        gw.handle.stop.request()
        with idle, partial:
            assert read_to_eof(idle, 10) == b""
            assert read_to_eof(partial, 10) == b""
        assert gw.handle.join() == 0
    assert "10 particles of an unfinished batch dropped" in gw.logs.text()
    assert scrape(gw)['charon_gateway_errors_total{reason="shutdown"}'] == 2
    assert scrape(gw)["charon_gateway_batches_total"] == 0


@pytest.mark.parametrize("force", [False, True], ids=["grace-over", "forced"])
def test_a_drain_that_cannot_finish_cuts_the_connection(force: bool) -> None:
    backend = HeldBackend()
    rng = np.random.default_rng(20)
    try:
        with gateway(lambda: backend, {"engine": {"backend": "echo"}, "gateway": {"drain_grace_s": 0.3}}) as gw:
            sock = handshaken(gw.port)
            sock.sendall(_batch_bytes(2, photon_batch(5, Layout.CURRENT, rng)))
            assert backend.entered.wait(10)
            gw.handle.stop.request()
            if force:
                gw.handle.stop.force()
            with sock:
                assert read_to_eof(sock, 10) == b""  # never answered: the simulation never ended
            assert gw.handle.join() == 0
        gw.logs.wait_for("forced" if force else "grace over")
    finally:
        backend.go.set()
