"""The router forwards only replies a working worker could have sent; a forger is treated as failed.

Three layers: :func:`charon.router.replies.reply_problem` on frames; the state machine with a
forging worker (fake clock, no sockets); and the real router in-process with a forging DEALER and
a real echo worker, whose client sees only the echo worker's hits.
"""

from __future__ import annotations

import struct
import time
from typing import Any

import pytest
import zmq

from charon.protocol import tokens, v1
from charon.protocol import worker as wp
from charon.router.driver import Router
from charon.router.replies import reply_problem
from charon.worker.driver import Worker
from tests import inproc
from tests.router_support import Requester, check_sim_complete, wait_for
from tests.router_support import photondata as raw_photondata
from tests.test_router_state import env, make, photondata, register, requests_to, to_clients, to_workers

P = 2  # channels of the tests' detector (tests.test_router_state.INFO)


def hits(n: int, channel: int = 1, lengths: list[int] | None = None) -> list[bytes]:
    frames = [struct.pack("<I", channel) * n] + [struct.pack("<f", 1.0) * n] * 9
    if lengths is not None:
        frames = [b"\0" * k for k in lengths]
    return frames


def sim_complete(event_id: int, hit_frames: list[bytes]) -> list[bytes]:
    return [tokens.SIM_COMPLETE, struct.pack("<I", event_id), *hit_frames]


GOOD = sim_complete(7, hits(3))

BAD = {
    "no frames": [],
    "11 frames": GOOD[:11],
    "13 frames": [*GOOD, b"extra"],
    "3-byte event id": [GOOD[0], b"\7\0\0", *GOOD[2:]],
    "8-byte event id": [GOOD[0], struct.pack("<II", 7, 0), *GOOD[2:]],
    "another event's id": sim_complete(8, hits(3)),
    "unequal hit frames": sim_complete(7, hits(3, lengths=[12] * 9 + [8])),
    "hit frames not 4-byte arrays": sim_complete(7, hits(3, lengths=[6] * 10)),
    "channel == P": sim_complete(7, hits(3, channel=P)),
    "channel 0xFFFFFFFF": sim_complete(7, hits(1, channel=0xFFFFFFFF)),
    "NO_WORKERS": [tokens.NO_WORKERS],
    "SIM_COMPLETE_ASYNC of another event": [tokens.SIM_COMPLETE_ASYNC, struct.pack("<I", 8)],
    "UNKNOWN_REQUEST with 2 frames": [tokens.UNKNOWN_REQUEST, b""],
    "SIM_FAILED of another event": [tokens.SIM_FAILED, struct.pack("<I", 9)],
    "SIM_FAILED with 3 frames": [tokens.SIM_FAILED, struct.pack("<I", 7), b""],
    "DETECTOR_INFO": [tokens.DETECTOR_INFO, b"", b"", b"", b""],
}


def test_a_valid_reply_passes() -> None:
    assert reply_problem("photondata", 7, GOOD, P) is None
    assert reply_problem("photondata", 7, sim_complete(7, hits(0)), P) is None
    assert reply_problem("photondata", 7, [tokens.SIM_FAILED, struct.pack("<I", 7)], P) is None
    assert reply_problem("photondata", 7, [tokens.SIM_COMPLETE_ASYNC, struct.pack("<I", 7)], P) is None
    assert reply_problem("photondata", 7, [tokens.UNKNOWN_REQUEST], P) is None
    assert reply_problem("detector_info", None, [tokens.UNKNOWN_REQUEST], None) is None  # a ChAR0N worker
    # event ids are compared as the uint32 the wire carries
    assert reply_problem("photondata", 2**32 + 7, GOOD, P) is None


@pytest.mark.parametrize("name", sorted(BAD))
def test_each_kind_of_bad_reply_is_named(name: str) -> None:
    problem = reply_problem("photondata", 7, BAD[name], P)
    assert problem, name


def test_channels_are_checked_only_against_a_known_detector() -> None:
    assert reply_problem("photondata", 7, sim_complete(7, hits(2, channel=5000)), None) is None
    assert "channel 5000 >= the detector's 5000" in str(reply_problem("photondata", 7,
                                                                        sim_complete(7, hits(2, channel=5000)), 5000))
    assert reply_problem("photondata", 7, sim_complete(7, hits(2, channel=4999)), 5000) is None


def test_detector_info_replies() -> None:
    info = [tokens.DETECTOR_INFO, b"\0" * 8, b"\0" * 8, b"\0" * 8, b"\0" * 8]
    assert reply_problem("detector_info", None, info, None) is None
    assert reply_problem("detector_info", None, [*info, b""], None)
    assert reply_problem("detector_info", None, info[:4], None)
    assert reply_problem("detector_info", None, [*info[:4], b"\0" * 4], None)
    assert reply_problem("detector_info", None, GOOD, None)


# ---- the state machine ---------------------------------------------------------------------------


def reply_to(state: Any, ident: bytes, token: int, payload: list[bytes], now: float) -> Any:
    return state.on_worker(ident, wp.reply(token, payload), now)


