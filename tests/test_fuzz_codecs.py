"""Property-based fuzzing of every codec (v1, v2, CHARONW1, FlukaIO): mutated valid messages (``tests/mutations.py``) go in, and
only a decoded value or the codec's defined error may come out; the services' cores answer with a
defined reply (or, for a request the v1 policy drops, nothing) and keep their invariants.

Counts are modest (hundreds to a thousand examples per property, a few seconds in all) so ``make test`` stays quick; the soak
script ``bench/soak.py`` sends hundreds of thousands of the same mutations over real sockets.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charon.errors import InvalidReply, MalformedRequest, RequestTooLarge, UnknownRequest, WorkerProtocolError
from charon.flukaio import codec
from charon.flukaio.codec import FlukaIOProtocolError, Layout, StreamDecoder
from charon.protocol import tokens, v1, v2
from charon.protocol import worker as wp
from charon.router.state import RouterState, ToClient, ToWorker
from charon.service import RequestHandler
from charon.settings import HeartbeatSettings, LimitsSettings, RouterSettings
from tests import inproc, mutations
from tests.test_flukaio_codec import ALL as FLUKAIO_VECTORS
from tests.test_flukaio_codec import LAYOUT_OF, messages

FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RNG = st.randoms(use_true_random=False)
#: Every header a v1 client may receive from charon.
V1_REPLIES = {tokens.ACK, tokens.DETECTOR_INFO, tokens.SIM_COMPLETE, tokens.SIM_FAILED, tokens.NO_WORKERS,
              tokens.UNKNOWN_REQUEST}
LIMITS = LimitsSettings(max_request_bytes=1024**2)
T = TypeVar("T")


def attempt(call: Callable[[], T], *allowed: type[Exception]) -> T | Exception:
    """``call()``, or the exception it raised if that is one of ``allowed`` (others propagate)."""
    try:
        return call()
    except allowed as exc:
        return exc


@FUZZ
@given(rng=RNG)
def test_v1_request_decoder_returns_a_request_or_its_defined_error(rng: random.Random) -> None:
    payload = mutations.mutate(rng, mutations.v1_requests(rng))
    if isinstance(attempt(lambda: v1.check_size(payload, LIMITS.max_request_bytes, LIMITS.max_request_photons),
                          RequestTooLarge), RequestTooLarge):
        return
    request = attempt(lambda: v1.decode_request(payload), UnknownRequest, MalformedRequest)
    if isinstance(request, (UnknownRequest, MalformedRequest)):
        assert v1.header_of(v1.error_reply(request)) in {tokens.UNKNOWN_REQUEST, tokens.SIM_FAILED}
    elif isinstance(request, v1.PhotonData):
        assert all(len(a) == 4 * request.n_photons for a in request.arrays)
        assert request.n_photons <= LIMITS.max_request_photons


@FUZZ
@given(rng=RNG)
def test_v1_reply_checks_accept_or_raise_invalid_reply(rng: random.Random) -> None:
    reply, event_id = mutations.v1_replies(rng)
    payload = mutations.mutate(rng, reply)
    attempt(lambda: v1.check_ack(payload), InvalidReply)
    attempt(lambda: v1.check_detector_info(payload), InvalidReply)
    attempt(lambda: v1.check_sim_complete_async(payload, event_id), InvalidReply)
    result = attempt(lambda: v1.check_sim_complete(payload, event_id, n_channels=2), InvalidReply)
    if not isinstance(result, InvalidReply):
        assert len({len(v) for v in result.hit_frames}) == 1
        assert all(c < 2 for c in struct.unpack(f"<{len(result.hit_frames[0]) // 4}I", result.hit_frames[0]))


@FUZZ
@given(rng=RNG)
def test_worker_protocol_decoders_return_a_message_or_worker_protocol_error(rng: random.Random) -> None:
    from_worker = mutations.mutate(rng, mutations.from_worker(rng))
    from_router = mutations.mutate(rng, mutations.from_router(rng))
    attempt(lambda: wp.decode_from_worker(from_worker), WorkerProtocolError)
    attempt(lambda: wp.decode_from_router(from_router), WorkerProtocolError)


@FUZZ
@given(rng=RNG)
def test_v2_decoders_return_a_message_or_their_defined_error(rng: random.Random) -> None:
    """Client side of the server (Rejected, answered with ERROR frames) and server side of the client
    (InvalidReply)."""
    request = mutations.mutate(rng, mutations.v2_from_client(rng))
    decoded = attempt(lambda: v2.decode_from_client(request), v2.Rejected)
    if isinstance(decoded, v2.Rejected):
        for reply in v2.rejection(decoded):
            assert v2.is_v2(reply)
    elif isinstance(decoded, v2.Simulate):
        total = sum(e.n_photons for e in decoded.events)
        assert all(len(a) == 4 * total for a in decoded.arrays)
    reply = mutations.mutate(rng, mutations.v2_from_server(rng))
    attempt(lambda: v2.decode_from_server(reply), InvalidReply)


def _state() -> RouterState:
    state = RouterState(RouterSettings(queue_max_requests=4, dedup_max_bytes=64 * 1024, execution_deadline_s=5.0,
                                       v1_failure_replies="explicit"),
                        HeartbeatSettings(), limits=LIMITS)
    state.on_worker(b"w", wp.ready(mutations.FP, 2, "fuzz", mutations.INFO), 0.0)
    return state


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rng=RNG)
def test_router_core_answers_fuzzed_clients_and_workers_and_keeps_its_invariants(rng: random.Random) -> None:
    """Client requests (v1 and v2) and worker messages, mutated, into one router state: only
    defined replies come out (a v2 message gets a v2 one), every counter stays true, nothing raises."""
    state = _state()
    now = 0.0
    clients = 0
    for _ in range(12):
        now += rng.choice([0.0, 0.5, 3.0])
        if rng.random() < 0.6:
            clients += 1
            seed = mutations.v2_from_client(rng) if rng.random() < 0.2 else mutations.v1_requests(rng)
            actions = state.on_client([f"c{clients}".encode(), b""], mutations.mutate(rng, seed), now)
        else:
            actions = state.on_worker(rng.choice([b"w", b"x"]), mutations.mutate(rng, mutations.from_worker(rng)), now)
        actions += state.on_tick(now)
        for action in actions:
            assert isinstance(action, (ToClient, ToWorker))
            if isinstance(action, ToClient):
                assert bytes(v1.as_view(action.frames[2])) in V1_REPLIES | {v2.MAGIC}, action.frames[:3]
        state.check_invariants()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rng=RNG)
def test_serve_handler_answers_every_fuzzed_request_with_a_defined_reply(rng: random.Random) -> None:
    handler = RequestHandler(_ECHO)
    payload = mutations.mutate(rng, mutations.v1_requests(rng))
    answer = handler.handle(payload)
    assert v1.header_of(answer.reply) in V1_REPLIES


_ECHO = inproc.echo()


def _flukaio_stream(rng: random.Random) -> tuple[bytes, Layout]:
    name = rng.choice(FLUKAIO_VECTORS)
    return b"".join(data for _, data in messages(name)), LAYOUT_OF[name]


@FUZZ
@given(rng=RNG)
def test_flukaio_decoders_return_messages_or_a_protocol_error(rng: random.Random) -> None:
    stream, layout = _flukaio_stream(rng)
    data = mutations.mutate_bytes(rng, stream)
    decoder = StreamDecoder(rng.choice([None, layout]), blocks=rng.random() < 0.5)

    def feed_all() -> None:
        pos = 0
        while pos < len(data):
            step = rng.choice([1, 3, 17, 121, 4096])
            decoder.feed(data[pos : pos + step])
            pos += step

    failed = attempt(feed_all, FlukaIOProtocolError)
    if isinstance(failed, FlukaIOProtocolError):
        assert failed.reason  # a bounded, named reason
        again = attempt(lambda: decoder.feed(b"\0"), FlukaIOProtocolError)
        assert again is failed  # a failed stream stays failed, with the same error
    else:
        at_eof = attempt(decoder.check_eof, FlukaIOProtocolError)
        assert at_eof is None or at_eof.reason == "truncated"
    one = data[: rng.randrange(len(data) + 1)]
    attempt(lambda: codec.decode(one, rng.choice([None, layout])), FlukaIOProtocolError)

@FUZZ
@given(rng=RNG, n=st.integers(0, 3))
def test_flukaio_header_check_is_total(rng: random.Random, n: int) -> None:
    size, type_code = struct.unpack("<HB", rng.randbytes(3)) if n else (rng.randrange(2**16), rng.randrange(256))
    attempt(lambda: codec.check_header(size, type_code, rng.choice([None, Layout.CURRENT, Layout.LEGACY])),
            FlukaIOProtocolError)
