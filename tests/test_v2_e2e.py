"""Protocol v2 end to end, in-process: ``charon serve`` and router + workers with the Python clients.

The services are the real drivers on their own threads with real ZeroMQ sockets (``inproc://``,
TCP on 127.0.0.1 where v1 and v2 share a port). The echo engine makes every hit checkable: one hit
per photon, channel = photon index mod P, directions and positions the photons' own.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
import zmq.asyncio

from charon.client import AsyncClient, Client
from charon.engine.base import Photons
from charon.engine.registry import make_simulator
from charon.errors import GeometryMismatch, ServerUnavailable
from charon.pipeline import EventResult
from charon.protocol import v2
from charon.protocol import worker as wp
from charon.router.driver import Router
from charon.server import Server
from charon.settings import EngineSettings
from charon.source import isotropic_point
from charon.worker.driver import Worker
from tests import inproc
from tests.router_support import wait_for

N_CHANNELS = 3000  # the echo engine's reference detector


def events(n: int, first: int = 0) -> list[Photons]:
    return [isotropic_point(first + i, (i * 37) % 400 if i % 9 else 0, (0.0, 0.0, 0.0), 420.0, seed=i)
            for i in range(n)]


def check_echo(sent: list[Photons], results: list[EventResult]) -> None:
    """Every event answered exactly once, with the echo engine's hits and positions."""
    assert sorted(r.index for r in results) == list(range(len(sent)))
    for r in results:
        assert r.ok, r.error
        assert r.hits is not None
        ev = sent[r.index]
        assert r.event_id == ev.event_id
        assert len(r.hits) == len(ev)
        assert np.array_equal(r.hits.channel, np.arange(len(ev), dtype=np.uint32) % N_CHANNELS)
        assert np.array_equal(r.hits.dx, ev.dx)
        assert np.array_equal(r.hits.time, ev.time)
        assert r.hits.x is not None
        assert np.array_equal(r.hits.x, ev.x)


@contextlib.contextmanager
def router_with_workers(context: zmq.Context[Any], n: int = 2, **v2_settings: Any
                        ) -> Iterator[tuple[Router, inproc.Running]]:
    settings = inproc.settings({"router": {"bind": "tcp://127.0.0.1:*", "workers_bind": inproc.endpoint("w")},
                                "v2": {"job_max_photons": 2000, **v2_settings}})
    router = Router(settings, context=context)
    with inproc.running(router) as r, contextlib.ExitStack() as stack:
        for _ in range(n):
            stack.enter_context(inproc.running(Worker(
                inproc.settings({"worker": {"router": r.workers_endpoint, "capacity": 2}}), inproc.echo(),
                context=context)))
        wait_for(lambda: router.state.idle_workers == n, 10, f"{n} workers")
        yield router, r


def test_serve_answers_v2_and_v1_on_one_port(context: zmq.Context[Any]) -> None:
    service = Server(inproc.settings({"server": {"bind": "tcp://127.0.0.1:*"}}), inproc.echo(), context=context)
    with inproc.running(service) as s, Client(s.endpoint, timeout_s=10, context=context) as client:
        sent = events(150)
        info = client.detector_info()  # v1 on the same port
        results = list(client.simulate_many(sent, seed=7, fingerprint=service.handler.simulator.fingerprint,
                                            pmt_digest=info.pmt_digest()))
        check_echo(sent, results)
        assert client.welcome is not None
        assert (client.welcome.engine, client.welcome.n_channels, client.welcome.seed) == ("echo", N_CHANNELS, 7)
        assert client.welcome.hit_positions
        v1_hits = client.simulate(sent[1])  # v1 still answers, without positions
        assert np.array_equal(v1_hits.dx, sent[1].dx)
        assert inproc.sample(service.registry, "charon_requests_total", kind="hello_v2", outcome="ok") == 1
        assert inproc.sample(service.registry, "charon_photons_total") == sum(len(e) for e in sent) + len(sent[1])


def test_router_spreads_v2_jobs_over_workers_and_streams_results(context: zmq.Context[Any]) -> None:
    with router_with_workers(context) as (router, r), Client(r.endpoint, timeout_s=10, context=context) as client:
        sent = events(300)
        results = list(client.simulate_many(sent, max_events=40))
        check_echo(sent, results)
        info = client.detector_info()
        assert client.welcome is not None
        assert client.welcome.pmt_digest == v2.pmt_digest(*info.frames()[:3])
        assert client.welcome.fingerprint == router.state.pool_fingerprint
        assert router.state.sessions.in_flight() == 0  # every credit came back
        total = sum(len(e) for e in sent)  # the router counts right after it sends the last result
        wait_for(lambda: inproc.sample(router.registry, "charon_photons_total") == total, 5, "photons counted")
        router.state.check_invariants()


