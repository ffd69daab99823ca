"""Well-formed v1 requests charon cannot serve: dropped by default, ChAR0N's replies on request.

Every path on which router or serve meets a PHOTONDATA or DETECTOR_INFO it cannot serve (queue
full, deadline with and without workers, workers lost up to the attempt limit, the engine or a
worker failing) is driven here under both policies. Under ``silent`` no reply reaches the client
that the ratpac-two client model (tests/ratpac_client.py) would reject, and the client's own
retry limit ends the request; under ``explicit`` the replies are ChAR0N's. charon's own clients
(charon.client, the FlukaIO gateway's upstream) end a silent request through timeout and retries.
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import zmq

from charon.client import Client
from charon.engine.base import Hits, Photons
from charon.errors import MalformedRequest, QueueFull, ServerUnavailable, SimulationFailed, UnknownRequest
from charon.flukaio.gateway import RouterBackend, _DetectorCache
from charon.protocol import tokens, unservable, v1
from charon.protocol import worker as wp
from charon.router.driver import Router
from charon.router.state import RouterState, ToClient
from charon.server import Server
from charon.settings import HeartbeatSettings, RouterSettings
from tests import inproc
from tests import ratpac_client as rc
from tests.router_support import photondata, wait_for

POLICIES = ["silent", "explicit"]
FP = "a" * 64
INFO = [struct.pack("<f", 1.0), struct.pack("<f", 2.0), struct.pack("<f", 3.0), struct.pack("<i", 1)]


# ---- the decision itself ---------------------------------------------------------------------------


@pytest.mark.parametrize(("error", "reason"), [
    (QueueFull("full", 3), "queue_full"),
    (SimulationFailed("boom", 3), "engine_failure"),
])
def test_decide_drops_unservable_requests_unless_explicit(error: Any, reason: str) -> None:
    silent = unservable.decide(error, "silent")
    assert (silent.reply, silent.outcome, silent.dropped) == (None, f"dropped_{reason}", True)
    assert unservable.is_dropped(silent.outcome)
    explicit = unservable.decide(error, "explicit")
    assert explicit.reply == v1.error_reply(error)
    assert explicit.outcome == error.outcome
    assert not explicit.dropped


@pytest.mark.parametrize("error", [MalformedRequest("13 frames", 5), UnknownRequest("FOO")])
@pytest.mark.parametrize("policy", POLICIES)
def test_malformed_requests_keep_their_defined_replies(error: Any, policy: Any) -> None:
    verdict = unservable.decide(error, policy)
    assert verdict.reply == v1.error_reply(error)
    assert not unservable.is_dropped(verdict.outcome)


# ---- every router path, sans-IO -------------------------------------------------------------------


class Outcomes:
    """The router state's observer: counts (kind, outcome) of every requester it finished."""

    def __init__(self) -> None:
        self.answers: Counter[tuple[str, str]] = Counter()

    def answered(self, kind: str, outcome: str, total_s: float) -> None:
        self.answers[kind, outcome] += 1

    def dispatched(self, queue_s: float) -> None: ...
    def completed(self, n_photons: int, n_hits: int, service_s: float) -> None: ...
    def requeued(self) -> None: ...
    def deduplicated(self) -> None: ...
    def refused(self, reason: str) -> None: ...
    def expired(self) -> None: ...


