"""The v2 golden vectors, held against the codec, the session's split, the router's fan-out, and a
running ``charon serve`` and router + worker (in-process, real DEALER sockets over ``inproc://``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from charon.protocol import tokens, v2
from charon.router.driver import Router
from charon.server import Server
from charon.sessions import Limits, Sessions
from charon.worker.driver import Worker
from tests import golden, inproc
from tests.router_support import wait_for

ROOT = Path(__file__).resolve().parents[1]
VECTOR_DIR = golden.VECTORS_ROOT / "v2"
VECTORS = golden.load("v2")
frames, as_bytes, ids = golden.frames, golden.as_bytes, golden.ids


def of_kind(kind: str) -> list[dict[str, Any]]:
    return golden.of_kind(VECTORS, kind)


def test_vector_files_and_index_are_what_the_generator_writes() -> None:
    golden.check_generated("v2", VECTORS, VECTOR_DIR / "README.md", "")


def test_constants_are_the_codecs() -> None:
    enc = VECTORS["magic"]
    assert bytes.fromhex(enc["magic"]) == v2.MAGIC
    assert {k: bytes.fromhex(h) for k, h in enc["commands"].items()} == {
        "HELLO": v2.HELLO, "WELCOME": v2.WELCOME, "SIMULATE": v2.SIMULATE, "RESULT": v2.RESULT, "ERROR": v2.ERROR,
        "JOB": v2.JOB, "JOB_DONE": v2.JOB_DONE}
    assert int(enc["no_tag"], 16) == v2.NO_TAG
    assert int(enc["no_event"], 16) == v2.NO_EVENT
    assert enc["codes"] == {c.name: int(c) for c in v2.ErrorCode}
    assert {bytes.fromhex(h) for h in enc["v1_headers"]} == tokens.REQUEST_HEADERS
    for header in tokens.REQUEST_HEADERS:
        assert not v2.is_v2([header])
        assert not header.startswith(v2.MAGIC)
        assert not v2.MAGIC.startswith(header)


# ---- messages ------------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", of_kind("message"), ids=ids(of_kind("message")))
def test_message_decodes_as_recorded_and_encodes_byte_for_byte(vector: dict[str, Any]) -> None:
    msg = frames(vector["frames"])
    d = vector["decoded"]
    if d["type"] == "Hello":
        hello = v2.decode_from_client(msg)
        assert hello == v2.Hello(d["version"], d["seed"], d.get("client", ""))
        assert as_bytes(v2.hello(hello)) == msg
    elif d["type"] == "Simulate":
        sim = v2.decode_from_client(msg)
        assert isinstance(sim, v2.Simulate)
        assert [[e.tag, e.event_id, e.n_photons] for e in sim.events] == d["events"]
        assert as_bytes(v2.simulate(sim.events, sim.arrays)) == msg
    elif d["type"] == "Welcome":
        welcome = v2.decode_from_server(msg)
        assert isinstance(welcome, v2.Welcome)
        fields = {k: v for k, v in d.items() if k not in ("type", "pmt_frames")}
        assert {k: getattr(welcome, k) for k in fields} == fields
        assert v2.pmt_digest(*frames(d["pmt_frames"])) == welcome.pmt_digest
        assert as_bytes(v2.welcome(welcome)) == msg
    elif d["type"] == "Result":
        result = v2.decode_from_server(msg)
        assert isinstance(result, v2.Result)
        assert (result.tag, result.event_id, result.n_hits, result.flags) == (
            d["tag"], d["event_id"], d["n_hits"], d["flags"])
        arrays = [result.array(i) for i in range(v2.hit_arrays(result.flags))]
        assert as_bytes(v2.result(result.tag, result.event_id, arrays)) == msg
    else:
        error = v2.decode_from_server(msg)
        assert error == v2.Error(d["tag"], d["event_id"], v2.ErrorCode[d["code"]], d["message"])
        assert as_bytes(v2.error(error.tag, error.event_id, error.code, error.message)) == msg


def test_split_gives_the_recorded_jobs() -> None:
    vector = VECTORS["split_into_jobs"]
    sessions = Sessions(Limits(100, 100, 1000, vector["job_max_photons"]), 10)
    sessions.hello(b"client", v2.Hello(seed=vector["seed"]))
    message = v2.decode_simulate(frames(vector["simulate"]))
    admission = sessions.admit(b"client", message)
    assert admission.errors == []
    assert [as_bytes(job) for job, _, _ in admission.jobs] == [frames(j) for j in vector["jobs"]]
    for job, events, photons in admission.jobs:
        decoded = v2.decode_job(job)
        assert decoded.seed == vector["seed"]
        assert decoded.events == events
        assert decoded.n_photons == photons == v2.job_photons(job)


def test_fanout_gives_the_recorded_client_messages() -> None:
    vector = VECTORS["job_done_fanout"]
    done = v2.decode_job_done(frames(vector["job_done"]))
    assert [as_bytes(m) for m in v2.client_replies(done)] == [frames(m) for m in vector["client"]]
    assert v2.job_done_hits(frames(vector["job_done"])) == 1


# ---- rejections against running services ---------------------------------------------------------


@contextlib.contextmanager
def serve_endpoint(context: zmq.Context[Any], extra: dict[str, Any]) -> Iterator[str]:
    service = Server(inproc.settings({"server": {"bind": inproc.endpoint("v2-serve")}}, extra), inproc.echo(),
                     context=context)
    with inproc.running(service) as handle:
        yield handle.endpoint


@contextlib.contextmanager
def router_endpoint(context: zmq.Context[Any], extra: dict[str, Any]) -> Iterator[str]:
    settings = inproc.settings({"router": {"bind": inproc.endpoint("v2-clients"),
                                           "workers_bind": inproc.endpoint("v2-workers")}}, extra)
    router = Router(settings, context=context)
    with inproc.running(router) as r:
        worker = Worker(inproc.settings({"worker": {"router": r.workers_endpoint}}), inproc.echo(), context=context)
        with inproc.running(worker):
            wait_for(lambda: router.state.idle_workers == 1, 10, "the worker to register")
            yield r.endpoint


def exchange(sock: zmq.Socket[Any], request: list[bytes], n_replies: int) -> list[list[bytes]]:
    sock.send_multipart(request)
    replies = []
    for _ in range(n_replies):
        assert sock.poll(5000), f"{len(replies)} of {n_replies} replies"
        replies.append(sock.recv_multipart())
    assert not sock.poll(50), "more replies than events"
    return replies


REJECTIONS = of_kind("rejection")


@pytest.mark.parametrize("where", ["serve", "router"])
@pytest.mark.parametrize("vector", REJECTIONS, ids=ids(REJECTIONS))
def test_service_answers_as_recorded_and_keeps_serving(context: zmq.Context[Any], where: str,
                                                       vector: dict[str, Any]) -> None:
    start = serve_endpoint if where == "serve" else router_endpoint
    with start(context, vector.get("server", {})) as endpoint:
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        try:
            hello = as_bytes(v2.hello(v2.Hello(seed=1)))
            if vector["hello_first"]:
                [welcome] = exchange(sock, hello, 1)
                assert isinstance(v2.decode_from_server(welcome), v2.Welcome)
            heads = vector["error_heads"]
            tags = vector.get("result_tags", [])
            replies = exchange(sock, frames(vector["request"]), len(heads) + len(tags))
            decoded = [v2.decode_from_server(r) for r in replies]
            assert [r[2].hex() for r, d in zip(replies, decoded, strict=True) if isinstance(d, v2.Error)] == heads
            assert sorted(d.tag for d in decoded if isinstance(d, v2.Result)) == tags
            for r, d in zip(replies, decoded, strict=True):
                if isinstance(d, v2.Error):
                    assert d.message, f"ERROR without a message: {r}"
            [again] = exchange(sock, hello, 1)  # the service is still serving this connection
            assert isinstance(v2.decode_from_server(again), v2.Welcome)
        finally:
            sock.close(linger=0)
