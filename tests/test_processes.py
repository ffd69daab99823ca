"""The commands as real processes: ``python -m charon ...`` on 127.0.0.1, signals, kill -9.

Everything else runs the same services in-process; these few prove that the commands start, print
their ready line, serve over TCP, obey SIGTERM (and a second SIGTERM), and that a router and its
workers recover from a process killed outright. ``make test`` runs them (marker ``processes``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import zmq

from charon.client import Client
from charon.flukaio.vectors import load_stream, load_writes
from tests import procs
from tests.router_support import (
    FAST,
    Requester,
    check_sim_complete,
    free_port,
    metric,
    photondata,
    scrape,
    wait_for,
    wait_metric,
)

pytestmark = pytest.mark.processes

FLUKAIO_VECTORS = Path(__file__).resolve().parents[1] / "proto-spec" / "vectors" / "flukaio"


def _idle(router: procs.Proc) -> float:
    return metric(scrape(router.metrics), "charon_workers", 'state="idle"')


def _status(url: str) -> int:
    try:
        return int(urllib.request.urlopen(url, timeout=5).status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def charon(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "charon", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, check=False)


def test_serve_is_ready_answers_over_tcp_and_exits_0_on_sigterm() -> None:
    proc = procs.start("serve", "--bind", "tcp://127.0.0.1:*", "--backend", "echo", "--metrics-addr", "127.0.0.1:0")
    try:
        assert proc.endpoint.startswith("tcp://127.0.0.1:")
        assert _status(f"http://{proc.metrics}/healthz") == 200
        assert _status(f"http://{proc.metrics}/readyz") == 200
        with Client(proc.endpoint, timeout_s=10) as client:
            client.ping()
            check_sim_complete([bytes(f) for f in client.request(photondata(1, 10))], 1, 10)
        assert proc.terminate(timeout=10) == 0
    finally:
        proc.kill()


def test_cli_clients_and_demo() -> None:
    with procs.serve() as server:
        ping = charon("ping", "--endpoint", server.endpoint)
        assert ping.returncode == 0, ping.stderr
        assert ping.stdout.startswith("ACK from")
    demo = charon("demo", "--events", "2", "--photons", "2000", env={"CHARON_ENGINE__BACKEND": "echo"})
    assert demo.returncode == 0, demo.stderr
    assert "server ready on tcp://127.0.0.1:" in demo.stdout
    assert "photons/s" in demo.stdout
    assert "4000" in demo.stdout


def test_a_second_sigterm_stops_a_draining_worker_at_once(context: zmq.Context[Any]) -> None:
    with procs.router(env=FAST) as router:
        with procs.worker(router.workers_endpoint, "--echo-delay", "30", env=FAST) as slow:
            req = Requester(context, router.endpoint)
            try:
                req.send(photondata(9, 10))
                wait_for(lambda: metric(scrape(router.metrics), "charon_in_flight") == 1, 10, "in flight")
                slow.proc.send_signal(signal.SIGTERM)
                wait_for(lambda: "draining: 1 request(s) in hand" in slow.stderr(), 10, "draining")
                assert slow.alive()  # waits for its request, up to worker.drain_grace_s (25 s)
                assert slow.terminate(timeout=10) == 0  # the second signal
                assert "forced stop" in slow.stderr()
                with procs.worker(router.workers_endpoint, env=FAST):
                    reply = req.recv(15)
                    assert reply is not None
                    check_sim_complete(reply, 9, 10)
                assert metric(scrape(router.metrics), "charon_requeued_total") == 1
            finally:
                req.close()


def test_kill_9_of_a_busy_worker_loses_no_request_and_answers_none_twice(context: zmq.Context[Any]) -> None:
    with procs.router(env=FAST) as router:
        with procs.worker(router.workers_endpoint, "--echo-delay", "30", "--capacity", "4", env=FAST) as doomed:
            reqs = [Requester(context, router.endpoint) for _ in range(4)]
            try:
                for i, req in enumerate(reqs):
                    req.send(photondata(i, 50))
                wait_for(lambda: metric(scrape(router.metrics), "charon_in_flight") == 4, 10, "4 in flight")
                doomed.proc.kill()
                doomed.proc.wait(10)
                with procs.worker(router.workers_endpoint, env=FAST):
                    for i, req in enumerate(reqs):
                        reply = req.recv(15)
                        assert reply is not None, f"request {i} lost with its worker"
                        check_sim_complete(reply, i, 50)
                    assert all(req.recv(0.5) is None for req in reqs)
                text = wait_metric(router.metrics, "charon_requests_total", 'kind="photondata",outcome="ok"',
                                   at_least=4)
                assert metric(text, "charon_requeued_total") == 4
                assert metric(text, "charon_workers_expired_total") == 1
            finally:
                for req in reqs:
                    req.close()


def test_router_killed_and_restarted_workers_come_back_and_a_lazy_pirate_client_recovers() -> None:
    client_port, worker_port = free_port(), free_port()
    args = ("--bind", f"tcp://127.0.0.1:{client_port}", "--workers-bind", f"tcp://127.0.0.1:{worker_port}",
            "--metrics-addr", "127.0.0.1:0")
    bound = 3 * 0.2 + 1.0 + 2.0  # liveness x interval + first backoff step + 2 s
    started = [procs.start("router", *args, env=FAST)]
    try:
        with procs.worker(started[0].workers_endpoint, env=FAST), \
                Client(started[0].endpoint, timeout_s=0.5, retries=40) as client:
            assert len(client.detector_info()) > 0
            for restart in range(2):  # the second proves the backoff was reset by the reconnection
                started[-1].proc.kill()
                started[-1].proc.wait(10)
                router = procs.start("router", *args, env=FAST)
                started.append(router)
                wait_for(lambda r=router: _idle(r) >= 1, bound, f"worker back after restart {restart}")
                reply = client.request(photondata(restart, 64))
                check_sim_complete([bytes(f) for f in reply], restart, 64)
    finally:
        for p in started:
            p.kill()


def test_gateway_answers_a_captured_session_and_exits_0_on_sigterm() -> None:
    gw = procs.start("flukaio-gateway", "--listen", "tcp://127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--echo")
    try:
        port = int(gw.endpoint.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            for write in load_writes(FLUKAIO_VECTORS / "current_c_3x2.c2s.hex"):
                sock.sendall(write)
            got = b""
            while chunk := sock.recv(65536):
                got += chunk
        assert got == load_stream(FLUKAIO_VECTORS / "current_c_3x2.s2c.hex")
        t0 = time.monotonic()
        assert gw.terminate(timeout=15) == 0
        assert time.monotonic() - t0 < 15
        assert "draining: 0 connection(s) open" in gw.stderr()
    finally:
        gw.kill()
