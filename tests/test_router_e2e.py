"""``charon router`` with real ``charon worker`` processes over 127.0.0.1: load, loss, restarts, limits."""

from __future__ import annotations

import itertools
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import pytest
import zmq

from charon.client import Client
from charon.protocol import tokens
from charon.protocol import worker as wp
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


def test_three_workers_eight_clients_400_events_each_answered_once(context: zmq.Context[Any]) -> None:
    n_clients, per_client, n_photons = 8, 50, 200
    with procs.router(env=FAST) as router, \
            procs.worker(router.workers_endpoint, "--echo-delay", "0.002", env=FAST) as w1, \
            procs.worker(router.workers_endpoint, "--echo-delay", "0.002", env=FAST) as w2, \
            procs.worker(router.workers_endpoint, "--echo-delay", "0.002", env=FAST) as w3:
        wait_for(lambda: metric(scrape(router.metrics), "charon_workers", 'state="idle"') == 3, 10, "3 workers")
        answers: Counter[int] = Counter()
        errors: list[BaseException] = []
        lock = threading.Lock()

        def client(c: int) -> None:
            req = Requester(context, router.endpoint)
            try:
                for i in range(per_client):
                    event_id = c * 1000 + i
                    reply = req.request(photondata(event_id, n_photons), timeout_s=30)
                    check_sim_complete(reply, event_id, n_photons)
                    with lock:
                        answers[event_id] += 1
                # A duplicate reply would arrive on the same DEALER: none may come.
                assert req.recv(0.3) is None
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
        per_worker = [metric(scrape(w.metrics), "charon_worker_requests_total", 'outcome="ok"')
                      for w in (w1, w2, w3)]
        assert sum(per_worker) == 400
        # Load spread over all workers: none idle, none doing the bulk.
        assert min(per_worker) >= 400 / 3 * 0.25, per_worker
        text = wait_metric(router.metrics, "charon_requests_total", 'kind="photondata",outcome="ok"', at_least=400)
        assert metric(text, "charon_requests_total", 'kind="photondata",outcome="ok"') == 400
        assert metric(text, "charon_photons_total") == 400 * n_photons


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
                assert metric(text, "charon_requests_total", 'kind="photondata",outcome="ok"') == 4
            finally:
                for req in reqs:
                    req.close()


def test_router_restart_workers_come_back_and_a_lazy_pirate_client_recovers() -> None:
    client_port, worker_port = free_port(), free_port()
    args = ("--bind", f"tcp://127.0.0.1:{client_port}", "--workers-bind", f"tcp://127.0.0.1:{worker_port}")
    # liveness x interval + first backoff step + 2 s
    bound = 3 * 0.2 + 1.0 + 2.0
    first = procs.start("router", *args, "--metrics-addr", "127.0.0.1:0", env=FAST)
    started = [first]
    try:
        with procs.worker(first.workers_endpoint, env=FAST), \
                Client(first.endpoint, timeout_s=0.5, retries=40) as client:
            assert len(client.detector_info()) > 0
            for restart in range(2):  # the second proves the backoff was reset by the reconnection
                started[-1].proc.kill()
                started[-1].proc.wait(10)
                router = procs.start("router", *args, "--metrics-addr", "127.0.0.1:0", env=FAST)
                started.append(router)
                t0 = time.monotonic()
                took = wait_for(lambda r=router: metric(scrape(r.metrics), "charon_workers", 'state="idle"') >= 1,
                                bound, f"worker back after restart {restart}")
                assert took <= bound
                reply = client.request(photondata(restart, 64))
                check_sim_complete([bytes(f) for f in reply], restart, 64)
                assert time.monotonic() - t0 < bound + 1.0
    finally:
        for p in started:
            p.kill()


def test_lazy_pirate_client_rides_out_a_router_restart_mid_request() -> None:
    client_port, worker_port = free_port(), free_port()
    args = ("--bind", f"tcp://127.0.0.1:{client_port}", "--workers-bind", f"tcp://127.0.0.1:{worker_port}",
            "--metrics-addr", "127.0.0.1:0")
    started = [procs.start("router", *args, env=FAST)]
    try:
        with procs.worker(started[0].workers_endpoint, env=FAST), \
                Client(started[0].endpoint, timeout_s=0.5, retries=40) as client:
            client.ping()
            started[0].proc.kill()
            started[0].proc.wait(10)
            restarter = threading.Timer(0.7, lambda: started.append(procs.start("router", *args, env=FAST)))
            restarter.start()
            try:
                reply = client.request(photondata(77, 10))  # sent while no router exists
            finally:
                restarter.join(30)
            check_sim_complete([bytes(f) for f in reply], 77, 10)
    finally:
        for p in started:
            p.kill()