@dataclass
class Scene:
    """One router state driven through a failure path; what reached each client."""

    state: RouterState
    outcomes: Outcomes
    sent: dict[bytes, list[bytes]] = field(default_factory=dict)  # client -> request header
    event_ids: dict[bytes, int] = field(default_factory=dict)
    replies: list[tuple[bytes, list[bytes]]] = field(default_factory=list)
    to_workers: list[list[bytes]] = field(default_factory=list)

    def take(self, actions: Sequence[Any]) -> None:
        for action in actions:
            frames = [bytes(v1.as_view(f)) for f in action.frames]
            if isinstance(action, ToClient):
                self.replies.append((frames[0], frames[2:]))
            else:
                self.to_workers.append(frames)
        self.state.check_invariants()

    def client(self, name: str, payload: list[bytes], now: float = 0.0) -> None:
        ident = name.encode()
        self.sent[ident] = payload
        if payload[0] == tokens.PHOTONDATA:
            self.event_ids[ident] = struct.unpack_from("<I", payload[1])[0]
        self.take(self.state.on_client([ident, b""], list(payload), now))

    def worker(self, ident: bytes, frames: list[bytes], now: float = 0.0) -> None:
        self.take(self.state.on_worker(ident, list(frames), now))

    def last_token(self) -> int:
        """The token of the last request the router gave a worker."""
        for frames in reversed(self.to_workers):
            msg = wp.decode_from_router(frames[1:])
            if isinstance(msg, wp.Request):
                return msg.token
        raise AssertionError("no request reached a worker")


def scene(policy: str, **router: Any) -> Scene:
    outcomes = Outcomes()
    settings = RouterSettings(**{"queue_deadline_s": 5.0, "v1_failure_replies": policy, **router})
    return Scene(RouterState(settings, HeartbeatSettings(interval_s=1.0, liveness=3), outcomes), outcomes)


def queue_full(s: Scene) -> None:
    s.client("a", photondata(1))  # queued: no worker
    s.client("b", photondata(2))  # refused: the queue holds one request
    s.client("c", [tokens.DETECTOR_INFO])
    s.take(s.state.on_tick(5.0))  # and the queued one meets its deadline


def deadline_without_workers(s: Scene) -> None:
    s.client("a", photondata(1))
    s.client("b", [tokens.DETECTOR_INFO])
    s.take(s.state.on_tick(5.0))


def deadline_behind_a_busy_worker(s: Scene) -> None:
    s.worker(b"w", wp.ready(FP, 1, "fake", INFO))
    s.client("a", photondata(1))  # on the worker
    token = s.last_token()
    s.client("b", photondata(2))  # waits
    s.worker(b"w", wp.heartbeat(), 4.0)
    s.take(s.state.on_tick(5.0))
    s.worker(b"w", wp.reply(token, v1.empty_sim_complete(1)), 5.5)  # "a" is served


def workers_lost(s: Scene) -> None:
    s.worker(b"w1", wp.ready(FP, 1, "fake", INFO))
    s.client("a", photondata(1))
    s.take(s.state.on_worker_gone(b"w1", 0.5))  # the only attempt allowed


def worker_answers_sim_failed(s: Scene) -> None:
    s.worker(b"w", wp.ready(FP, 1, "fake", INFO))
    s.client("a", photondata(7))
    s.worker(b"w", wp.reply(s.last_token(), v1.sim_failed(7)))


def legacy_worker_fails_detector_info(s: Scene) -> None:
    s.worker(b"old", [tokens.PPP_READY])  # a ChAR0N worker: DETECTOR_INFO goes to it
    s.client("a", [tokens.DETECTOR_INFO])
    token = s.to_workers[-1][1]  # [identity, token, b"", DETECTOR_INFO]
    s.worker(b"old", [token, b"", tokens.UNKNOWN_REQUEST])


PATHS: dict[str, tuple[Callable[[Scene], None], dict[str, Any], set[str]]] = {
    "queue_full": (queue_full, {"queue_max_requests": 1}, {"dropped_queue_full", "dropped_no_workers"}),
    "deadline_without_workers": (deadline_without_workers, {}, {"dropped_no_workers"}),
    "deadline_behind_a_busy_worker": (deadline_behind_a_busy_worker, {}, {"dropped_deadline"}),
    "workers_lost": (workers_lost, {"max_attempts": 1}, {"dropped_retries_exhausted"}),
    "worker_answers_sim_failed": (worker_answers_sim_failed, {}, {"dropped_engine_failure"}),
    "legacy_worker_fails_detector_info": (legacy_worker_fails_detector_info, {},
                                          {"dropped_engine_failure"}),
}


