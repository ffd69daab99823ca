"""``charon worker`` against a real router, in-process: drain, readiness, reconnects, refusal, batching, ChAR0N."""

from __future__ import annotations

import re
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from charon.protocol import tokens
from charon.router.driver import Router
from charon.worker.driver import Worker
from tests import inproc
from tests.router_support import Requester, check_sim_complete, free_port, photondata, wait_for


def router_settings(**router: Any) -> Any:
    return inproc.settings({"router": {"bind": inproc.endpoint("clients"), "workers_bind": inproc.endpoint("workers"),
                                       **router}})


def worker_settings(endpoint: str, *sections: dict[str, dict[str, Any]], **worker: Any) -> Any:
    return inproc.settings({"worker": {"router": endpoint, **worker}}, *sections)


@pytest.fixture
def router(context: zmq.Context[Any]) -> Iterator[tuple[Router, inproc.Running]]:
    service = Router(router_settings(), context=context)
    with inproc.running(service) as handle:
        yield service, handle


def test_stop_under_load_fails_no_request(context: zmq.Context[Any], router: tuple[Router, inproc.Running]) -> None:
    service, r = router
    leaving = inproc.start(Worker(worker_settings(r.workers_endpoint), inproc.echo(0.01), context=context))
    staying = Worker(worker_settings(r.workers_endpoint), inproc.echo(0.01), context=context)
    with inproc.log_lines() as logs, inproc.running(staying):
        wait_for(lambda: service.state.idle_workers == 2, 10, "2 workers")
        errors: list[BaseException] = []
        done = [0]
        lock = threading.Lock()

        def client(c: int) -> None:
            req = Requester(context, r.endpoint)
            try:
                for i in range(40):
                    event_id = c * 1000 + i
                    check_sim_complete(req.request(photondata(event_id, 100), 30), event_id, 100)
                    with lock:
                        done[0] += 1
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
            finally:
                req.close()

        threads = [threading.Thread(target=client, args=(c,)) for c in range(4)]
        for t in threads:
            t.start()
        wait_for(lambda: done[0] >= 20, 30, "traffic under way")
        assert leaving.terminate() == 0
        for t in threads:
            t.join(60)
        assert not errors, errors[0]
        assert done[0] == 160
        assert "draining" in logs.text()
    wait_for(lambda: inproc.sample(service.registry, "charon_requests_total", kind="photondata", outcome="ok")
             == 160, 5, "160 answers counted")
    assert inproc.sample(service.registry, "charon_requeued_total") == 0  # drained, not lost


@pytest.mark.parametrize("force", [False, True], ids=["grace-over", "forced"])
def test_a_drain_that_cannot_finish_hands_the_work_back_at_once(
        context: zmq.Context[Any], router: tuple[Router, inproc.Running], force: bool) -> None:
    service, r = router
    clock, gate = inproc.FakeClock(), inproc.Gate()
    slow = inproc.start(Worker(worker_settings(r.workers_endpoint, drain_grace_s=0.5), gate, context=context,
                               clock=clock))
    req = Requester(context, r.endpoint)
    try:
        req.send(photondata(9, 10))
        gate.wait_entered()
        if force:
            slow.stop.request()
            slow.stop.force()  # a second signal: no grace
        else:
            slow.stop.request()
            time.sleep(0.2)
            assert slow.thread.is_alive()  # draining, the grace not over on its clock
            clock.advance(0.6)
        assert slow.join() == 0
        wait_for(lambda: service.state.queued == 1, 5, "request handed back")
        with inproc.running(Worker(worker_settings(r.workers_endpoint), inproc.echo(), context=context)):
            reply = req.recv(15)
            assert reply is not None
            check_sim_complete(reply, 9, 10)
        assert inproc.sample(service.registry, "charon_requeued_total") == 1
    finally:
        gate.open.set()
        req.close()
    # The engine pass outlived its worker; once it ends, its thread drops the answer and stops.
    assert slow.service.sim.stop(timeout=10)


def test_worker_ready_only_when_connected_and_reconnects_when_the_router_appears(context: zmq.Context[Any]) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    w = Worker(worker_settings(endpoint, reconnect_initial_s=0.05, reconnect_max_s=0.2), inproc.echo())
    with inproc.running(w):
        assert not w.http.health.ready
        assert w.http.health.liveness() is None  # alive, just not connected
        time.sleep(0.8)  # it loses its first connection and backs off
        assert not w.http.health.ready
        service = Router(inproc.settings({"router": {"bind": "tcp://127.0.0.1:*", "workers_bind": endpoint}}))
        with inproc.running(service):
            wait_for(lambda: w.http.health.ready, 5, "worker ready")
            wait_for(lambda: service.state.idle_workers == 1, 5, "router sees the worker")
            assert inproc.sample(w.registry, "charon_worker_connected") == 1
        # Router gone (it told the worker): no longer ready, still running.
        wait_for(lambda: not w.http.health.ready, 5, "worker not ready without a router")
        assert inproc.sample(w.registry, "charon_worker_connected") == 0