@pytest.mark.parametrize("name", ["channel 0xFFFFFFFF", "unequal hit frames", "another event's id", "13 frames"])
def test_a_forged_reply_never_reaches_the_client_and_the_job_goes_to_another_worker(name: str) -> None:
    state, rec = make(max_attempts=3)
    register(state, b"forger")
    (_, token, _), = requests_to(state.on_client(env("c"), photondata(7), 0.0))
    actions = reply_to(state, b"forger", token, BAD[name], 0.1)
    assert to_clients(actions) == []
    assert b"forger" not in state.workers
    assert [f[1:] for f in to_workers(actions)] == [wp.disconnect(wp.REASON_PROTOCOL)]
    assert rec.expiries == 1
    assert rec.requeues == 1
    assert state.queued == 1
    dispatched = requests_to(register(state, b"honest", 0.2))
    (ident, token2, payload), = dispatched
    assert ident == b"honest"
    assert payload == [bytes(f) for f in photondata(7)]
    good = sim_complete(7, hits(2))
    assert to_clients(reply_to(state, b"honest", token2, good, 0.3)) == [[b"c", b"", *good]]
    assert rec.answers["photondata", "ok"] == 1


def test_a_pool_of_forgers_ends_in_sim_failed_after_max_attempts() -> None:
    state, rec = make(max_attempts=2)
    (_, token, _), = requests_to([*register(state, b"f1"), *state.on_client(env("c"), photondata(7), 0.0)])
    assert to_clients(reply_to(state, b"f1", token, BAD["channel == P"], 0.1)) == []
    (_, token, _), = requests_to(register(state, b"f2", 0.2))
    failed = to_clients(reply_to(state, b"f2", token, BAD["channel == P"], 0.3))
    assert failed == [[b"c", b"", *(bytes(f) for f in v1.sim_failed(7))]]
    assert rec.expiries == 2
    assert not state.workers


def test_a_late_reply_is_not_judged() -> None:
    """A reply for a token the worker no longer holds is dropped as before; the worker stays."""
    state, rec = make()
    register(state, b"w")
    assert reply_to(state, b"w", 99, BAD["channel 0xFFFFFFFF"], 0.1) == []
    assert b"w" in state.workers
    assert rec.expiries == 0


# ---- the real router -----------------------------------------------------------------------------


class Forger:
    """A CHARONW1 worker that answers every request with hits of its own invention."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, fingerprint: str, info: list[bytes]) -> None:
        self.sock: zmq.Socket[Any] = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.sock.send_multipart(wp.ready(fingerprint, 4, "forger", info))
        self.answered = 0
        self.disconnects: list[bytes] = []

    def serve(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if not self.sock.poll(20):
                continue
            msg = wp.decode_from_router(self.sock.recv_multipart())
            if isinstance(msg, wp.Request):
                event_id = struct.unpack_from("<I", bytes(msg.payload[1]))[0]
                forged = sim_complete(event_id, [struct.pack("<I", 0xFFFFFFFF) * 5] + [b"\0" * 20] * 8 + [b"\0" * 4])
                self.sock.send_multipart(wp.reply(msg.token, forged))
                self.answered += 1
            elif isinstance(msg, wp.Disconnect):
                self.disconnects.append(msg.reason)

    def close(self) -> None:
        self.sock.close(linger=0)


def test_a_forging_worker_is_expelled_and_its_hits_never_reach_a_client(context: zmq.Context[Any]) -> None:
    settings = inproc.settings({"router": {"bind": inproc.endpoint("clients"),
                                           "workers_bind": inproc.endpoint("workers")}})
    router = Router(settings, context=context)
    echo = inproc.echo()
    with inproc.log_lines() as logs, inproc.running(router) as r:
        info = [bytes(f) for f in echo.detector_info().frames()]
        forger = Forger(context, r.workers_endpoint, echo.fingerprint, info)
        wait_for(lambda: router.state.idle_workers == 1, 10, "the forger registered")
        clients = [Requester(context, r.endpoint) for _ in range(6)]
        try:
            for i, c in enumerate(clients):
                c.send(raw_photondata(i, 20 + i))
            forger.serve(0.5)  # takes its four, forges them, is expelled
            assert forger.answered >= 1
            assert wp.REASON_PROTOCOL in forger.disconnects
            logs.wait_for("expelled: invalid reply to photondata event")
            honest = Worker(inproc.settings({"worker": {"router": r.workers_endpoint}}), echo, context=context)
            with inproc.running(honest):
                for i, c in enumerate(clients):
                    reply = c.recv(15)
                    assert reply is not None, f"request {i} lost"
                    check_sim_complete(reply, i, 20 + i)  # the echo engine: one hit per photon
                    assert max(memoryview(reply[2]).cast("I")) < len(echo.detector_info())
                assert all(c.recv(0.2) is None for c in clients)
            assert inproc.sample(router.registry, "charon_workers_expired_total") >= 1
            assert inproc.sample(router.registry, "charon_requests_total", kind="photondata", outcome="ok") == 6
        finally:
            forger.close()
            for c in clients:
                c.close()
