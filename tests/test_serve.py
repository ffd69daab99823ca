"""``charon serve`` in-process: readiness, metrics, recovery, IPv6, clients with and without envelopes."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from typing import Any

import numpy as np
import pytest
import zmq

from charon.client import Client
from charon.protocol import tokens
from charon.router.driver import Router
from charon.server import Server
from charon.source import isotropic_point
from charon.worker.driver import Worker
from tests import inproc
from tests.router_support import free_port, wait_for

LOOPBACK = {"server": {"bind": "tcp://127.0.0.1:*"}}
HTTP = {"metrics": {"enabled": True, "addr": "127.0.0.1:0"}}


def test_ready_line_reports_bound_endpoint_and_metrics_serve_health() -> None:
    server = Server(inproc.settings(LOOPBACK, HTTP), inproc.echo())
    with inproc.running(server) as s:
        assert s.endpoint.startswith("tcp://127.0.0.1:")
        assert s.ready["fingerprint"] == server.handler.simulator.fingerprint
        base = f"http://{s.ready['metrics']}"
        assert urllib.request.urlopen(base + "/healthz").status == 200
        assert urllib.request.urlopen(base + "/readyz").status == 200
    assert not server.http.health.ready  # shut down: not ready any more


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this host")
def test_metrics_on_an_ipv6_loopback_address() -> None:
    with inproc.running(Server(inproc.settings(LOOPBACK, {"metrics": {"enabled": True, "addr": "[::1]:0"}}),
                               inproc.echo())) as s:
        assert s.ready["metrics"].startswith("[::1]:")
        assert urllib.request.urlopen(f"http://{s.ready['metrics']}/healthz").status == 200


def test_metrics_count_requests_photons_and_hits() -> None:
    server = Server(inproc.settings(LOOPBACK, HTTP), inproc.echo())
    with inproc.running(server) as s, Client(s.endpoint, timeout_s=10) as client:
        client.ping()
        for event_id in range(3):
            client.simulate(isotropic_point(event_id, 1000, (0.0, 0.0, 0.0), 420.0))
        client.request([b"NONSENSE"])
        text = urllib.request.urlopen(f"http://{s.ready['metrics']}/metrics").read().decode()
    assert 'charon_requests_total{kind="photondata",outcome="ok"} 3.0' in text
    assert 'charon_requests_total{kind="unknown",outcome="unknown_request"} 1.0' in text
    assert "charon_photons_total 3000.0" in text
    assert "charon_hits_total 3000.0" in text
    assert "process_cpu_seconds_total" in text  # the process collectors a registry of its own lacks


def test_metrics_port_in_use_is_a_warning_not_an_exit() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = inproc.settings(LOOPBACK, {"metrics": {"enabled": True, "addr": f"127.0.0.1:{port}"}})
        with inproc.log_lines() as logs, inproc.running(Server(settings, inproc.echo())) as s, \
                Client(s.endpoint, timeout_s=10) as client:
            client.ping()
            assert s.ready["metrics"] is None
            assert "metrics/health HTTP server not started" in logs.text()


def test_lazy_pirate_client_recovers_when_the_server_appears_late() -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    rtt: list[float] = []
    with Client(endpoint, timeout_s=0.2, retries=100) as client:
        thread = threading.Thread(target=lambda: rtt.append(client.ping()))
        thread.start()
        try:
            time.sleep(0.5)  # a few tries go unanswered: nothing listens yet
            assert not rtt
            with inproc.running(Server(inproc.settings({"server": {"bind": endpoint}}), inproc.echo())):
                thread.join(20)
        finally:
            thread.join(20)
    assert len(rtt) == 1


def test_dealer_client_without_envelope_is_answered(context: zmq.Context[Any]) -> None:
    bind = inproc.endpoint("serve")
    with inproc.running(Server(inproc.settings({"server": {"bind": bind}}), inproc.echo(), context=context)):
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(bind)
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


def test_stop_ends_the_server_and_closes_its_socket_and_context() -> None:
    server = Server(inproc.settings(LOOPBACK), inproc.echo())
    handle = inproc.start(server)
    assert handle.terminate() == 0
    assert server._sock is None
    assert server._ctx is None  # its own context, terminated


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this host")
def test_ipv6_loopback_endpoints_work_for_serve_router_and_worker() -> None:
    with inproc.running(Server(inproc.settings({"server": {"bind": "tcp://[::1]:*"}}), inproc.echo())) as s:
        assert s.endpoint.startswith("tcp://[::1]:")
        with Client(s.endpoint, timeout_s=10) as client:
            client.ping()
            assert len(client.simulate(isotropic_point(1, 100, (0.0, 0.0, 0.0), 420.0))) == 100
    router_settings = inproc.settings({"router": {"bind": "tcp://[::1]:*", "workers_bind": "tcp://[::1]:*"}})
    with inproc.running(Router(router_settings)) as r:
        with inproc.running(Worker(inproc.settings({"worker": {"router": r.workers_endpoint}}), inproc.echo())), \
                Client(r.endpoint, timeout_s=30) as client:
            assert len(client.simulate(isotropic_point(2, 100, (0.0, 0.0, 0.0), 420.0))) == 100


def test_serve_groups_requests_that_wait_for_the_engine_into_one_pass(context: zmq.Context[Any]) -> None:
    """While one pass runs, requests from other clients queue; the next pass takes them together.
    PING is answered at once during the pass (the socket thread never waits on the engine)."""
    gate = inproc.Gate()
    with inproc.running(Server(inproc.settings(SERVE_TCP), gate)) as s:
        first = Client(s.endpoint, timeout_s=30, retries=0, context=context)
        done: list[int] = []
        threads = [threading.Thread(target=lambda: done.append(len(first.simulate(_event(0)))))]
        threads[0].start()
        gate.wait_entered()
        clients = [Client(s.endpoint, timeout_s=30, retries=0, context=context) for _ in range(6)]
        for k, c in enumerate(clients, start=1):
            threads.append(threading.Thread(target=lambda c=c, k=k: done.append(len(c.simulate(_event(k))))))
            threads[-1].start()
        with Client(s.endpoint, timeout_s=5, retries=0, context=context) as pinger:
            assert pinger.ping() < 5  # answered while the engine is held
        wait_for(lambda: len(s.service._pending) == 7, 10.0, "all 7 requests in hand")
        gate.open.set()
        for t in threads:
            t.join(30)
        for c in (first, *clients):
            c.close()
    assert sorted(done) == [1000] * 7
    assert gate.batches == [1, 6]


SERVE_TCP = {"server": {"bind": "tcp://127.0.0.1:*"}}


def _event(event_id: int) -> Any:
    return isotropic_point(event_id, 1000, (0.0, 0.0, 0.0), 420.0, seed=event_id)


def test_serve_keeps_reply_order_per_connection_behind_engine_work(context: zmq.Context[Any]) -> None:
    """A DEALER pipelining PHOTONDATA then PING gets SIM_COMPLETE first: v1 replies carry no request
    id, so a connection's replies leave in its request order."""
    gate = inproc.Gate()
    with inproc.running(Server(inproc.settings(SERVE_TCP), gate)) as s:
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(s.endpoint)
        ev = _event(5)
        sock.send_multipart([b"", tokens.PHOTONDATA, ev.metadata(), *ev.frames()], copy=False)
        gate.wait_entered()
        sock.send_multipart([b"", tokens.PING])
        assert not sock.poll(200), "PING overtook the simulation of the same connection"
        gate.open.set()
        assert sock.poll(10_000)
        assert sock.recv_multipart()[1] == tokens.SIM_COMPLETE
        assert sock.poll(10_000)
        assert sock.recv_multipart() == [b"", tokens.ACK]
        sock.close(linger=0)
