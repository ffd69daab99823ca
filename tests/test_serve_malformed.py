"""Every golden request vector, well formed or not, sent over TCP to charon's real services.

Targets (in-process, on 127.0.0.1): ``charon serve`` with the echo backend, and ``charon router``
with one echo worker (both are v1 endpoints a RAT client may point at). Each vector goes through a REQ socket (as ratpac-two sends
it), a DEALER socket with the empty delimiter, and a DEALER socket without one. Every request gets
its defined reply, a PING right after it still gets ACK, and the processes are alive at the end.
A router without workers answers what it can itself and NO_WORKERS after its queue deadline.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from charon import errors
from charon.protocol import tokens, v1
from charon.router.driver import Router
from charon.server import Server
from charon.worker.driver import Worker
from tests import inproc
from tests.router_support import wait_for

VECTOR_DIR = Path(__file__).resolve().parents[1] / "proto-spec" / "vectors" / "v1"
VECTORS = [json.loads(p.read_text()) for p in sorted(VECTOR_DIR.glob("*.json"))]
EXCHANGES = [v for v in VECTORS if v["kind"] == "exchange" and not v.get("server")]
ENVELOPES = [v for v in VECTORS if v["kind"] == "envelope"]
REPLY_TIMEOUT_MS = 10_000
TRANSPORTS = ("req", "dealer", "dealer-no-delimiter")


def frames(hexes: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in hexes]


@dataclass
class Target:
    """A client-facing v1 endpoint and the services behind it."""

    endpoint: str
    services: list[inproc.Running]

    def alive(self) -> bool:
        return all(s.thread.is_alive() for s in self.services)


TCP = {"server": {"bind": "tcp://127.0.0.1:*"},
       "router": {"bind": "tcp://127.0.0.1:*", "workers_bind": "tcp://127.0.0.1:*"}}


@pytest.fixture(scope="module", params=["serve", "router"])
def server(request: pytest.FixtureRequest) -> Iterator[Target]:
    with contextlib.ExitStack() as stack:
        if request.param == "serve":
            s = stack.enter_context(inproc.running(Server(inproc.settings(TCP), inproc.echo())))
            target = Target(s.endpoint, [s])
        else:
            router = Router(inproc.settings(TCP))
            r = stack.enter_context(inproc.running(router))
            w = stack.enter_context(inproc.running(Worker(inproc.settings({"worker": {"router": r.workers_endpoint}}),
                                                          inproc.echo())))
            wait_for(lambda: router.state.idle_workers == 1, 10, "the worker")
            target = Target(r.endpoint, [r, w])
        yield target
        assert target.alive()


@pytest.fixture(scope="module")
def n_channels(server: Target) -> int:
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        reply = exchange(ctx, server.endpoint, "req", [tokens.DETECTOR_INFO])
    finally:
        ctx.destroy(linger=0)
    return v1.check_detector_info(reply).n_channels


def exchange(ctx: zmq.Context[Any], endpoint: str, transport: str, payload: Sequence[bytes]) -> list[bytes]:
    """Send one request on a fresh socket of the given kind and return the reply payload."""
    sock = ctx.socket(zmq.REQ if transport == "req" else zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        prefix = [b""] if transport == "dealer" else []
        sock.send_multipart([*prefix, *payload])
        assert sock.poll(REPLY_TIMEOUT_MS), f"no reply to {payload[:1]!r} via {transport}"
        reply = sock.recv_multipart()
        assert reply[: len(prefix)] == prefix, f"envelope not echoed: {reply[:2]!r}"
        return reply[len(prefix):]
    finally:
        sock.close(linger=0)


def assert_ping(ctx: zmq.Context[Any], endpoint: str, transport: str) -> None:
    assert exchange(ctx, endpoint, transport, [tokens.PING]) == [tokens.ACK]


def sendable(payload: Sequence[bytes], transport: str) -> bool:
    """A DEALER without delimiter cannot send a payload the envelope rule reads differently."""
    if transport != "dealer-no-delimiter":
        return True
    return v1.split_envelope([b"peer", *payload])[1] == list(payload)


CASES = [pytest.param(v, t, id=f"{v['name']}-{t}") for v in EXCHANGES for t in TRANSPORTS
         if sendable(frames(v["request"]), t)]


def test_every_exchange_vector_has_a_case_per_transport() -> None:
    """Only payloads starting with an empty frame are skipped, and only without a delimiter."""
    skipped = {v["name"] for v in EXCHANGES for t in TRANSPORTS if not sendable(frames(v["request"]), t)}
    assert skipped == {v["name"] for v in EXCHANGES if v["request"][0] == ""}


@pytest.mark.parametrize(("vector", "transport"), CASES)
def test_vector_gets_its_defined_reply(server: Target, n_channels: int, context: zmq.Context[Any],
                                       vector: dict[str, Any], transport: str) -> None:
    request = frames(vector["request"])
    reply = exchange(context, server.endpoint, transport, request)
    shape = vector["reply_shape"]
    if "reply" in vector and "detector" not in vector:
        assert reply == frames(vector["reply"])
    assert reply[0] == shape["header"].encode()
    assert len(reply) == shape["frames"]
    if shape["header"] == "DETECTOR_INFO":
        assert v1.check_detector_info(reply).n_channels == n_channels
    if shape["header"] == "SIM_COMPLETE":
        event_id = vector["decoded"]["event_id"]
        done = v1.check_sim_complete(reply, event_id, n_channels=n_channels)
        assert reply[1] == bytes.fromhex(shape["event_id"])
        assert done.n_hits == shape["hits_echo"]
        channel = np.frombuffer(reply[2], "<u4")
        np.testing.assert_array_equal(channel, np.arange(done.n_hits) % n_channels)
        # The echo backend returns the photons' own arrays: they made the round trip intact.
        for i, name in enumerate(tokens.HIT_FIELDS[1:-1], start=3):
            assert reply[i] == request[2 + tokens.PHOTON_FIELDS.index(name)], name
        flags = np.frombuffer(reply[11], "<u4")
        sent = np.frombuffer(request[13], "<u4")
        np.testing.assert_array_equal(flags & int(tokens.ORIGIN_FLAGS), sent & int(tokens.ORIGIN_FLAGS))
    assert_ping(context, server.endpoint, transport)
    assert server.alive()


@pytest.mark.parametrize("vector", ENVELOPES, ids=[v["name"] for v in ENVELOPES])
def test_envelope_vector_over_dealer(server: Target, context: zmq.Context[Any],
                                     vector: dict[str, Any]) -> None:
    """The DEALER sends the received frames after the identity; it gets back everything after it."""
    sent = frames(vector["received"])[1:]
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(server.endpoint)
        sock.send_multipart(sent)
        assert sock.poll(REPLY_TIMEOUT_MS), "no reply"
        reply = sock.recv_multipart()
    finally:
        sock.close(linger=0)
    if "reply" in vector:
        assert reply == frames(vector["reply"])[1:]
    else:
        assert reply[: len(vector["reply_prefix"]) - 1] == frames(vector["reply_prefix"])[1:]
        assert len(reply) == vector["reply_frames"] - 1
    assert_ping(context, server.endpoint, "dealer")


def test_malformed_burst_on_one_dealer_then_ping(server: Target, context: zmq.Context[Any]) -> None:
    """All malformed vectors back to back on one DEALER: one reply each, in order, server alive."""
    malformed = [v for v in EXCHANGES if "error" in v["decoded"]]
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(server.endpoint)
        for v in malformed:
            sock.send_multipart([b"", *frames(v["request"])])
        for v in malformed:
            assert sock.poll(REPLY_TIMEOUT_MS), f"no reply to {v['name']}"
            assert sock.recv_multipart() == [b"", *frames(v["reply"])], v["name"]
        sock.send_multipart([b"", tokens.PING])
        assert sock.poll(REPLY_TIMEOUT_MS)
        assert sock.recv_multipart() == [b"", tokens.ACK]
        assert not sock.poll(100), "a request was answered twice"
    finally:
        sock.close(linger=0)
    assert server.alive()


def test_legacy_pong_only_when_switched_on(context: zmq.Context[Any]) -> None:
    vector = next(v for v in VECTORS if v["name"] == "ping_legacy_pong")
    assert vector["server"] == {"legacy_pong": True}
    settings = inproc.settings(TCP, {"server": {"legacy_pong": True}})
    with inproc.running(Server(settings, inproc.echo())) as legacy:
        for transport in TRANSPORTS:
            reply = exchange(context, legacy.endpoint, transport, frames(vector["request"]))
            assert reply == frames(vector["reply"])
        assert legacy.thread.is_alive()


@pytest.mark.parametrize("policy", ["explicit", "silent"])
def test_router_without_workers(context: zmq.Context[Any], policy: str) -> None:
    """No worker: the router answers PING, RUN_BEGIN, RUN_END and every malformed request itself,
    at once; work it cannot hand out gets NO_WORKERS when the queue deadline passes (its clock),
    or, under the silent policy, no reply at all."""
    clock = inproc.FakeClock()
    router = Router(inproc.settings({"router": {"bind": inproc.endpoint("clients"), "queue_deadline_s": 0.3,
                                                "workers_bind": inproc.endpoint("workers"),
                                                "v1_failure_replies": policy}}),
                    context=context, clock=clock)
    dropped = 0
    with inproc.running(router) as r:
        for vector in EXCHANGES:
            request = frames(vector["request"])
            decoded = vector["decoded"]
            if "error" not in decoded and decoded["type"] == "PhotonData" and decoded["n_photons"] == 0:
                continue  # see test_router_answers_zero_photons_without_workers
            sock = context.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            try:
                sock.connect(r.endpoint)
                sock.send_multipart(request)
                if "error" in decoded or decoded["type"] in ("Ping", "RunBegin", "RunEnd"):
                    assert sock.poll(REPLY_TIMEOUT_MS), vector["name"]  # at once, on a clock that stands still
                    assert sock.recv_multipart() == frames(vector["reply"]), vector["name"]
                    continue
                wait_for(lambda: router.state.queued == 1, 5, f"{vector['name']} queued")
                assert not sock.poll(50), vector["name"]
                clock.advance(0.31)
                if policy == "silent":
                    dropped += 1
                    wait_for(lambda n=dropped: sum(inproc.sample(router.registry, "charon_requests_total",
                                                                 kind=kind, outcome="dropped_no_workers")
                                                   for kind in ("photondata", "detector_info")) == n,
                             5, vector["name"])
                    assert not sock.poll(50), vector["name"]
                    continue
                assert sock.poll(REPLY_TIMEOUT_MS), vector["name"]
                assert sock.recv_multipart() == [tokens.NO_WORKERS], vector["name"]
            finally:
                sock.close(linger=0)
        assert_ping(context, r.endpoint, "req")
        assert r.thread.is_alive()


def test_router_answers_zero_photons_without_workers(context: zmq.Context[Any]) -> None:
    vector = next(v for v in VECTORS if v["name"] == "photondata_zero_photons")
    with inproc.running(Router(inproc.settings(TCP, {"router": {"queue_deadline_s": 0.3}}))) as r:
        assert exchange(context, r.endpoint, "req", frames(vector["request"])) == frames(vector["reply"])


def test_each_vector_is_counted_under_its_outcome(context: zmq.Context[Any]) -> None:
    """The yaml's outcome labels are what the server's charon_requests_total counts."""
    expected: Counter[tuple[str, str]] = Counter()
    kinds = {b"PING": "ping", b"RUN_BEGIN": "run_begin", b"RUN_END": "run_end",
             b"DETECTOR_INFO": "detector_info", b"PHOTONDATA": "photondata"}
    server = Server(inproc.settings(TCP), inproc.echo())
    with inproc.running(server) as s:
        for vector in EXCHANGES:
            request = frames(vector["request"])
            exchange(context, s.endpoint, "req", request)
            error = vector["decoded"].get("error")
            outcome = getattr(errors, error).outcome if error else "ok"
            expected[kinds.get(request[0], "unknown"), outcome] += 1
    counted = Counter({
        (sample.labels["kind"], sample.labels["outcome"]): int(sample.value)
        for metric in server.registry.collect() for sample in metric.samples
        if sample.name == "charon_requests_total"
    })
    assert +counted == expected