def test_geometry_mismatch_is_raised_before_any_event_is_sent(context: zmq.Context[Any]) -> None:
    with router_with_workers(context, n=1) as (router, r), Client(r.endpoint, timeout_s=10, context=context) as c:
        with pytest.raises(GeometryMismatch, match="PMT positions digest"):
            list(c.simulate_many(events(3), pmt_digest="0" * 64))
        with pytest.raises(GeometryMismatch, match="simulates detector"):
            list(c.simulate_many(events(3), fingerprint="1" * 64))
        assert inproc.sample(router.registry, "charon_requests_total", kind="simulate_v2", outcome="ok") == 0


def test_asyncio_client_streams_from_the_router(context: zmq.Context[Any]) -> None:
    with router_with_workers(context) as (_, r):
        sent = events(120, first=1000)

        async def run() -> list[EventResult]:
            ctx = zmq.asyncio.Context()
            try:
                client = AsyncClient(r.endpoint, timeout_s=10, context=ctx)
                return [res async for res in client.simulate_many(sent, seed=3)]
            finally:
                ctx.destroy(linger=0)

        check_echo(sent, asyncio.run(run()))


def test_a_worker_lost_mid_run_costs_no_event(context: zmq.Context[Any]) -> None:
    """A worker that takes a JOB and dies: its job is requeued to the live worker, every event is
    answered once."""
    with router_with_workers(context, n=1) as (router, r):
        doomed = context.socket(zmq.DEALER)
        doomed.setsockopt(zmq.LINGER, 0)
        doomed.connect(r.workers_endpoint)
        doomed.send_multipart(wp.ready(router.state.pool_fingerprint or "", 4, "echo",
                                       [bytes(v2.as_view(f)) for f in inproc.echo().detector_info().frames()]))
        wait_for(lambda: len(router.state.workers) == 2, 10, "the doomed worker")
        client = Client(r.endpoint, timeout_s=10, context=context)
        sent = events(200)
        stream = client.simulate_many(sent)
        results = [next(stream)]
        assert doomed.poll(10_000), "the doomed worker was given no job"
        doomed.close(linger=0)  # its connection closes with the job in hand
        results.extend(stream)
        check_echo(sent, results)
        assert inproc.sample(router.registry, "charon_requeued_total") >= 1


def test_credit_bounds_what_a_client_queues(context: zmq.Context[Any]) -> None:
    gate = inproc.Gate()
    settings = inproc.settings({"router": {"bind": inproc.endpoint("c"), "workers_bind": inproc.endpoint("w")},
                                "v2": {"credit": 8, "job_max_photons": 10}})
    router = Router(settings, context=context)
    with inproc.running(router) as r, inproc.running(Worker(
            inproc.settings({"worker": {"router": r.workers_endpoint}}), gate, context=context)):
        wait_for(lambda: router.state.idle_workers == 1, 10, "worker")
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(r.endpoint)
        sock.send_multipart(v2.hello(v2.Hello(seed=1)))
        assert sock.poll(5000)
        assert isinstance(v2.decode_from_server(sock.recv_multipart()), v2.Welcome)
        ev = events(25)[1:25]  # 24 events of 1..399 photons
        for k in range(3):  # three messages of 8 events: only the first fits the window
            chunk = ev[8 * k : 8 * k + 8]
            arrays = [b"".join(bytes(v2.as_view(p.frames()[i])) for p in chunk) for i in range(12)]
            sock.send_multipart(v2.simulate([v2.Event(8 * k + j, p.event_id, len(p)) for j, p in
                                             enumerate(chunk)], arrays))
        refused = []
        for _ in range(16):
            assert sock.poll(5000)
            refused.append(v2.decode_from_server(sock.recv_multipart()))
        assert sorted(e.tag for e in refused) == list(range(8, 24))  # type: ignore[union-attr]
        assert {e.code for e in refused} == {v2.ErrorCode.CREDIT_EXCEEDED}  # type: ignore[union-attr]
        assert router.state.queued + router.state.in_flight == 8  # one job per event (10-photon jobs)
        gate.open.set()
        done = []
        for _ in range(8):
            assert sock.poll(5000)
            done.append(v2.decode_from_server(sock.recv_multipart()))
        assert sorted(d.tag for d in done) == list(range(8))  # type: ignore[union-attr]
        assert all(isinstance(d, v2.Result) for d in done)
        sock.close(linger=0)


def test_the_run_seed_keys_the_random_streams(context: zmq.Context[Any]) -> None:
    """Seed 0 gives v1's hits for the same event; another seed gives other hits; the same seed the
    same hits again (the numpy engine on the reference detector)."""
    simulator = make_simulator(EngineSettings(backend="numpy"))
    service = Server(inproc.settings({"server": {"bind": inproc.endpoint("seed")}}), simulator, context=context)
    try:
        with inproc.running(service) as s, Client(s.endpoint, timeout_s=30, context=context) as client:
            ev = [isotropic_point(5, 3000, (0.0, 0.0, 0.0), 420.0, seed=11)]

            def hits(seed: int) -> Any:
                [res] = list(client.simulate_many(ev, seed=seed))
                assert res.hits is not None
                return res.hits

            v1_hits = client.simulate(ev[0])
            zero, five, five_again = hits(0), hits(5), hits(5)
            assert len(v1_hits) > 0
            assert np.array_equal(zero.channel, v1_hits.channel)
            assert np.array_equal(zero.time, v1_hits.time)
            assert np.array_equal(five.time, five_again.time)
            assert zero.x is not None  # the engine's detection positions travel with the hits
            assert len(zero.x) == len(zero)
            assert np.all(np.isfinite(zero.x))
            assert client.welcome is not None
            assert client.welcome.hit_positions
            assert not (len(five) == len(zero) and np.array_equal(five.time, zero.time))
    finally:
        simulator.close()