def client_verdict(s: Scene, ident: bytes, reply: list[bytes]) -> str:
    """What the ratpac-two client does with ``reply`` to the request ``ident`` sent."""
    header = s.sent[ident][0]
    try:
        if header == tokens.PHOTONDATA:
            rc.validate_photondata(reply, s.event_ids[ident])
        elif header == tokens.DETECTOR_INFO:
            rc.validate_detector_info(reply)
        else:
            rc.validate_ack(reply)
    except rc.Rejected:
        return "reject"
    return "accept"


@pytest.mark.parametrize("path", PATHS)
def test_silent_router_never_answers_what_the_client_rejects(path: str) -> None:
    drive, router, dropped = PATHS[path]
    s = scene("silent", **router)
    drive(s)
    verdicts = [client_verdict(s, ident, reply) for ident, reply in s.replies]
    assert "reject" not in verdicts, s.replies
    outcomes = {o for (_, o) in s.outcomes.answers}
    assert dropped <= outcomes, s.outcomes.answers
    assert not list(s.state.waiting()), "every requester of the path was finished"
    # Each client whose request was finished without a reply is counted exactly once.
    answered = {ident for ident, _ in s.replies}
    n_dropped = sum(n for (_, o), n in s.outcomes.answers.items() if unservable.is_dropped(o))
    assert n_dropped == len(set(s.sent) - answered) > 0


@pytest.mark.parametrize("path", PATHS)
def test_explicit_router_answers_like_char0n(path: str) -> None:
    drive, router, _ = PATHS[path]
    s = scene("explicit", **router)
    drive(s)
    assert set(s.sent) == {ident for ident, _ in s.replies}, "every requester answered"
    headers = {reply[0] for _, reply in s.replies}
    assert headers & {tokens.NO_WORKERS, tokens.SIM_FAILED, tokens.UNKNOWN_REQUEST}
    assert not any(unservable.is_dropped(o) for (_, o) in s.outcomes.answers)


@pytest.mark.parametrize("policy", POLICIES)
def test_malformed_photondata_is_answered_under_both_policies(policy: str) -> None:
    s = scene(policy)
    s.client("a", photondata(5)[:13])
    assert s.replies == [(b"a", [tokens.SIM_FAILED, struct.pack("<I", 5)])]
    assert s.outcomes.answers == Counter({("photondata", "malformed"): 1})


# ---- the ratpac-two client model against real services ----------------------------------------------


TCP_ROUTER = {"router": {"bind": "tcp://127.0.0.1:*", "workers_bind": "tcp://127.0.0.1:*"}}
TCP_SERVE = {"server": {"bind": "tcp://127.0.0.1:*"}}


class FailingEngine:
    """The echo engine's detector, with a simulate() that always raises."""

    def __init__(self) -> None:
        self.inner = inproc.echo()
        self.name = "failing"
        self.fingerprint = self.inner.fingerprint
        self.calls = 0

    def detector_info(self) -> Any:
        return self.inner.detector_info()

    def simulate(self, batch: Sequence[Photons]) -> list[Hits]:
        self.calls += 1
        raise RuntimeError("the GPU fell off the bus")

    def close(self) -> None:
        self.inner.close()


def one_event(event_id: int = 3) -> Photons:
    return Photons.from_request(v1.decode_photondata(photondata(event_id, 20)))


@contextlib.contextmanager
def router_without_workers(policy: str) -> Iterator[inproc.Running]:
    """The trap seen with the real client: a queue deadline below the client's timeout."""
    settings = inproc.settings(TCP_ROUTER, {"router": {"queue_deadline_s": 0.1, "v1_failure_replies": policy}})
    with inproc.running(Router(settings)) as router:
        yield router


@contextlib.contextmanager
def serve_failing(policy: str) -> Iterator[inproc.Running]:
    settings = inproc.settings(TCP_SERVE, {"server": {"v1_failure_replies": policy}})
    with inproc.running(Server(settings, FailingEngine())) as server:  # type: ignore[arg-type]
        yield server