def test_a_killed_worker_is_noticed_by_its_closed_connection_before_its_heartbeats_run_out(
        context: zmq.Context[Any]) -> None:
    slow_expiry = {"CHARON_HEARTBEAT__INTERVAL_S": "0.5", "CHARON_HEARTBEAT__LIVENESS": "40"}  # 20 s
    with procs.router(env=slow_expiry) as router, \
            procs.worker(router.workers_endpoint, "--echo-delay", "30", env=slow_expiry) as doomed:
        wait_for(lambda: metric(scrape(router.metrics), "charon_workers", 'state="idle"') == 1, 10, "worker")
        req = Requester(context, router.endpoint)
        try:
            req.send(photondata(3, 10))
            wait_for(lambda: metric(scrape(router.metrics), "charon_in_flight") == 1, 10, "in flight")
            with procs.worker(router.workers_endpoint, env=slow_expiry):
                wait_for(lambda: metric(scrape(router.metrics), "charon_workers", 'state="idle"') == 1, 10,
                         "second worker")
                t0 = time.monotonic()
                doomed.proc.kill()
                reply = req.recv(10)
                assert reply is not None
                check_sim_complete(reply, 3, 10)
                assert time.monotonic() - t0 < 5  # well before the 20 s heartbeat expiry
            assert metric(scrape(router.metrics), "charon_requeued_total") == 1
        finally:
            req.close()


def test_full_queue_is_refused_at_once_and_waiting_requests_hit_the_deadline(context: zmq.Context[Any]) -> None:
    env = {**FAST, "CHARON_ROUTER__QUEUE_MAX_REQUESTS": "2", "CHARON_ROUTER__QUEUE_DEADLINE_S": "1.5"}
    with procs.router(env=env) as router:
        a, b, c = (Requester(context, router.endpoint) for _ in range(3))
        try:
            t0 = time.monotonic()
            a.send(photondata(1))
            b.send(photondata(2))
            wait_for(lambda: metric(scrape(router.metrics), "charon_queue_depth") == 2, 1.0, "2 queued requests")
            t1 = time.monotonic()
            assert c.request(photondata(3), timeout_s=5) == [tokens.NO_WORKERS]
            assert time.monotonic() - t1 < 0.5  # refused at once, not after a wait
            assert b.recv(5) == [tokens.NO_WORKERS]
            assert a.recv(5) == [tokens.NO_WORKERS]
            waited = time.monotonic() - t0
            assert 1.5 <= waited <= 1.5 + 1.0
            text = wait_metric(router.metrics, "charon_requests_total", 'kind="photondata",outcome="deadline"',
                               at_least=2)
            assert metric(text, "charon_requests_total", 'kind="photondata",outcome="queue_full"') == 1
            assert metric(text, "charon_requests_total", 'kind="photondata",outcome="deadline"') == 2
            assert metric(text, "charon_queue_depth") == 0
        finally:
            for r in (a, b, c):
                r.close()


def test_same_photondata_three_times_from_fresh_req_sockets_is_simulated_once(context: zmq.Context[Any]) -> None:
    payload = photondata(31, 500)
    with procs.router(env=FAST) as router, \
            procs.worker(router.workers_endpoint, "--echo-delay", "1.0", env=FAST) as worker:
        wait_for(lambda: metric(scrape(router.metrics), "charon_workers", 'state="idle"') == 1, 10, "worker")
        socks = []
        try:
            for _ in range(3):  # like ratpac-two: a new REQ socket for each resend
                sock = context.socket(zmq.REQ)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(router.endpoint)
                sock.send_multipart(payload)
                socks.append(sock)
                time.sleep(0.2)
            for sock in socks:
                assert sock.poll(10_000)
                check_sim_complete(sock.recv_multipart(), 31, 500)
        finally:
            for sock in socks:
                sock.close()
        assert metric(scrape(worker.metrics), "charon_worker_requests_total", 'outcome="ok"') == 1
        text = wait_metric(router.metrics, "charon_requests_total", 'kind="photondata",outcome="ok"', at_least=3)
        assert metric(text, "charon_deduplicated_total") == 2
        assert metric(text, "charon_requests_total", 'kind="photondata",outcome="ok"') == 3
        assert metric(text, "charon_photons_total") == 500


