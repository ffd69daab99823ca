"""A whole RAT run of the ratpac-two client model against charon's real services over TCP.

PING, RUN_BEGIN("output.root"), DETECTOR_INFO (with the client's PMT matching), 20 events of
isotropic photons from the centre, RUN_END: every reply must pass the client's own validators at
the first try, with no resend, no client crash and no channel outside the PMT map. The first
tests pin down the model's retry behaviour against stub servers, so a pass means what the real
client would see.
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import zmq

from charon.engine.base import Photons
from charon.engine.detector import load_detector
from charon.process import open_simulator
from charon.protocol import tokens
from charon.router.driver import Router
from charon.server import Server
from charon.settings import EngineSettings
from charon.worker.driver import Worker
from tests import inproc
from tests import ratpac_client as rc

N_EVENTS = 20
N_PHOTONS = 500
N_PMTS = 3000


# ---- the model's retry behaviour, against stub servers --------------------------------------------


@contextlib.contextmanager
def stub_server(context: zmq.Context[Any], answer: Callable[[list[bytes]], list[bytes] | None]
                ) -> Iterator[tuple[str, list[list[bytes]]]]:
    """A ROUTER on 127.0.0.1 answering each request with ``answer(payload)`` (None = stay silent)."""
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    received: list[list[bytes]] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            if sock.poll(20):
                identity, delimiter, *payload = sock.recv_multipart()
                received.append([identity, *payload])
                reply = answer(payload)
                if reply is not None:
                    sock.send_multipart([identity, delimiter, *reply])

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{port}", received
    finally:
        stop.set()
        thread.join(5)
        sock.close(linger=0)


def test_silent_server_costs_three_sends_on_fresh_sockets_then_die(context: zmq.Context[Any]) -> None:
    with stub_server(context, lambda payload: None) as (endpoint, received):
        client = rc.RatpacClient(endpoint, context, retries=3, timeout_ms=150)
        start = time.monotonic()
        with pytest.raises(rc.ClientDied):
            client.ping()
        elapsed = time.monotonic() - start
        time.sleep(0.1)
    ex = client.exchanges[0]
    assert (ex.sends, ex.polls, ex.ok) == (3, 3, False)
    # Three full 150 ms polls; zmq's poll may wake up to a timer tick (~1 ms) early, hence the margin.
    assert 0.45 - 3 * 0.002 <= elapsed < 3.0
    assert len(received) == 3
    assert len({r[0] for r in received}) == 3, "every try must come from a new REQ identity"


def test_failed_event_is_written_with_zero_pe(context: zmq.Context[Any]) -> None:
    with stub_server(context, lambda payload: None) as (endpoint, _):
        client = rc.RatpacClient(endpoint, context, retries=2, timeout_ms=100)
        photons = isotropic(5, 10, 0)
        pes = client.event(photons)
    assert pes.num_pe == 0
    assert client.exchanges[0].sends == 2
    assert any("NumPE = 0" in w for w in client.warnings)


@pytest.mark.parametrize("invalid", [[tokens.SIM_FAILED, b"\x05\x00\x00\x00"], [tokens.NO_WORKERS],
                                     [tokens.UNKNOWN_REQUEST]])
def test_invalid_photondata_replies_trap_the_client(context: zmq.Context[Any], invalid: list[bytes]) -> None:
    """Why charon answers SIM_COMPLETE wherever it can: any other reply makes the client resend
    forever (its unsigned retry counter wraps), which the model reports as RetryTrap."""
    with stub_server(context, lambda payload: invalid) as (endpoint, received):
        client = rc.RatpacClient(endpoint, context, retries=3, timeout_ms=250, max_polls=8)
        with pytest.raises(rc.RetryTrap):
            client.event(isotropic(5, 10, 0))
    ex = client.exchanges[0]
    assert ex.polls == 8
    assert ex.sends >= 4, "it keeps resending past its configured 3 tries"
    assert len(ex.invalid) >= 3
    assert len(received) >= ex.sends - 1  # the last resend may die with its LINGER 0 socket


def test_pong_traps_ping(context: zmq.Context[Any]) -> None:
    with stub_server(context, lambda payload: [tokens.PONG]) as (endpoint, _):
        client = rc.RatpacClient(endpoint, context, retries=3, timeout_ms=250, max_polls=8)
        with pytest.raises(rc.RetryTrap):
            client.ping()


def test_invalid_then_valid_reply_is_accepted_on_the_resend(context: zmq.Context[Any]) -> None:
    answers = iter([[tokens.NO_WORKERS], [tokens.ACK]])
    with stub_server(context, lambda payload: next(answers)) as (endpoint, _):
        client = rc.RatpacClient(endpoint, context, retries=3, timeout_ms=300)
        client.ping()
    ex = client.exchanges[0]
    # invalid -> poll the same socket again (times out) -> resend -> ACK
    assert (ex.sends, ex.polls, ex.ok) == (2, 3, True)


# ---- a RAT run against charon serve ---------------------------------------------------------------


def isotropic(event_id: int, n: int, flags: int) -> Photons:
    rng = np.random.default_rng([99, event_id])
    cos_t = rng.uniform(-1, 1, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    sin_t = np.sqrt(1 - cos_t**2)
    d = np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=1)
    pol = np.cross(d, rng.normal(size=(n, 3)))
    pol /= np.linalg.norm(pol, axis=1, keepdims=True)
    return Photons.from_arrays(event_id, np.zeros((n, 3)), d, pol, rng.uniform(380, 460, n),
                               rng.uniform(0, 5, n), flags)


def event_flags(event_id: int) -> int:
    """Even events are Cherenkov light, every third odd one scintillation, the rest unflagged."""
    if event_id % 2 == 0:
        return int(tokens.Flag.CHERENKOV)
    return int(tokens.Flag.SCINTILLATION) if event_id % 3 == 0 else 0


NUMPY_MISSING = pytest.mark.skipif(
    importlib.util.find_spec("charon.engine.numpy_engine") is None,
    reason="charon.engine.numpy_engine (the numpy backend) is not in this checkout")
BACKENDS = ["echo", pytest.param("numpy", marks=NUMPY_MISSING)]
#: (backend, through the router?) pairs a RAT run is tried against.
DEPLOYMENTS = [
    pytest.param("echo", False, id="serve-echo"),
    pytest.param("numpy", False, id="serve-numpy", marks=NUMPY_MISSING),
    pytest.param("echo", True, id="router-echo"),
]


TCP = {"server": {"bind": "tcp://127.0.0.1:*"},
       "router": {"bind": "tcp://127.0.0.1:*", "workers_bind": "tcp://127.0.0.1:*"}}


@contextlib.contextmanager
def charon_endpoint(backend: str, via_router: bool) -> Iterator[list[inproc.Running]]:
    """``charon serve``, or ``charon router`` with one worker (in-process, on 127.0.0.1); the
    first service is client-facing."""
    with open_simulator(EngineSettings(backend=backend)) as simulator:  # type: ignore[arg-type]
        if not via_router:
            with inproc.running(Server(inproc.settings(TCP), simulator)) as server:
                yield [server]
            return
        with inproc.running(Router(inproc.settings(TCP))) as router, inproc.running(
                Worker(inproc.settings({"worker": {"router": router.workers_endpoint}}), simulator)) as worker:
            yield [router, worker]


@pytest.fixture(scope="module")
def rat_geometry() -> np.ndarray[Any, Any]:
    """The client's own PMT table: the reference detector's positions in a different order."""
    positions = load_detector(None).info().positions().astype(np.float64)
    return positions[np.random.default_rng(3).permutation(len(positions))]


@pytest.mark.parametrize(("backend", "via_router"), DEPLOYMENTS)
def test_rat_run(backend: str, via_router: bool, context: zmq.Context[Any],
                 rat_geometry: np.ndarray[Any, Any]) -> None:
    # The echo backend answers in milliseconds: the client's default 2.5 s timeout must hold (the
    # router may wait for its worker to register, so it gets more). The numpy engine gets the
    # larger timeout operators are told to set for real simulation.
    timeout_ms = 2500 if backend == "echo" and not via_router else 20_000
    with charon_endpoint(backend, via_router) as processes:
        client = rc.RatpacClient(processes[0].endpoint, context, retries=3, timeout_ms=timeout_ms,
                                 rat_pmt_positions=rat_geometry)
        client.begin_of_run("output.root")

        # DETECTOR_INFO: 3000 float32 positions, every channel matched to the RAT table.
        assert client.chroma_positions is not None
        assert client.chroma_positions.dtype == np.float32
        assert client.chroma_positions.shape == (N_PMTS, 3)
        assert len(client.rat_pmt_id) == N_PMTS
        assert client.unmatched == []
        assert sorted(client.rat_pmt_id) == list(range(N_PMTS))
        info_reply = client.exchanges[-1].replies[-1]
        assert [len(f) for f in info_reply[1:]] == [4 * N_PMTS] * 4

        events = [isotropic(e, N_PHOTONS, event_flags(e)) for e in range(N_EVENTS)]
        results = [client.event(p) for p in events]
        zero = client.event(isotropic(N_EVENTS, 0, 0))
        assert client.run_end()
        assert all(p.thread.is_alive() for p in processes)

    assert client.warnings == []
    for ex in client.exchanges:
        assert (ex.ok, ex.sends, ex.polls, ex.invalid) == (True, 1, 1, []), ex.header
    assert [ex.header for ex in client.exchanges] == [
        tokens.PING, tokens.RUN_BEGIN, tokens.DETECTOR_INFO, *[tokens.PHOTONDATA] * (N_EVENTS + 1),
        tokens.RUN_END,
    ]
    assert zero.num_pe == 0

    total = 0
    for photons, pes, ex in zip(events, results, client.exchanges[3:], strict=False):
        reply = ex.replies[-1]
        assert len(reply) == 12
        assert reply[1] == np.uint32(photons.event_id).tobytes()
        assert len({len(f) for f in reply[2:12]}) == 1, "all ten hit frames hold H values"
        assert pes.num_pe == len(pes.channel) <= N_PHOTONS
        assert np.all(pes.channel < N_PMTS)
        flags = pes.arrays["flags"]
        assert np.all(flags & int(tokens.Flag.SURFACE_DETECT))
        origin = event_flags(photons.event_id)
        np.testing.assert_array_equal(flags & int(tokens.ORIGIN_FLAGS), origin)
        expected_process = {0x400: "Cerenkov", 0x800: "Scintillation", 0: "Unknown"}[origin]
        assert set(pes.process) <= {expected_process}
        # The RAT PMT the client books each hit on sits where the server says the channel is.
        np.testing.assert_allclose(rat_geometry[pes.rat_pmt], client.chroma_positions[pes.channel],
                                   atol=1e-3)
        if backend == "echo":
            assert pes.num_pe == N_PHOTONS
            np.testing.assert_array_equal(pes.channel, np.arange(N_PHOTONS) % N_PMTS)
            np.testing.assert_array_equal(pes.arrays["time"], photons.time)
            np.testing.assert_array_equal(pes.arrays["wavelength"], photons.wavelength)
        else:
            assert np.all(np.isfinite(pes.arrays["time"]))
            assert np.all(pes.arrays["time"] >= photons.time.min())
        total += pes.num_pe
    assert total > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_resent_event_gets_the_same_answer(backend: str, context: zmq.Context[Any]) -> None:
    """A timed-out client resends the same event on a new socket: both copies are answered with
    identical hits (results depend only on seed, event id and photon index)."""
    photons = isotropic(7, N_PHOTONS, int(tokens.Flag.CHERENKOV))
    with charon_endpoint(backend, via_router=False) as (server,):
        replies = []
        for _ in range(2):
            client = rc.RatpacClient(server.endpoint, context, timeout_ms=20_000, rat_pmt_count=N_PMTS)
            client.detector_info()
            client.event(photons)
            assert client.exchanges[1].ok
            replies.append(client.exchanges[1].replies[-1])
    assert replies[0] == replies[1]
