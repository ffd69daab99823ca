"""The engine-progress liveness signal: unit behaviour on a fake clock, and /healthz of real processes."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

import numpy as np

from charon.client import Client
from charon.engine.base import Photons
from charon.liveness import Progress
from tests import procs


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


def _status(url: str) -> int:
    try:
        return int(urllib.request.urlopen(url, timeout=5).status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _one_photon() -> Photons:
    return Photons.from_arrays(1, np.zeros((1, 3)), [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]], 420.0)


def _wait_status(url: str, want: int, bound_s: float) -> None:
    deadline = time.monotonic() + bound_s
    while _status(url) != want:
        assert time.monotonic() < deadline, f"{url} never answered {want}"
        time.sleep(0.05)


def test_worker_healthz_fails_while_a_pass_exceeds_the_stall_timeout() -> None:
    env = {"CHARON_ENGINE__STALL_TIMEOUT_S": "0.5"}
    with procs.router() as router, procs.worker(router.workers_endpoint,
                                                "--echo-delay", "3", env=env) as worker:
        url = f"http://{worker.metrics}/healthz"
        assert _status(url) == 200
        with Client(router.endpoint, timeout_s=20, retries=0) as client:
            t = threading.Thread(target=client.simulate, args=(_one_photon(),), daemon=True)
            t.start()
            _wait_status(url, 503, 3.0)
            t.join(20)
        _wait_status(url, 200, 3.0)


def test_serve_healthz_fails_while_a_pass_exceeds_the_stall_timeout() -> None:
    env = {"CHARON_ENGINE__STALL_TIMEOUT_S": "0.5"}
    with procs.serve("--echo-delay", "3", env=env) as server:
        url = f"http://{server.metrics}/healthz"
        assert _status(url) == 200
        with Client(server.endpoint, timeout_s=20, retries=0) as client:
            t = threading.Thread(target=client.simulate, args=(_one_photon(),), daemon=True)
            t.start()
            _wait_status(url, 503, 3.0)
            t.join(20)
        _wait_status(url, 200, 3.0)
