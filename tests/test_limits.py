"""What a client can make ``charon serve`` and ``charon router`` hold, bounded on real loopback sockets:
request size (ZMQ_MAXMSGSIZE and the photon limit), unread replies per client (ZMQ_SNDHWM),
client connections (the socket monitor), and the metrics/health HTTP server's threads."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from zmq.utils.monitor import parse_monitor_message

from charon.connections import ConnectionCount, check_descriptors, descriptor_limit
from charon.errors import RequestTooLarge
from charon.health import HealthServer
from charon.metrics import new_registry
from charon.protocol import tokens, unservable, v1
from charon.router.driver import Router
from charon.server import Server
from charon.settings import LimitsSettings, MetricsSettings
from charon.worker.driver import Worker
from tests import inproc
from tests.router_support import Requester, check_sim_complete, photondata, wait_for

MiB = 1024**2
SMALL = LimitsSettings(max_request_bytes=MiB)  # 21,845 photons, frames up to 87,380 bytes


# ---- the codec's check ---------------------------------------------------------------------------


def test_small_limits_follow_from_the_byte_limit() -> None:
    assert SMALL.max_request_photons == MiB // 48
    assert SMALL.max_frame_bytes == 4 * SMALL.max_request_photons
    assert LimitsSettings().max_request_photons >= 10**7  # the GPU bench's 10^7-photon requests fit


def test_check_size_reads_the_photon_count_before_validating_anything() -> None:
    v1.check_size(photondata(1, 100), MiB, 1000)
    claim = [tokens.PHOTONDATA, struct.pack("<II", 5, 2000), *[b""] * 12]  # claims 2000, carries none
    with pytest.raises(RequestTooLarge, match="2000 photons") as info:
        v1.check_size(claim, MiB, 1000)
    assert info.value.event_id == 5
    silent = unservable.decide(info.value, "silent")
    assert (silent.reply, silent.outcome) == (None, "dropped_too_large")
    explicit = unservable.decide(info.value, "explicit")
    assert explicit.reply == v1.sim_failed(5)
    assert explicit.outcome == "too_large"


def test_check_size_counts_every_frame_extra_ones_included() -> None:
    payload = [*photondata(2, 10), b"x" * MiB]
    with pytest.raises(RequestTooLarge, match="bytes"):
        v1.check_size(payload, MiB, 10**6)
    with pytest.raises(RequestTooLarge):
        v1.check_size([tokens.PING, b"y" * (MiB + 1)], MiB, 10**6)


# ---- serve and router on loopback ----------------------------------------------------------------


@pytest.fixture(params=["serve", "router"])
def service(request: pytest.FixtureRequest, context: zmq.Context[Any]) -> Iterator[tuple[Any, str]]:
    """``charon serve``, or a router with one echo worker, with 1 MiB requests on TCP 127.0.0.1."""
    limits = {"limits": {"max_request_bytes": MiB}}
    if request.param == "serve":
        server = Server(inproc.settings({"server": {"bind": "tcp://127.0.0.1:*"}}, limits), inproc.echo(),
                        context=context)
        with inproc.running(server) as s:
            yield server, s.endpoint
        return
    router = Router(inproc.settings({"router": {"bind": "tcp://127.0.0.1:*", "workers_bind": inproc.endpoint("w")}},
                                    limits), context=context)
    with inproc.running(router) as r, inproc.running(
            Worker(inproc.settings({"worker": {"router": r.workers_endpoint}}), inproc.echo(), context=context)):
        wait_for(lambda: router.state.idle_workers == 1, 10, "the worker")
        yield router, r.endpoint


def dropped_too_large(service: Any) -> float:
    return inproc.sample(service.registry, "charon_requests_total", kind="photondata", outcome="dropped_too_large")


def test_over_size_frames_close_the_connection_unanswered_and_others_are_served(
        context: zmq.Context[Any], service: tuple[Any, str]) -> None:
    svc, endpoint = service
    big = Requester(context, endpoint)
    monitor = big.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    try:
        big.send(photondata(1, SMALL.max_request_photons + 1000))  # each frame over ZMQ_MAXMSGSIZE
        assert monitor.poll(5000), "the over-size request did not close its connection"
        assert parse_monitor_message(monitor.recv_multipart())["event"] == zmq.EVENT_DISCONNECTED
        assert big.recv(0.3) is None
    finally:
        big.sock.disable_monitor()
        monitor.close(linger=0)
        big.close()
    good = Requester(context, endpoint)
    try:
        assert good.request([tokens.PING]) == [tokens.ACK]
        check_sim_complete(good.request(photondata(2, 20_000)), 2, 20_000)  # 960 kB: under the limit
    finally:
        good.close()
    wait_for(lambda: inproc.sample(svc.registry, "charon_requests_total", kind="photondata", outcome="ok") == 1,
             5, "the good request counted")
    assert dropped_too_large(svc) == 0  # the over-size one never reached charon: libzmq cut it off


def test_a_photon_count_over_the_limit_is_counted_and_not_answered(
        context: zmq.Context[Any], service: tuple[Any, str]) -> None:
    svc, endpoint = service
    client = Requester(context, endpoint)
    try:
        claim = [tokens.PHOTONDATA, struct.pack("<II", 3, SMALL.max_request_photons + 1), *[b"\0" * 4] * 12]
        client.send(claim)
        client.send([*photondata(4, 20_000), *[b"\0" * 80_000] * 2])  # each frame fits, the total does not
        wait_for(lambda: dropped_too_large(svc) == 2, 10, "two over-size requests counted")
        assert client.recv(0.3) is None  # v1: silence
        assert client.request([tokens.PING]) == [tokens.ACK]  # the same connection is still served
    finally:
        client.close()


# ---- unread replies ------------------------------------------------------------------------------


def test_a_client_that_never_reads_has_its_replies_dropped_and_counted(context: zmq.Context[Any]) -> None:
    """Replies beyond the high-water mark are dropped and counted; every request is either answered
    or counted as dropped, and a well-behaved client is served meanwhile."""
    router = Router(inproc.settings({"router": {"bind": "tcp://127.0.0.1:*", "workers_bind": inproc.endpoint("w")},
                                     "limits": {"client_send_hwm": 4}}), context=context)
    n, photons = 200, 5000  # replies of 200 kB: a few MB of socket buffers hold only some of them
    with inproc.running(router) as r, inproc.running(
            Worker(inproc.settings({"worker": {"router": r.workers_endpoint, "capacity": 4}}), inproc.echo(),
                   context=context)):
        greedy = Requester(context, r.endpoint)
        greedy.sock.setsockopt(zmq.RCVHWM, 1)
        greedy.sock.setsockopt(zmq.RCVBUF, 64 * 1024)
        try:
            for i in range(n):
                greedy.send(photondata(i, photons))

            def all_accounted() -> bool:
                answered = inproc.sample(router.registry, "charon_requests_total", kind="photondata", outcome="ok")
                return answered == n

            wait_for(all_accounted, 60, f"{n} requests answered by the worker")
            dropped = inproc.sample(router.registry, "charon_replies_dropped_total", reason="hwm")
            assert dropped > 0
            polite = Requester(context, r.endpoint)
            try:
                check_sim_complete(polite.request(photondata(999, 10)), 999, 10)
            finally:
                polite.close()
            received = 0
            while greedy.recv(1.0) is not None:
                received += 1
            assert received + dropped == n, (received, dropped)
        finally:
            greedy.close()


# ---- client connections --------------------------------------------------------------------------


def test_connections_over_the_limit_are_closed_at_once_with_a_log_line(context: zmq.Context[Any]) -> None:
    router = Router(inproc.settings({"router": {"bind": "tcp://127.0.0.1:*", "workers_bind": inproc.endpoint("w")},
                                     "limits": {"max_client_connections": 5}}), context=context)
    with inproc.log_lines() as logs, inproc.running(router) as r:
        host, port = r.endpoint.removeprefix("tcp://").rsplit(":", 1)
        raw = [socket.create_connection((host, int(port)), timeout=5) for _ in range(12)]
        try:
            wait_for(lambda: inproc.sample(router.registry, "charon_client_connections_refused_total") == 7, 10,
                     "7 connections refused")
            assert sum(_closed_by_peer(sock, 0.3) for sock in raw) == 7  # the held five got a ZMTP greeting
            logs.wait_for("limits.max_client_connections")
            assert inproc.sample(router.registry, "charon_client_connections") == 5
        finally:
            for sock in raw:
                sock.close()
        wait_for(lambda: inproc.sample(router.registry, "charon_client_connections") == 0, 10, "all closed")
        client = Requester(context, r.endpoint)  # served once they have gone
        try:
            assert client.request([tokens.PING]) == [tokens.ACK]
        finally:
            client.close()


def _closed_by_peer(sock: socket.socket, timeout_s: float = 1.0) -> bool:
    """Whether the peer closes ``sock`` within ``timeout_s`` (whatever it sent before, such as
    a ZMTP greeting)."""
    sock.settimeout(timeout_s)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


# ---- metrics/health HTTP server ------------------------------------------------------------------


def test_idle_http_connections_cost_no_thread_and_time_out() -> None:
    settings = MetricsSettings(addr="127.0.0.1:0", threads=2, max_waiting=8, idle_timeout_s=0.5)
    http = HealthServer(settings, 0, new_registry())
    addr = http.start()
    assert addr is not None
    host, port = addr.rsplit(":", 1)
    threads_before = threading.active_count()
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(40)]
    try:
        time.sleep(0.2)
        assert threading.active_count() <= threads_before  # a fixed pool: no thread per connection
        # Idle connections wait without a thread: a scrape gets in (the longest-waiting idle
        # connection makes room) and is answered at once.
        start = time.monotonic()
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as resp:
            assert resp.status == 200
            assert b"process_cpu_seconds_total" in resp.read()
        assert time.monotonic() - start < 2.0
        # Every idle connection is closed by the server: evicted when the wait list was full, else
        # after its idle timeout.
        assert all(_closed_by_peer(sock, 5.0) for sock in idle)
        assert http._server is not None
        assert http._server.refused + http._server.timed_out == 40  # every idle one, by one or the other
        assert http._server.refused > 0  # the wait list is bounded
    finally:
        for sock in idle:
            sock.close()
        http.stop()


# ---- connection count and descriptors (no sockets) -----------------------------------------------


def test_connection_count_refuses_beyond_the_limit_and_frees_on_close() -> None:
    count = ConnectionCount(limit=2)
    assert [count.accepted() for _ in range(4)] == [False, False, True, True]
    assert (count.open, count.refused) == (4, 2)  # the refused two are open until libzmq closes them
    for _ in range(3):
        count.closed()
    assert count.accepted() is False  # room again
    count.closed()
    count.closed()
    count.closed()  # a stray close never goes below zero
    assert count.open == 0


def test_start_up_lifts_the_soft_descriptor_limit_to_the_hard_one() -> None:
    code = ("import resource; from charon.connections import raise_descriptor_limit; "
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE); "
            "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard)); "
            "print(*raise_descriptor_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    soft, hard, now = (int(v) for v in out.stdout.split())
    assert soft == now
    assert now == hard or now >= 1_048_576  # an unlimited hard limit is lifted to 2^20


def test_a_descriptor_limit_below_the_connection_limit_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    limit = descriptor_limit()
    if limit < 0:
        pytest.skip("no descriptor limit on this platform")
    assert check_descriptors(limit) == limit
    assert "descriptor limit" in caplog.text
    caplog.clear()
    check_descriptors(1)
    assert "descriptor limit" not in caplog.text