def test_charon_simulate_protocol_v2_pipelines_through_the_router(context: zmq.Context[Any],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from charon import cli

    with router_with_workers(context) as (router, r):
        status = cli.main(["simulate", "--endpoint", r.endpoint, "--protocol", "v2", "--events", "200",
                           "--photons", "300", "--run-seed", "8"])
        out = capsys.readouterr().out
        assert status == 0
        assert "(v2, credit 512 events)" in out
        assert "photons/s (wall)" in out
        wait_for(lambda: inproc.sample(router.registry, "charon_photons_total") == 200 * 300, 5, "photons counted")
        assert cli.main(["simulate", "--endpoint", r.endpoint, "--protocol", "v2", "--concurrency", "4"]) == 2
        assert "v2 pipelines by itself" in capsys.readouterr().err


def test_queue_full_events_are_resent_after_a_backoff_until_they_are_simulated(context: zmq.Context[Any]) -> None:
    settings = inproc.settings({"router": {"bind": inproc.endpoint("qf"), "workers_bind": inproc.endpoint("qfw"),
                                           "queue_max_requests": 3},
                                "v2": {"job_max_photons": 300}})
    router = Router(settings, context=context)
    with inproc.running(router) as r, inproc.running(Worker(
            inproc.settings({"worker": {"router": r.workers_endpoint}}), inproc.echo(delay_s=0.002), context=context)):
        wait_for(lambda: router.state.idle_workers == 1, 10, "worker")
        sent = events(24)
        results = list(Client(r.endpoint, timeout_s=10, retries=40, context=context).simulate_many(sent))
        check_echo(sent, results)
        assert inproc.sample(router.registry, "charon_requests_total", kind="simulate_v2", outcome="queue_full") > 0
        router.state.check_invariants()


def test_a_lost_session_is_opened_again_mid_run(context: zmq.Context[Any]) -> None:
    """The server forgets the session (another client's HELLO evicts it from a table of one): the
    next SIMULATE gets NO_SESSION, the client says HELLO again and resends; results of events
    still in flight that arrive meanwhile are not lost."""
    service = Server(inproc.settings({"server": {"bind": inproc.endpoint("lost")},
                                      "v2": {"max_sessions": 1, "credit": 6, "max_events_per_message": 3}}),
                     inproc.echo(delay_s=0.002), context=context)
    with inproc.running(service) as s, Client(s.endpoint, timeout_s=10, context=context) as client:
        sent = events(40)
        stream = client.simulate_many(sent)
        results = [next(stream)]
        other = context.socket(zmq.DEALER)
        other.setsockopt(zmq.LINGER, 0)
        other.connect(s.endpoint)
        other.send_multipart(v2.hello(v2.Hello()))
        assert other.poll(5000)
        other.recv_multipart()
        other.close(linger=0)
        results.extend(stream)
        check_echo(sent, results)
        assert inproc.sample(service.registry, "charon_requests_total", kind="hello_v2", outcome="ok") >= 3


def test_v2_over_curve_serves_a_listed_client_key_only(tmp_path: Path) -> None:
    from charon.curve import ClientKeys, generate, load_public, load_secret

    for name in ("server", "alice", "mallory"):
        generate(tmp_path / "secret", name)
    (tmp_path / "clients").mkdir()
    shutil.copy(tmp_path / "secret" / "alice.key", tmp_path / "clients")
    security = {"security": {"curve_secret_key": str(tmp_path / "secret" / "server.key_secret"),
                             "curve_clients": str(tmp_path / "clients")}}
    server_public = load_public(tmp_path / "secret" / "server.key")

    def keys(name: str) -> ClientKeys:
        return ClientKeys(server_public, load_secret(tmp_path / "secret" / f"{name}.key_secret"))

    ctx: zmq.Context[Any] = zmq.Context()
    service = Server(inproc.settings({"server": {"bind": "tcp://127.0.0.1:*"}}, security), inproc.echo(), context=ctx)
    try:
        with inproc.running(service) as s:
            sent = events(30)
            alice = Client(s.endpoint, timeout_s=10, context=ctx, curve=keys("alice"))
            check_echo(sent, list(alice.simulate_many(sent)))
            mallory = Client(s.endpoint, timeout_s=0.5, context=ctx, curve=keys("mallory"))
            with pytest.raises(ServerUnavailable, match="no WELCOME"):
                list(mallory.simulate_many(sent))
    finally:
        ctx.destroy(linger=0)