def test_worker_gives_up_only_when_told_to() -> None:
    settings = worker_settings(f"tcp://127.0.0.1:{free_port()}", {"heartbeat": {"interval_s": 0.05}},
                               reconnect_max_attempts=2, reconnect_initial_s=0.05, reconnect_max_s=0.1)
    with inproc.log_lines() as logs:
        assert inproc.start(Worker(settings, inproc.echo())).join() == 1
    assert "giving up" in logs.text()


def test_a_refused_worker_is_never_registered_and_backs_off(context: zmq.Context[Any]) -> None:
    service = Router(router_settings(fingerprint="0" * 64), context=context)
    readiness: list[bool] = []
    with inproc.running(service) as r, inproc.log_lines() as logs:
        w = Worker(worker_settings(r.workers_endpoint, reconnect_initial_s=0.1, reconnect_max_s=0.4),
                   inproc.echo(), context=context)
        set_ready = w.http.health.set_ready
        w.http.health.set_ready = lambda ready: (readiness.append(ready), set_ready(ready))[1]  # type: ignore[method-assign]
        with inproc.running(w):
            wait_for(lambda: inproc.sample(service.registry, "charon_workers_refused_total", reason="fingerprint") >= 4,
                     10, "four refusals")
            assert service.state.idle_workers == 0
            assert inproc.sample(w.registry, "charon_worker_connected") == 0
            assert not w.http.health.ready
    assert True not in readiness  # /readyz never flapped to ready
    assert "differs from the pool's" in logs.text()
    assert "refused this worker" in logs.text()
    delays = [float(d) for d in re.findall(r"reconnecting to \S+ in ([0-9.]+) s", logs.text())]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.4]  # backoff grows: a refusal is no registration


def test_capacity_four_batches_queued_requests_into_fewer_engine_calls(
        context: zmq.Context[Any], router: tuple[Router, inproc.Running]) -> None:
    service, r = router
    gate = inproc.Gate()
    w = Worker(worker_settings(r.workers_endpoint, capacity=4), gate, context=context)
    with inproc.running(w):
        wait_for(lambda: service.state.idle_workers == 1, 10, "worker")
        reqs = [Requester(context, r.endpoint) for _ in range(8)]
        try:
            reqs[0].send(photondata(0, 30))
            gate.wait_entered()  # the first pass holds request 0; 1-3 reach the worker meanwhile
            for i, req in enumerate(reqs[1:], start=1):
                req.send(photondata(i, 30 + i))
            wait_for(lambda: len(w.in_flight) == 4 and service.state.queued == 4, 10, "4 held, 4 queued")
            gate.release()
            gate.wait_entered()
            # The three that waited share one engine pass; request 4, sent by the router as soon as
            # request 0's reply freed a slot, may reach the worker in time to join them.
            assert gate.batches[0] == 1
            assert gate.batches[1] in (3, 4)
            gate.open.set()
            for i, req in enumerate(reqs):
                reply = req.recv(20)
                assert reply is not None
                check_sim_complete(reply, i, 30 + i)
        finally:
            gate.open.set()
            for req in reqs:
                req.close()
    assert sum(gate.batches) == 8
    assert inproc.sample(w.registry, "charon_worker_requests_total", outcome="ok") == 8
    assert inproc.sample(w.registry, "charon_worker_simulation_seconds_count") == len(gate.batches) < 8
    assert inproc.sample(w.registry, "charon_worker_photons_total") == 30 + sum(30 + i for i in range(1, 8))


def test_a_char0n_worker_with_bare_ready_is_served_as_capacity_one(
        context: zmq.Context[Any], router: tuple[Router, inproc.Running]) -> None:
    """A worker speaking ChAR0N's framing: READY b"\\x01", heartbeats b"\\x02", envelope echoed in replies."""
    service, r = router
    stop = threading.Event()
    seen: list[list[bytes]] = []

    def char0n_worker() -> None:
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(r.workers_endpoint)
        sock.send(tokens.PPP_READY)
        next_beat = time.monotonic() + 0.2
        try:
            while not stop.is_set():
                if sock.poll(20):
                    frames = sock.recv_multipart()
                    seen.append(frames)
                    if len(frames) > 1 and frames[1] == b"":
                        identity, payload = frames[0], frames[2:]
                        _, n = struct.unpack("<II", payload[1])
                        hits = [b"\0" * (4 * n)] * 10
                        sock.send_multipart([identity, b"", tokens.SIM_COMPLETE, payload[1][:4], *hits])
                if time.monotonic() >= next_beat:
                    sock.send(tokens.PPP_HEARTBEAT)
                    next_beat += 0.2
        finally:
            sock.close()

    thread = threading.Thread(target=char0n_worker)
    thread.start()
    req = Requester(context, r.endpoint)
    try:
        wait_for(lambda: service.state.idle_workers == 1, 10, "legacy worker registered")
        for event_id in (4, 5):
            check_sim_complete(req.request(photondata(event_id, 12), 10), event_id, 12)
        wait_for(lambda: [tokens.PPP_HEARTBEAT] in seen, 5, "the router's legacy heartbeat")
        assert service.state.idle_workers == 1
    finally:
        req.close()
        stop.set()
        thread.join(10)
