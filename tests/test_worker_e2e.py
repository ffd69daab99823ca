"""``charon worker`` processes against a real router: drain, readiness, reconnects, refusal, batching, ChAR0N."""

from __future__ import annotations

import re
import struct
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import zmq

from charon.protocol import tokens
from charon.router.driver import Router
from charon.worker.driver import Worker
from tests import inproc, procs
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


def _readyz(addr: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{addr}/readyz", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _idle_workers(router: procs.Proc) -> float:
    return metric(scrape(router.metrics), "charon_workers", 'state="idle"')


def test_sigterm_under_load_fails_no_request(context: zmq.Context[Any]) -> None:
    with procs.router(env=FAST) as router, \
            procs.worker(router.workers_endpoint, "--echo-delay", "0.03", env=FAST) as leaving, \
            procs.worker(router.workers_endpoint, "--echo-delay", "0.03", env=FAST):
        wait_for(lambda: _idle_workers(router) == 2, 10, "2 workers")
        errors: list[BaseException] = []
        done = [0]
        lock = threading.Lock()

        def client(c: int) -> None:
            req = Requester(context, router.endpoint)
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
        t0 = time.monotonic()
        assert leaving.terminate(timeout=15) == 0
        assert time.monotonic() - t0 < 5
        for t in threads:
            t.join(60)
        assert not errors, errors[0]
        assert done[0] == 160
        assert "draining" in leaving.stderr()
        text = wait_metric(router.metrics, "charon_requests_total", 'kind="photondata",outcome="ok"', at_least=160)
        assert metric(text, "charon_requests_total", 'kind="photondata",outcome="ok"') == 160
        assert metric(text, "charon_requeued_total") == 0  # drained, not lost


def test_drain_grace_over_hands_unfinished_work_back_at_once(context: zmq.Context[Any]) -> None:
    env = {**FAST, "CHARON_WORKER__DRAIN_GRACE_S": "0.5"}
    with procs.router(env=FAST) as router:
        with procs.worker(router.workers_endpoint, "--echo-delay", "20", env=env) as slow:
            req = Requester(context, router.endpoint)
            try:
                req.send(photondata(9, 10))
                wait_for(lambda: metric(scrape(router.metrics), "charon_in_flight") == 1, 10, "in flight")
                t0 = time.monotonic()
                assert slow.terminate(timeout=10) == 0
                assert time.monotonic() - t0 < 3
                with procs.worker(router.workers_endpoint, env=FAST):
                    reply = req.recv(15)
                    assert reply is not None
                    check_sim_complete(reply, 9, 10)
                assert metric(scrape(router.metrics), "charon_requeued_total") == 1
            finally:
                req.close()


def test_worker_ready_only_when_connected_and_reconnects_when_the_router_appears() -> None:
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    with procs.worker(endpoint, env=FAST) as worker:
        assert _readyz(worker.metrics) == 503
        assert urllib.request.urlopen(f"http://{worker.metrics}/healthz", timeout=5).status == 200
        time.sleep(1.0)  # let it lose its first connection and back off
        with procs.router("--workers-bind", endpoint, env=FAST) as router:
            took = wait_for(lambda: _readyz(worker.metrics) == 200, 3 * 0.2 + 2.0 + 2.0, "worker ready")
            assert took < 4.6
            wait_for(lambda: _idle_workers(router) == 1, 5, "router sees the worker")
            assert metric(scrape(worker.metrics), "charon_worker_connected") == 1
        # Router gone: the worker notices and is no longer ready.
        wait_for(lambda: _readyz(worker.metrics) == 503, 5, "worker not ready without a router")
        assert worker.alive()


def test_worker_gives_up_only_when_told_to() -> None:
    env = {**FAST, "CHARON_WORKER__RECONNECT_MAX_ATTEMPTS": "2", "CHARON_WORKER__RECONNECT_INITIAL_S": "0.1",
           "CHARON_WORKER__RECONNECT_MAX_S": "0.2"}
    with procs.worker(f"tcp://127.0.0.1:{free_port()}", env=env) as worker:
        assert worker.proc.wait(20) == 1
        assert "giving up" in worker.stderr()


def test_worker_with_another_detector_is_refused_with_a_log_line_and_metric() -> None:
    env = {**FAST, "CHARON_ROUTER__FINGERPRINT": "0" * 64}
    with procs.router(env=env) as router, procs.worker(router.workers_endpoint, env=FAST) as worker:
        wait_for(lambda: metric(scrape(router.metrics), "charon_workers_refused_total",
                                'reason="fingerprint"') >= 1, 10, "refusal")
        assert _idle_workers(router) == 0
        wait_for(lambda: "differs from the pool's" in router.stderr(), 5, "router log line")
        wait_for(lambda: "refused this worker" in worker.stderr(), 5, "worker log line")
        assert _readyz(worker.metrics) == 503
        assert worker.alive()  # it keeps retrying with backoff


def test_capacity_four_batches_queued_requests_into_fewer_engine_calls(context: zmq.Context[Any]) -> None:
    env = {**FAST, "CHARON_ENGINE__BATCH_MAX_DELAY_S": "0.2"}
    with procs.router(env=FAST) as router, \
            procs.worker(router.workers_endpoint, "--capacity", "4", "--echo-delay", "0.3", env=env) as worker:
        wait_for(lambda: _idle_workers(router) == 1, 10, "worker")
        reqs = [Requester(context, router.endpoint) for _ in range(8)]
        try:
            for i, req in enumerate(reqs):
                req.send(photondata(i, 30 + i))
            for i, req in enumerate(reqs):
                reply = req.recv(20)
                assert reply is not None
                check_sim_complete(reply, i, 30 + i)
        finally:
            for req in reqs:
                req.close()
        text = scrape(worker.metrics)
        assert metric(text, "charon_worker_requests_total", 'outcome="ok"') == 8
        calls = metric(text, "charon_worker_simulation_seconds_count")
        assert 2 <= calls <= 4, calls
        assert metric(text, "charon_worker_photons_total") == sum(30 + i for i in range(8))


def test_a_char0n_worker_with_bare_ready_is_served_as_capacity_one(context: zmq.Context[Any]) -> None:
    """A worker speaking ChAR0N's framing: READY b"\\x01", heartbeats b"\\x02", envelope echoed in replies."""
    with procs.router(env=FAST) as router:
        stop = threading.Event()
        seen: list[list[bytes]] = []

        def char0n_worker() -> None:
            sock = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(router.workers_endpoint)
            sock.send(tokens.PPP_READY)
            next_beat = time.monotonic() + 0.2
            try:
                while not stop.is_set():
                    if sock.poll(50):
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
        req = Requester(context, router.endpoint)
        try:
            wait_for(lambda: _idle_workers(router) == 1, 10, "legacy worker registered")
            for event_id in (4, 5):
                check_sim_complete(req.request(photondata(event_id, 12), 10), event_id, 12)
            wait_for(lambda: [tokens.PPP_HEARTBEAT] in seen, 5, "the router's legacy heartbeat")
            assert _idle_workers(router) == 1
        finally:
            req.close()
            stop.set()
            thread.join(10)


def router_settings(**router: Any) -> Any:
    return inproc.settings({"router": {"bind": inproc.endpoint("clients"), "workers_bind": inproc.endpoint("workers"),
                                       **router}})


def worker_settings(endpoint: str, *sections: dict[str, dict[str, Any]], **worker: Any) -> Any:
    return inproc.settings({"worker": {"router": endpoint, **worker}}, *sections)


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
