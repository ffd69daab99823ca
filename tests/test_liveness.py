"""The engine-progress liveness signal: unit behaviour on a fake clock, and /healthz of real services."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from charon.client import Client
from charon.engine.base import Photons
from charon.liveness import Progress
from charon.router.driver import Router
from charon.server import Server
from charon.worker.driver import Worker
from tests import inproc


def test_progress_reports_a_pass_that_runs_past_the_limit() -> None:
    now = [100.0]
    p = Progress()
    check = p.check(10.0, lambda: now[0])
    assert check() is None
    p.begin(now[0])
    now[0] += 10.0
    assert check() is None
    now[0] += 0.5
    reason = check()
    assert reason is not None
    assert "engine.stall_timeout_s = 10 s" in reason
    p.end()
    assert check() is None
    assert p.busy_for(now[0]) == 0.0


def test_a_zero_limit_never_reports() -> None:
    p = Progress()
    p.begin(0.0)
    assert p.check(0.0, lambda: 1e9)() is None


def _one_photon() -> Photons:
    return Photons.from_arrays(1, np.zeros((1, 3)), [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]], 420.0)


def _stall_then_recover(service: Server | Worker, endpoint: str, gate: inproc.Gate, clock: inproc.FakeClock) -> None:
    """A pass that runs past engine.stall_timeout_s on the service's clock turns /healthz to 503."""
    liveness = service.http.health.liveness
    assert liveness() is None
    with Client(endpoint, timeout_s=20, retries=0) as client:
        t = threading.Thread(target=client.simulate, args=(_one_photon(),), daemon=True)
        t.start()
        gate.wait_entered()
        clock.advance(0.5)
        assert liveness() is None
        clock.advance(0.1)
        reason = liveness()
        assert reason is not None
        assert "engine.stall_timeout_s = 0.5 s" in reason
        gate.open.set()
        t.join(20)
    assert liveness() is None


def test_worker_healthz_fails_while_a_pass_exceeds_the_stall_timeout() -> None:
    # Heartbeats slow enough that neither side notices the worker's clock standing still.
    stall = {"engine": {"stall_timeout_s": 0.5}, "heartbeat": {"interval_s": 10.0}}
    clock, gate = inproc.FakeClock(), inproc.Gate()
    with inproc.running(Router(inproc.settings(stall, {"router": {"bind": "tcp://127.0.0.1:*",
                                                                   "workers_bind": "tcp://127.0.0.1:*"}}))) as r:
        worker = Worker(inproc.settings(stall, {"worker": {"router": r.workers_endpoint}}), gate, clock=clock)
        with inproc.running(worker):
            _stall_then_recover(worker, r.endpoint, gate, clock)


def test_serve_healthz_fails_while_a_pass_exceeds_the_stall_timeout() -> None:
    clock, gate = inproc.FakeClock(), inproc.Gate()
    server = Server(inproc.settings({"engine": {"stall_timeout_s": 0.5}, "server": {"bind": "tcp://127.0.0.1:*"}}),
                    gate, clock=clock)
    with inproc.running(server) as s:
        _stall_then_recover(server, s.endpoint, gate, clock)


def test_healthz_over_http_answers_503_with_the_reason() -> None:
    clock, gate = inproc.FakeClock(), inproc.Gate()
    settings = inproc.settings({"engine": {"stall_timeout_s": 1.0}, "server": {"bind": "tcp://127.0.0.1:*"},
                                "metrics": {"enabled": True, "addr": "127.0.0.1:0"}})
    with inproc.running(Server(settings, gate, clock=clock)) as s, \
            Client(s.endpoint, timeout_s=20, retries=0) as client:
        url = f"http://{s.ready['metrics']}/healthz"
        t = threading.Thread(target=client.simulate, args=(_one_photon(),), daemon=True)
        t.start()
        gate.wait_entered()
        clock.advance(2.0)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url, timeout=5)
        assert info.value.code == 503
        assert b"engine stalled" in info.value.read()
        gate.open.set()
        t.join(20)
        assert urllib.request.urlopen(url, timeout=5).status == 200
