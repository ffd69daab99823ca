"""``charon router`` with real workers, in-process: load, loss, restarts, limits, de-duplication.

Router and workers are the real drivers on their own threads, over ``inproc://`` sockets of one
context (TCP on 127.0.0.1 where the test needs a port). Where time decides (deadlines, heartbeat
expiry), the router runs on a fake clock the test moves. A worker that "dies" is a raw DEALER that
registers and then closes its socket, as a killed process's connection closes.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from charon.client import Client
from charon.protocol import tokens
from charon.protocol import worker as wp
from charon.router.driver import Router
from charon.worker.driver import Worker
from tests import inproc
from tests.router_support import Requester, check_sim_complete, free_port, photondata, poll_until, wait_for

FP = "f" * 64  # the fake workers' detector
INFO = [b"\0" * 4] * 4


def router_settings(**router: Any) -> Any:
    return inproc.settings({"router": {"bind": inproc.endpoint("clients"), "workers_bind": inproc.endpoint("workers"),
                                       **router}})


def worker(context: zmq.Context[Any], endpoint: str, delay_s: float = 0.0, **worker_fields: Any) -> Worker:
    return Worker(inproc.settings({"worker": {"router": endpoint, **worker_fields}}), inproc.echo(delay_s),
                  context=context)


def sample(service: Any, name: str, **labels: str) -> float:
    return inproc.sample(service.registry, name, **labels)


def wait_sample(service: Any, name: str, value: float, timeout_s: float = 10.0, **labels: str) -> None:
    wait_for(lambda: sample(service, name, **labels) == value, timeout_s, f"{name}{labels} == {value}")


class FakeWorker:
    """A CHARONW1 worker played by the test: registers, takes requests, then dies or answers."""

    def __init__(self, context: zmq.Context[Any], endpoint: str, capacity: int = 1, fingerprint: str = FP) -> None:
        self.sock: zmq.Socket[Any] = context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.sock.send_multipart(wp.ready(fingerprint, capacity, "fake", INFO))

    def requests(self, n: int, timeout_s: float = 10.0) -> list[wp.Request]:
        got: list[wp.Request] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < n:
            assert self.sock.poll(max(1, int((deadline - time.monotonic()) * 1000))), f"{len(got)} of {n} requests"
            msg = wp.decode_from_router(self.sock.recv_multipart())
            if isinstance(msg, wp.Request):
                got.append(msg)
        return got

    def die(self) -> None:
        self.sock.close(linger=0)  # no DISCONNECT: the connection just closes


@pytest.fixture
def router(context: zmq.Context[Any]) -> Iterator[tuple[Router, inproc.Running]]:
    service = Router(router_settings(), context=context)
    with inproc.running(service) as handle:
        yield service, handle


def test_three_workers_eight_clients_400_events_each_answered_once(
        context: zmq.Context[Any], router: tuple[Router, inproc.Running]) -> None:
    service, r = router
    n_clients, per_client, n_photons = 8, 50, 200
    workers = [worker(context, r.workers_endpoint, 0.002) for _ in range(3)]
    with inproc.running(workers[0]), inproc.running(workers[1]), inproc.running(workers[2]):
        wait_for(lambda: service.state.idle_workers == 3, 10, "3 workers")
        answers: Counter[int] = Counter()
        errors: list[BaseException] = []
        lock = threading.Lock()

        def client(c: int) -> None:
            req = Requester(context, r.endpoint)
            try:
                for i in range(per_client):
                    event_id = c * 1000 + i
                    reply = req.request(photondata(event_id, n_photons), timeout_s=30)
                    check_sim_complete(reply, event_id, n_photons)
                    with lock:
                        answers[event_id] += 1
                # A duplicate reply would arrive on the same DEALER: none may come.
                assert req.recv(0.2) is None
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
            finally:
                req.close()

        threads = [threading.Thread(target=client, args=(c,)) for c in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert not errors, errors[0]
        assert len(answers) == n_clients * per_client
        assert set(answers.values()) == {1}
        per_worker = [inproc.sample(w.registry, "charon_worker_requests_total", outcome="ok") for w in workers]
        assert sum(per_worker) == 400
        assert min(per_worker) >= 400 / 3 * 0.25, per_worker  # load spread over all workers
        wait_sample(service, "charon_requests_total", 400, kind="photondata", outcome="ok")
        assert sample(service, "charon_photons_total") == 400 * n_photons
    service.state.check_invariants()


def test_a_worker_whose_connection_closes_loses_no_request_and_none_is_answered_twice(
        context: zmq.Context[Any]) -> None:
    clock = inproc.FakeClock()
    slow_expiry = {"heartbeat": {"interval_s": 0.5, "liveness": 40}}  # 20 s of silence: never, here
    service = Router(inproc.settings(slow_expiry, {"router": {
        "bind": inproc.endpoint("clients"), "workers_bind": inproc.endpoint("workers")}}),
        context=context, clock=clock)
    with inproc.running(service) as r:
        doomed = FakeWorker(context, r.workers_endpoint, capacity=4)
        reqs = [Requester(context, r.endpoint) for _ in range(4)]
        try:
            for i, req in enumerate(reqs):
                req.send(photondata(i, 50))
            doomed.requests(4)
            doomed.die()
            # A heartbeat to it fails (EHOSTUNREACH) and its requests are requeued. libzmq drops the
            # closed peer's route asynchronously, so the first heartbeat may still find it: keep
            # heartbeating (well inside the 20 s of silence that would expire it instead).
            for _ in range(20):
                clock.advance(0.5)
                if poll_until(lambda: service.state.queued == 4, 0.5):
                    break
            assert service.state.queued == 4, "4 requests requeued"
            assert service.state.in_flight == 0
            with inproc.running(Worker(inproc.settings(slow_expiry, {"worker": {"router": r.workers_endpoint}}),
                                       inproc.echo(), context=context)):
                for i, req in enumerate(reqs):
                    reply = req.recv(15)
                    assert reply is not None, f"request {i} lost with its worker"
                    check_sim_complete(reply, i, 50)
                assert all(req.recv(0.2) is None for req in reqs)
            wait_sample(service, "charon_requests_total", 4, kind="photondata", outcome="ok")
            assert sample(service, "charon_requeued_total") == 4
            assert sample(service, "charon_workers_expired_total") == 1
        finally:
            for req in reqs:
                req.close()


def test_lazy_pirate_client_rides_out_a_router_restart_mid_request(context: zmq.Context[Any]) -> None:
    endpoints = {"bind": f"tcp://127.0.0.1:{free_port()}", "workers_bind": inproc.endpoint("workers")}
    first = inproc.start(Router(inproc.settings({"router": endpoints}), context=context))
    w = inproc.start(worker(context, first.workers_endpoint, reconnect_initial_s=0.05))
    started = [first]
    try:
        with Client(first.endpoint, timeout_s=0.3, retries=40) as client:
            client.ping()
            assert first.terminate() == 0
            restarter = threading.Timer(0.5, lambda: started.append(
                inproc.start(Router(inproc.settings({"router": endpoints}), context=context))))
            restarter.start()
            try:
                reply = client.request(photondata(77, 10))  # sent while no router exists
            finally:
                restarter.join(30)
            check_sim_complete([bytes(f) for f in reply], 77, 10)
    finally:
        w.terminate()
        for handle in started[1:]:
            handle.terminate()


@pytest.mark.parametrize("policy", ["explicit", "silent"])
def test_full_queue_is_refused_at_once_and_waiting_requests_hit_the_deadline(context: zmq.Context[Any],
                                                                             policy: str) -> None:
    """explicit: NO_WORKERS at once for the request the full queue refuses, and at the deadline
    for the queued ones; silent: the same decisions, with no reply, counted as dropped_*."""
    clock = inproc.FakeClock()
    service = Router(router_settings(queue_max_requests=2, queue_deadline_s=1.5, v1_failure_replies=policy),
                     context=context, clock=clock)
    explicit = policy == "explicit"
    with inproc.running(service) as r:
        a, b, c = (Requester(context, r.endpoint) for _ in range(3))
        try:
            a.send(photondata(1))
            b.send(photondata(2))
            wait_for(lambda: service.state.queued == 2, 5, "2 queued requests")
            c.send(photondata(3))
            full = "queue_full" if explicit else "dropped_queue_full"
            wait_sample(service, "charon_requests_total", 1, kind="photondata", outcome=full)
            assert c.recv(5 if explicit else 0.3) == ([tokens.NO_WORKERS] if explicit else None)  # at once
            clock.advance(1.4)
            assert b.recv(0.3) is None  # not yet
            clock.advance(0.2)
            late = "deadline" if explicit else "dropped_no_workers"
            wait_sample(service, "charon_requests_total", 2, kind="photondata", outcome=late)
            for req in (b, a):
                assert req.recv(5 if explicit else 0.3) == ([tokens.NO_WORKERS] if explicit else None)
            assert sample(service, "charon_queue_depth") == 0
        finally:
            for req in (a, b, c):
                req.close()


def test_same_photondata_three_times_from_fresh_req_sockets_is_simulated_once(
        context: zmq.Context[Any], router: tuple[Router, inproc.Running]) -> None:
    service, r = router
    payload = photondata(31, 500)
    gate = inproc.Gate()
    w = Worker(inproc.settings({"worker": {"router": r.workers_endpoint}}), gate, context=context)
    with inproc.running(w):
        wait_for(lambda: service.state.idle_workers == 1, 10, "worker")
        socks = []
        try:
            for _ in range(3):  # like ratpac-two: a new REQ socket for each resend
                sock = context.socket(zmq.REQ)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(r.endpoint)
                sock.send_multipart(payload)
                socks.append(sock)
                if len(socks) == 1:
                    gate.wait_entered()
            wait_sample(service, "charon_deduplicated_total", 2)
            gate.open.set()
            for sock in socks:
                assert sock.poll(10_000)
                check_sim_complete(sock.recv_multipart(), 31, 500)
        finally:
            for sock in socks:
                sock.close()
        assert gate.calls == 1
        assert inproc.sample(w.registry, "charon_worker_requests_total", outcome="ok") == 1
        wait_sample(service, "charon_requests_total", 3, kind="photondata", outcome="ok")
        assert sample(service, "charon_photons_total") == 500


def test_malformed_traffic_on_both_sockets_leaves_the_router_serving(context: zmq.Context[Any]) -> None:
    service = Router(inproc.settings({"router": {"bind": "tcp://127.0.0.1:*", "workers_bind": "tcp://127.0.0.1:*"}}),
                     context=context)
    with inproc.running(service) as r, inproc.running(worker(context, r.workers_endpoint)):
        wait_for(lambda: service.state.idle_workers == 1, 10, "worker")
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(r.endpoint)
        bad_worker = context.socket(zmq.DEALER)
        bad_worker.setsockopt(zmq.LINGER, 0)
        bad_worker.connect(r.workers_endpoint)
        try:
            # Frontend: one frame, no delimiter, garbage, a lone delimiter, a short PHOTONDATA.
            for frames in ([b"x"], [b"\xff\x00garbage", b"more"], [b""], [tokens.PHOTONDATA, b"\1\0\0\0"]):
                dealer.send_multipart(frames)
            replies = [dealer.recv_multipart() for _ in range(4) if dealer.poll(5000)]
            assert len(replies) == 4
            assert replies[0] == [tokens.UNKNOWN_REQUEST]
            # A DEALER client without an envelope is answered without one.
            dealer.send_multipart([tokens.PING])
            assert dealer.poll(5000)
            assert dealer.recv_multipart() == [tokens.ACK]
            # Backend: garbage, a bogus READY, a reply nobody asked for, a foreign protocol id.
            for frames in ([b"garbage"], [wp.PROTOCOL, wp.READY, b"x"], wp.reply(12345, [tokens.ACK]),
                           [b"MDPW01", b"\x01", b"svc"], [b"\x07"], [wp.PROTOCOL]):
                bad_worker.send_multipart(frames)
            # Raw bytes that are not ZMTP at all, on both ports.
            for endpoint in (r.endpoint, r.workers_endpoint):
                host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
                with socket.create_connection((host, int(port)), timeout=5) as raw:
                    raw.sendall(b"\x00\xff" * 512 + b"GET / HTTP/1.0\r\n\r\n")
            with Client(r.endpoint, timeout_s=5, retries=0) as client:
                client.ping()
                reply = client.request(photondata(5, 20))
                check_sim_complete([bytes(f) for f in reply], 5, 20)
            assert r.thread.is_alive()
            assert service.state.idle_workers == 1
        finally:
            dealer.close()
            bad_worker.close()
    service.state.check_invariants()


def test_metrics_move_while_traffic_runs(context: zmq.Context[Any], router: tuple[Router, inproc.Running]) -> None:
    service, r = router
    with inproc.running(worker(context, r.workers_endpoint, 0.02)):
        wait_for(lambda: service.state.idle_workers == 1, 10, "worker")
        stop = threading.Event()
        errors: list[BaseException] = []

        def load(c: int) -> None:
            req = Requester(context, r.endpoint)
            try:
                for i in itertools.count():
                    if stop.is_set():
                        return
                    check_sim_complete(req.request(photondata(c * 10_000 + i, 100), 30), c * 10_000 + i, 100)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
            finally:
                req.close()

        threads = [threading.Thread(target=load, args=(c,)) for c in range(4)]
        for t in threads:
            t.start()
        depths, photons, busy = [], [], []
        try:
            for _ in range(12):
                time.sleep(0.05)
                depths.append(sample(service, "charon_queue_depth"))
                photons.append(sample(service, "charon_photons_total"))
                busy.append(sample(service, "charon_workers", state="busy"))
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert not errors, errors[0]
        assert max(depths) >= 1, depths  # 4 clients, 1 worker: requests wait
        assert photons[-1] > photons[0], photons
        assert sum(1 for a, b in itertools.pairwise(photons) if b > a) >= 5, photons
        assert max(busy) == 1
        assert sample(service, "charon_request_duration_seconds_count", phase="queue") > 0
        assert sample(service, "charon_request_duration_seconds_count", phase="service") > 0


@pytest.mark.parametrize("dealer_client", [False, True])
def test_ping_run_begin_run_end_need_no_worker(context: zmq.Context[Any], router: tuple[Router, inproc.Running],
                                               dealer_client: bool) -> None:
    _, r = router
    sock = context.socket(zmq.DEALER if dealer_client else zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(r.endpoint)
    try:
        for frames in ([tokens.PING], [tokens.RUN_BEGIN, b"out.root"], [tokens.RUN_END]):
            sock.send_multipart(frames)
            assert sock.poll(5000)
            assert sock.recv_multipart() == [tokens.ACK]
    finally:
        sock.close()


def test_a_stopped_router_sends_its_workers_to_its_successor(context: zmq.Context[Any]) -> None:
    settings = router_settings()
    first_service = Router(settings, context=context)
    first = inproc.start(first_service)
    with inproc.log_lines() as logs:
        w = inproc.start(worker(context, first.workers_endpoint, reconnect_initial_s=0.05))
        try:
            wait_for(lambda: first_service.state.idle_workers == 1, 10, "first router")
            assert first_service.http.health.ready
            assert first.terminate() == 0
            assert not first_service.http.health.ready
            logs.wait_for("router asked to reconnect (shutdown)")
            successor = Router(settings, context=context)
            with inproc.running(successor) as second:
                # After one backoff step, well before it would have noticed the silence itself.
                wait_for(lambda: successor.state.idle_workers == 1, 5, "worker registered with the successor")
                with Client(second.endpoint, timeout_s=5, retries=0, context=context) as client:
                    check_sim_complete([bytes(f) for f in client.request(photondata(3, 5))], 3, 5)
        finally:
            w.terminate()


def test_sender_hands_a_worker_it_cannot_reach_back_to_the_state(context: zmq.Context[Any]) -> None:
    from charon import sockets
    from charon.router.driver import Sender
    from charon.router.state import RouterState, ToWorker

    settings = router_settings()
    state = RouterState(settings.router, settings.heartbeat)
    state.on_worker(b"gone", wp.ready(FP, 1, "fake", INFO), 0.0)
    frontend, backend = sockets.router_frontend(context), sockets.router_backend(context)
    try:
        backend.bind(inproc.endpoint("workers"))
        Sender(state, frontend, backend, clock=lambda: 1.0)([ToWorker([b"gone", *wp.heartbeat()])])
    finally:
        frontend.close()
        backend.close()
    assert b"gone" not in state.workers  # EHOSTUNREACH: the worker is forgotten at once
    state.check_invariants()