def test_malformed_traffic_on_both_sockets_leaves_the_router_serving(context: zmq.Context[Any]) -> None:
    with procs.router(env=FAST) as router, procs.worker(router.workers_endpoint, env=FAST):
        wait_for(lambda: metric(scrape(router.metrics), "charon_workers", 'state="idle"') == 1, 10, "worker")
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(router.endpoint)
        bad_worker = context.socket(zmq.DEALER)
        bad_worker.setsockopt(zmq.LINGER, 0)
        bad_worker.connect(router.workers_endpoint)
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
            for endpoint in (router.endpoint, router.workers_endpoint):
                host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
                with socket.create_connection((host, int(port)), timeout=5) as raw:
                    raw.sendall(b"\x00\xff" * 512 + b"GET / HTTP/1.0\r\n\r\n")
            time.sleep(0.3)
            assert router.alive()
            with Client(router.endpoint, timeout_s=5, retries=0) as client:
                client.ping()
                reply = client.request(photondata(5, 20))
                check_sim_complete([bytes(f) for f in reply], 5, 20)
            assert metric(scrape(router.metrics), "charon_workers", 'state="idle"') == 1
        finally:
            dealer.close()
            bad_worker.close()


def test_metrics_move_while_traffic_runs(context: zmq.Context[Any]) -> None:
    with procs.router(env=FAST) as router, \
            procs.worker(router.workers_endpoint, "--echo-delay", "0.05", env=FAST):
        wait_for(lambda: metric(scrape(router.metrics), "charon_workers", 'state="idle"') == 1, 10, "worker")
        stop = threading.Event()
        errors: list[BaseException] = []

        def load(c: int) -> None:
            req = Requester(context, router.endpoint)
            try:
                i = 0
                while not stop.is_set():
                    check_sim_complete(req.request(photondata(c * 10_000 + i, 100), 30), c * 10_000 + i, 100)
                    i += 1
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
                time.sleep(0.15)
                text = scrape(router.metrics)
                depths.append(metric(text, "charon_queue_depth"))
                photons.append(metric(text, "charon_photons_total"))
                busy.append(metric(text, "charon_workers", 'state="busy"'))
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert not errors, errors[0]
        assert max(depths) >= 1, depths  # 4 clients, 1 worker: requests wait
        assert photons[-1] > photons[0], photons
        assert sum(1 for a, b in itertools.pairwise(photons) if b > a) >= 5, photons
        assert max(busy) == 1
        text = scrape(router.metrics)
        assert metric(text, "charon_request_duration_seconds_count", 'phase="queue"') > 0
        assert metric(text, "charon_request_duration_seconds_count", 'phase="service"') > 0


@pytest.mark.parametrize("dealer_client", [False, True])
def test_ping_run_begin_run_end_need_no_worker(context: zmq.Context[Any], dealer_client: bool) -> None:
    with procs.router(env=FAST) as router:
        sock = context.socket(zmq.DEALER if dealer_client else zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(router.endpoint)
        try:
            for frames in ([tokens.PING], [tokens.RUN_BEGIN, b"out.root"], [tokens.RUN_END]):
                sock.send_multipart(frames)
                assert sock.poll(5000)
                assert sock.recv_multipart() == [tokens.ACK]
        finally:
            sock.close()


def test_router_sigterm_exits_cleanly_and_sends_workers_to_its_successor() -> None:
    client_port, worker_port = free_port(), free_port()
    args = ("--bind", f"tcp://127.0.0.1:{client_port}", "--workers-bind", f"tcp://127.0.0.1:{worker_port}",
            "--metrics-addr", "127.0.0.1:0")
    started = [procs.start("router", *args, env=FAST)]
    try:
        with procs.worker(started[0].workers_endpoint, env=FAST) as worker:
            wait_for(lambda: _ready(started[0].metrics) == 200 and _idle(started[0]) == 1, 10, "first router")
            t0 = time.monotonic()
            assert started[0].terminate(timeout=10) == 0
            assert time.monotonic() - t0 < 3
            wait_for(lambda: "router asked to reconnect (shutdown)" in worker.stderr(), 5, "worker told")
            started.append(procs.start("router", *args, env=FAST))
            # The worker reconnects after its first backoff step (1 s): well before it would
            # have noticed the silence on its own.
            wait_for(lambda: _idle(started[1]) == 1, 1.0 + 2.0, "worker registered with the successor")
            with Client(started[1].endpoint, timeout_s=5, retries=0) as client:
                check_sim_complete([bytes(f) for f in client.request(photondata(3, 5))], 3, 5)
    finally:
        for p in started:
            p.kill()


def _idle(router: procs.Proc) -> float:
    return metric(scrape(router.metrics), "charon_workers", 'state="idle"')


def _ready(addr: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{addr}/readyz", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
