"""The gateway's bounds against hostile or careless peers: the client allow-list, idle connections
reaped before a newcomer is refused, and the global in-flight particle budget (back-pressure
without deadlock)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import numpy as np
import pytest

from charon.flukaio import codec, limits
from charon.flukaio.client import connect
from charon.flukaio.codec import Hsk, Layout, Particle, StreamDecoder
from charon.flukaio.connection import ConnectionClosed
from charon.settings import parse_networks
from tests.router_support import wait_for
from tests.test_flukaio_gateway import (
    GW,
    HeldBackend,
    _batch_bytes,
    _unused,
    expected_hits_echo,
    gateway,
    handshaken,
    local,
    photon_batch,
    read_to_eof,
    scrape,
    wait_for_log,
)


def refused(gw: GW) -> float:
    value = gw.service.registry.get_sample_value("charon_auth_refused_total", {"socket": "flukaio"})
    assert value is not None
    return value


# -- the rules, sans-IO -----------------------------------------------------------------------------

def test_allow_list_matches_networks_mapped_addresses_and_refuses_garbage() -> None:
    allow = limits.AllowList(parse_networks("10.0.0.0/8, 192.168.1.7 ::1"))
    assert [allow.allows(h) for h in ("10.2.3.4", "192.168.1.7", "192.168.1.8", "::1", "::ffff:10.0.0.1",
                                      "fe80::1%eth0", "127.0.0.1", "not an address")] == \
        [True, True, False, True, True, False, False, False]
    assert limits.AllowList(()).allows("203.0.113.9")
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not an IPv4 or IPv6 network"):
        parse_networks("10.0.0.0/8,10.0.0.0/33")


def test_each_refused_address_is_reported_once_within_a_bounded_memory() -> None:
    allow = limits.AllowList(parse_networks("10.0.0.0/8"), remember=2)
    assert [allow.first_refusal(h) for h in ("a", "a", "b", "a", "c", "b", "a")] == \
        [True, False, True, False, True, True, True]  # b forgotten for c, then a for b


def test_budget_rule_lets_the_first_begun_batch_finish_when_nothing_is_simulated() -> None:
    a, b, c = limits.Holding(600, 0, 1.0), limits.Holding(500, 0, 0.5), limits.Holding(0, 0, 2.0)
    assert limits.may_read(a, [a, c], 1000)  # under the budget: everyone
    assert [limits.may_read(h, [a, b, c], 1000) for h in (a, b, c)] == [False, True, False]
    simulating = limits.Holding(0, 1200, 0.0)
    assert not any(limits.may_read(h, [a, b, simulating], 1000) for h in (a, b, simulating))


def test_reap_choice_takes_the_longest_idle_once_idle_long_enough() -> None:
    assert limits.reap_choice({"x": 5.0, "y": 3.0}, now=10.0, reap_idle_s=6.0) == "y"
    assert limits.reap_choice({"x": 5.0, "y": 3.0}, now=8.0, reap_idle_s=6.0) is None
    assert limits.reap_choice({}, now=8.0, reap_idle_s=0.0) is None


# -- the allow-list --------------------------------------------------------------------------------

def test_peers_outside_the_allow_list_are_closed_at_once_counted_and_logged_once() -> None:
    with gateway(_unused, {"gateway": {"echo": True, "allow": "10.0.0.0/8, 192.168.0.0/16"}}) as gw:
        before = refused(gw)
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
                start = time.monotonic()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # closed already
                    sock.sendall(codec.encode(Hsk()))
                assert read_to_eof(sock, 5) == b""  # no reply at all
                assert time.monotonic() - start < 2
        wait_for(lambda: refused(gw) == before + 3, 5, "three refusals counted")
        assert scrape(gw)["charon_gateway_connections"] == 0
        lines = [line for line in gw.logs.text().splitlines() if "not in gateway.allow" in line]
    assert len(lines) == 1
    assert "127.0.0.1: refused" in lines[0]


def test_allowed_networks_are_served() -> None:
    with gateway(_unused, {"gateway": {"echo": True, "allow": "10.0.0.0/8,127.0.0.0/8"}}) as gw:
        before = refused(gw)
        with connect("127.0.0.1", gw.port, read_timeout=10) as conn:
            conn.send_eob()
            assert isinstance(conn.wait_message(), codec.Eob)
        assert refused(gw) == before


def test_the_allow_list_is_checked_for_ipv6_peers_too() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    with gateway(_unused, {"gateway": {"echo": True, "listen": "tcp://[::1]:0", "allow": "127.0.0.0/8"}}) as gw:
        before = refused(gw)
        with socket.create_connection(("::1", gw.port), timeout=10) as sock:
            assert read_to_eof(sock, 5) == b""
        wait_for(lambda: refused(gw) == before + 1, 5, "the ::1 refusal counted")
    with gateway(_unused, {"gateway": {"echo": True, "listen": "tcp://[::1]:0", "allow": "::1"}}) as gw:
        connect("::1", gw.port, read_timeout=10).close()


# -- idle connections make room ------------------------------------------------------------------

def test_a_new_client_reaps_the_connection_idle_longest_instead_of_being_refused() -> None:
    with gateway(_unused, {"gateway": {"echo": True, "max_connections": 2, "reap_idle_s": 0.4}}) as gw:
        oldest = handshaken(gw.port)
        time.sleep(0.2)
        newer = handshaken(gw.port)
        # not idle long enough yet: refused, as before
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as early:
            early.sendall(codec.encode(Hsk()))
            assert read_to_eof(early) == b""
        wait_for_log(gw, r"refused, 2 connections already open \(gateway.max_connections\) and none idle")
        time.sleep(0.5)
        with connect("127.0.0.1", gw.port, read_timeout=10) as newcomer:  # served: the oldest idle one goes
            assert read_to_eof(oldest, 5) == b""
            newcomer.send_eob()
            assert isinstance(newcomer.wait_message(), codec.Eob)
            newer.sendall(codec.EOB_BYTES)  # the other one is untouched
            assert newer.recv(3) == codec.EOB_BYTES
        wait_for_log(gw, r"idle for at least 0.4 s \(gateway.reap_idle_s\); closed to make room for a new client")
        metrics = scrape(gw)
        oldest.close()
        newer.close()
    assert metrics['charon_gateway_errors_total{reason="idle_reaped"}'] == 1
    assert metrics['charon_gateway_errors_total{reason="too_many_connections"}'] == 1


def test_a_connection_being_served_is_never_reaped() -> None:
    backend = HeldBackend()
    rng = np.random.default_rng(51)
    try:
        with gateway(lambda: backend, {"engine": {"backend": "echo"},
                                       "gateway": {"max_connections": 1, "reap_idle_s": 0.0}}) as gw:
            busy = handshaken(gw.port)
            batch = photon_batch(20, Layout.CURRENT, rng)
            busy.sendall(_batch_bytes(3, batch))
            assert backend.entered.wait(10)
            with pytest.raises(ConnectionClosed):
                connect("127.0.0.1", gw.port, read_timeout=5)
            backend.go.set()
            assert read_exactly(busy, 20 * Layout.CURRENT.value + 3) == expected_hits_echo(batch, 3)
            busy.close()
    finally:
        backend.go.set()


def read_exactly(sock: socket.socket, size: int) -> bytes:
    sock.settimeout(10)
    data = b""
    while len(data) < size:
        chunk = sock.recv(65536)
        assert chunk, "closed early"
        data += chunk
    return data


# -- the in-flight budget -----------------------------------------------------------------------

def test_over_the_budget_no_connection_is_read_until_a_simulation_frees_memory() -> None:
    backend = HeldBackend()
    rng = np.random.default_rng(52)
    first, second = photon_batch(1500, Layout.CURRENT, rng), photon_batch(600, Layout.CURRENT, rng)
    try:
        with gateway(lambda: backend, {"engine": {"backend": "echo"},
                                       "gateway": {"max_inflight_particles": 1000}}) as gw:
            a, b = handshaken(gw.port), handshaken(gw.port)
            a.sendall(_batch_bytes(1, first))  # alone and over the budget: still taken (no deadlock)
            assert backend.entered.wait(10)
            b.sendall(_batch_bytes(2, second))
            wait_for(lambda: scrape(gw)["charon_gateway_read_waits_total"] >= 1, 10, "b held back")
            time.sleep(0.2)
            assert scrape(gw)["charon_gateway_inflight_particles"] == 1500
            assert [c.session.pending_particles for c in gw.service._connections.values()] == [0, 0]
            backend.go.set()
            assert read_exactly(a, 1500 * Layout.CURRENT.value + 3) == expected_hits_echo(first, 1)
            assert read_exactly(b, 600 * Layout.CURRENT.value + 3) == expected_hits_echo(second, 2)
            wait_for(lambda: scrape(gw)["charon_gateway_inflight_particles"] == 0, 5, "everything freed")
            a.close()
            b.close()
    finally:
        backend.go.set()


def test_connections_collecting_over_the_budget_finish_one_at_a_time() -> None:
    """Three half-sent batches hold more than the budget: the one begun first finishes, then the next."""
    rng = np.random.default_rng(53)
    batches = [photon_batch(800, Layout.CURRENT, rng) for _ in range(3)]
    with gateway(local("echo"), {"engine": {"backend": "echo"},
                                 "gateway": {"max_inflight_particles": 1000}}) as gw:
        socks = [handshaken(gw.port) for _ in batches]
        payloads = [_batch_bytes(i + 1, batch) for i, batch in enumerate(batches)]
        half = len(codec.encode(codec.Ipt(0, 0))) + 400 * Layout.CURRENT.value
        for sock, payload in zip(socks, payloads, strict=True):
            sock.sendall(payload[:half])
        wait_for(lambda: gw.service.held() >= 1000, 10, "the budget reached by half-sent batches")
        peak = [gw.service.held()]
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                peak.append(gw.service.held())
                time.sleep(0.001)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            for sock, payload in zip(reversed(socks), reversed(payloads), strict=True):
                sock.sendall(payload[half:])
            replies = [read_exactly(sock, 800 * Layout.CURRENT.value + 3) for sock in socks]
        finally:
            stop.set()
            watcher.join()
        for i, (reply, batch) in enumerate(zip(replies, batches, strict=True)):
            assert reply == expected_hits_echo(batch, i + 1)
            assert sum(isinstance(m, Particle) for m in StreamDecoder(Layout.CURRENT).feed(reply)) == 800
        assert scrape(gw)["charon_gateway_read_waits_total"] >= 1
        for sock in socks:
            sock.close()
    assert max(peak) <= 1000 + 800  # the budget plus at most the one batch allowed to finish
