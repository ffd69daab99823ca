"""The header-only C++17 v2 client (services/clients/cpp), compiled with the real g++ against the
real libzmq and run against ``charon serve`` and router + worker (in-process, TCP on 127.0.0.1).

The example program checks its geometry (v1 DETECTOR_INFO hashed in C++ against WELCOME's
pmt_digest), simulates every event with many in flight and, with ``--echo``, checks every hit of
the echo engine. It skips when g++ or the libzmq headers are missing (fails under
CHARON_REQUIRE_TOOLS=1).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from charon.router.driver import Router
from charon.server import Server
from charon.worker.driver import Worker
from tests import inproc
from tests.conftest import skip_or_fail
from tests.router_support import wait_for
from tests.tooling import find_tool

ROOT = Path(__file__).resolve().parents[1]
CPP = ROOT / "services" / "clients" / "cpp"


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gxx = find_tool("g++")
    if gxx is None:
        skip_or_fail("g++ not found (apt-get install g++)")
    probe = subprocess.run([gxx, "-std=c++17", "-E", "-x", "c++", "-"], input="#include <zmq.h>\n",
                           capture_output=True, text=True, timeout=60, check=False)
    if probe.returncode != 0:
        skip_or_fail("libzmq headers not found (apt-get install libzmq3-dev)")
    out = tmp_path_factory.mktemp("cpp") / "charon-v2-example"
    build = subprocess.run([str(gxx), "-std=c++17", "-O1", "-Wall", "-Wextra", "-Wpedantic", "-Werror",
                            "-I", str(CPP), str(CPP / "example.cpp"), "-lzmq", "-o", str(out)],
                           capture_output=True, text=True, timeout=300, check=False)
    assert build.returncode == 0, build.stderr
    return out


def run(binary: Path, endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), endpoint, *args], capture_output=True, text=True, timeout=120, check=False)


@contextlib.contextmanager
def serve(context: zmq.Context[Any]) -> Iterator[tuple[Server, str]]:
    service = Server(inproc.settings({"server": {"bind": "tcp://127.0.0.1:*"}, "v2": {"credit": 64}}),
                     inproc.echo(), context=context)
    with inproc.running(service) as handle:
        yield service, handle.endpoint


def test_example_runs_against_serve(context: zmq.Context[Any], example: Path) -> None:
    with serve(context) as (service, endpoint):
        done = run(example, endpoint, "300", "200", "--echo", "--seed", "17")
        assert done.returncode == 0, done.stderr
        assert "engine=echo channels=3000 credit=64 events=300 answered=300 photons=60000 hits=60000 " \
               "failed=0 bad=0" in done.stdout
        assert inproc.sample(service.registry, "charon_requests_total", kind="hello_v2", outcome="ok") == 1
        assert inproc.sample(service.registry, "charon_photons_total") == 60_000


def test_example_runs_against_router_and_worker(context: zmq.Context[Any], example: Path) -> None:
    settings = inproc.settings({"router": {"bind": "tcp://127.0.0.1:*", "workers_bind": inproc.endpoint("cpp-w")},
                                "v2": {"job_max_photons": 5000, "credit": 16, "max_events_per_message": 5}})
    router = Router(settings, context=context)
    with inproc.running(router) as r, inproc.running(Worker(
            inproc.settings({"worker": {"router": r.workers_endpoint, "capacity": 2}}), inproc.echo(), context=context)):
        wait_for(lambda: router.state.idle_workers == 1, 10, "the worker")
        done = run(example, r.endpoint, "200", "1000", "--echo")
        assert done.returncode == 0, done.stderr
        assert "credit=16 events=200 answered=200 photons=200000 hits=200000 failed=0 bad=0" in done.stdout
        router.state.check_invariants()


def test_example_refuses_another_geometry(context: zmq.Context[Any], example: Path) -> None:
    with serve(context) as (service, endpoint):
        done = run(example, endpoint, "5", "10", "--expect-digest", "0" * 64)
        assert done.returncode == 3
        assert "geometry mismatch" in done.stderr
        assert inproc.sample(service.registry, "charon_photons_total") == 0


def test_example_rides_out_a_full_router_queue(context: zmq.Context[Any], example: Path) -> None:
    """QUEUE_FULL events are resent after a backoff until every one is simulated."""
    settings = inproc.settings({"router": {"bind": "tcp://127.0.0.1:*", "workers_bind": inproc.endpoint("cpp-q"),
                                           "queue_max_requests": 3}, "v2": {"job_max_photons": 100}})
    router = Router(settings, context=context)
    with inproc.running(router) as r, inproc.running(Worker(
            inproc.settings({"worker": {"router": r.workers_endpoint}}), inproc.echo(delay_s=0.002), context=context)):
        wait_for(lambda: router.state.idle_workers == 1, 10, "the worker")
        done = run(example, r.endpoint, "12", "100", "--echo", "--retries", "40")
        assert done.returncode == 0, done.stderr
        assert "events=12 answered=12 photons=1200 hits=1200 failed=0 bad=0" in done.stdout
        assert inproc.sample(router.registry, "charon_requests_total", kind="simulate_v2", outcome="queue_full") > 0



def test_example_speaks_curve_with_a_listed_key_only(example: Path, tmp_path: Path) -> None:
    from charon.curve import generate

    for name in ("server", "alice", "mallory"):
        generate(tmp_path / "secret", name)
    (tmp_path / "clients").mkdir()
    shutil.copy(tmp_path / "secret" / "alice.key", tmp_path / "clients")
    security = {"security": {"curve_secret_key": str(tmp_path / "secret" / "server.key_secret"),
                             "curve_clients": str(tmp_path / "clients")}}
    ctx: zmq.Context[Any] = zmq.Context()
    service = Server(inproc.settings({"server": {"bind": "tcp://127.0.0.1:*"}}, security), inproc.echo(), context=ctx)
    try:
        with inproc.running(service) as s:
            server_key = str(tmp_path / "secret" / "server.key")
            ok = run(example, s.endpoint, "20", "50", "--echo", "--curve-server-key", server_key,
                     "--curve-secret-key", str(tmp_path / "secret" / "alice.key_secret"))
            assert ok.returncode == 0, ok.stderr
            assert "events=20 answered=20 photons=1000 hits=1000 failed=0 bad=0" in ok.stdout
            refused = subprocess.run([str(example), s.endpoint, "2", "5", "--curve-server-key", server_key,
                                      "--curve-secret-key", str(tmp_path / "secret" / "mallory.key_secret")],
                                     capture_output=True, text=True, timeout=60, check=False, env={
                                         **os.environ, "CHARON_CPP_TIMEOUT_MS": "500"})
            assert refused.returncode == 1
            assert "no WELCOME" in refused.stderr
    finally:
        ctx.destroy(linger=0)
