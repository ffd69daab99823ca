"""``charon serve`` behaviours beyond the wire vectors: readiness, metrics, recovery, signals."""

from __future__ import annotations

import socket
import time
import urllib.request
from typing import Any

import numpy as np
import pytest
import zmq

from charon.client import Client
from charon.protocol import tokens
from charon.source import isotropic_point
from tests import procs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ready_line_reports_bound_endpoint_and_metrics_serve_health() -> None:
    with procs.serve() as server:
        assert server.endpoint.startswith("tcp://127.0.0.1:")
        base = f"http://{server.metrics}"
        assert urllib.request.urlopen(base + "/healthz").status == 200
        assert urllib.request.urlopen(base + "/readyz").status == 200


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this host")
def test_metrics_on_an_ipv6_loopback_address() -> None:
    with procs.running("serve", "--bind", "tcp://127.0.0.1:*", "--backend", "echo",
                       "--metrics-addr", "[::1]:0") as server:
        assert server.metrics.startswith("[::1]:")
        assert urllib.request.urlopen(f"http://{server.metrics}/healthz").status == 200


def test_metrics_count_requests_photons_and_hits() -> None:
    with procs.serve() as server, Client(server.endpoint, timeout_s=10) as client:
        client.ping()
        for event_id in range(3):
            client.simulate(isotropic_point(event_id, 1000, (0.0, 0.0, 0.0), 420.0))
        client.request([b"NONSENSE"])
        text = urllib.request.urlopen(server.metrics_url).read().decode()
    assert 'charon_requests_total{kind="photondata",outcome="ok"} 3.0' in text
    assert 'charon_requests_total{kind="unknown",outcome="unknown_request"} 1.0' in text
    assert "charon_photons_total 3000.0" in text
    assert "charon_hits_total 3000.0" in text


def test_metrics_port_in_use_is_a_warning_not_an_exit() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with procs.running("serve", "--bind", "tcp://127.0.0.1:*", "--backend", "echo",
                           "--metrics-addr", f"127.0.0.1:{port}") as server:
            with Client(server.endpoint, timeout_s=10) as client:
                client.ping()
            assert "metrics" not in server.ready
            assert "metrics/health HTTP server not started" in server.stderr()


def test_lazy_pirate_client_recovers_when_the_server_appears_late() -> None:
    port = _free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    client = Client(endpoint, timeout_s=0.5, retries=40)
    started: list[procs.Proc] = []
    try:
        proc = procs.start("serve", "--bind", endpoint, "--backend", "echo", "--metrics-addr", "127.0.0.1:0",
                           wait_ready=False)
        started.append(proc)
        assert client.ping() < 20.0
    finally:
        client.close()
        for p in started:
            p.kill()


def test_dealer_client_without_envelope_is_answered(context: zmq.Context[Any]) -> None:
    with procs.serve() as server:
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(server.endpoint)
        try:
            dealer.send_multipart([tokens.PING])
            assert dealer.poll(10_000)
            assert dealer.recv_multipart() == [tokens.ACK]
            photons = isotropic_point(3, 10, (0.0, 0.0, 0.0), 420.0)
            dealer.send_multipart([tokens.PHOTONDATA, photons.metadata(), *photons.frames()])
            assert dealer.poll(10_000)
            reply = dealer.recv_multipart()
            assert reply[0] == tokens.SIM_COMPLETE
            assert reply[1] == (3).to_bytes(4, "little")
            assert len(reply) == 12
            assert np.frombuffer(reply[2], "<u4").tolist() == list(range(10))
        finally:
            dealer.close()


def test_sigterm_stops_the_server_cleanly() -> None:
    proc = procs.start("serve", "--bind", "tcp://127.0.0.1:*", "--backend", "echo", "--metrics-addr", "127.0.0.1:0")
    try:
        t0 = time.monotonic()
        assert proc.terminate(timeout=10) == 0
        assert time.monotonic() - t0 < 10
    finally:
        proc.kill()


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this host")
def test_ipv6_loopback_endpoints_work_for_serve_router_and_worker() -> None:
    with procs.running("serve", "--bind", "tcp://[::1]:*", "--backend", "echo", "--metrics-addr", "[::1]:0") as server:
        assert server.endpoint.startswith("tcp://[::1]:")
        with Client(server.endpoint, timeout_s=10) as client:
            client.ping()
            assert len(client.simulate(isotropic_point(1, 100, (0.0, 0.0, 0.0), 420.0))) == 100
    with procs.running("router", "--bind", "tcp://[::1]:*", "--workers-bind", "tcp://[::1]:*",
                       "--metrics-addr", "[::1]:0") as router, \
            procs.worker(router.workers_endpoint, env={"CHARON_METRICS__ADDR": "[::1]:0"}), \
            Client(router.endpoint, timeout_s=30) as client:
        assert len(client.simulate(isotropic_point(2, 100, (0.0, 0.0, 0.0), 420.0))) == 100