def assert_ended_cleanly(ex: rc.Exchange, retries: int) -> None:
    """The client's own retry limit ended the request: every try timed out, no reply was rejected."""
    assert (ex.ok, ex.sends, ex.polls, ex.invalid, ex.replies) == (False, retries, retries, [], [])


def test_silent_router_ends_a_run_cleanly_when_no_worker_comes(context: zmq.Context[Any]) -> None:
    with router_without_workers("silent") as router:
        client = rc.RatpacClient(router.endpoint, context, retries=3, timeout_ms=400)
        client.ping()  # answered by the router itself
        assert client.run_begin()
        with pytest.raises(rc.ClientDied, match="no DETECTOR_INFO reply"):
            client.detector_info()  # "DETECTOR INFO FAILED": a clear end, not a loop
        pes = client.event(one_event())
        assert client.run_end()
        wait_for(lambda: inproc.sample(router.service.registry, "charon_requests_total", kind="photondata",
                                       outcome="dropped_no_workers") == 3, 5, "3 dropped PHOTONDATA tries")
        assert inproc.sample(router.service.registry, "charon_requests_total", kind="detector_info",
                             outcome="dropped_no_workers") == 3
    assert pes.num_pe == 0
    for ex in client.exchanges[2:4]:
        assert_ended_cleanly(ex, 3)
    assert client.warnings == ["event 3: no valid reply, written with NumPE = 0"]


def test_explicit_router_traps_the_client_as_char0n_does(context: zmq.Context[Any]) -> None:
    with router_without_workers("explicit") as router:
        client = rc.RatpacClient(router.endpoint, context, retries=3, timeout_ms=300, max_polls=6)
        with pytest.raises(rc.RetryTrap):
            client.event(one_event())
    assert client.exchanges[0].invalid


@pytest.mark.parametrize("policy", POLICIES)
def test_serve_engine_failure(context: zmq.Context[Any], policy: str) -> None:
    with serve_failing(policy) as server:
        client = rc.RatpacClient(server.endpoint, context, retries=3, timeout_ms=400, max_polls=6)
        if policy == "explicit":
            with pytest.raises(rc.RetryTrap):
                client.event(one_event())
            return
        client.detector_info()  # DETECTOR_INFO needs no engine pass: served
        pes = client.event(one_event())
        registry = server.service.registry
        wait_for(lambda: inproc.sample(registry, "charon_requests_total", kind="photondata",
                                       outcome="dropped_engine_failure") == 3, 5, "3 dropped tries")
    assert pes.num_pe == 0
    assert_ended_cleanly(client.exchanges[1], 3)


def test_python_client_ends_a_silent_request_through_timeout_and_retries() -> None:
    with serve_failing("silent") as server, Client(server.endpoint, timeout_s=0.3, retries=2) as client:
        start = time.monotonic()
        with pytest.raises(ServerUnavailable, match=r"no reply within 0.3 s after 3 tries"):
            client.simulate(one_event())
        assert time.monotonic() - start >= 3 * 0.3 - 0.01
        assert client.detector_info().positions().shape[1] == 3  # the connection still serves
        wait_for(lambda: inproc.sample(server.service.registry, "charon_requests_total", kind="photondata",
                                       outcome="dropped_engine_failure") == 3, 5, "3 dropped tries")


def test_flukaio_gateway_upstream_ends_a_silent_request_through_timeout_and_retries() -> None:
    """The gateway's RouterBackend raises after its tries; the gateway then closes that connection
    (test_flukaio_gateway.test_simulation_failure_closes_without_reply)."""
    with router_without_workers("silent") as router:
        backend = RouterBackend(router.endpoint, 0.3, 1, _DetectorCache())
        try:
            with pytest.raises(ServerUnavailable, match=r"after 2 tries"):
                backend.simulate(one_event())
        finally:
            backend.close()
        wait_for(lambda: inproc.sample(router.service.registry, "charon_requests_total", kind="photondata",
                                       outcome="dropped_no_workers") == 2, 5, "2 dropped tries")
