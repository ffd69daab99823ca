"""Unit tests of the sans-IO v1 codec: envelopes, request errors and their replies, reply builders,
the client-side validators, and zero-copy decoding (including frames received by real zmq sockets).
"""

from __future__ import annotations

import random
import struct
from typing import Any

import numpy as np
import pytest
import zmq

from charon import errors
from charon.engine.base import Hits, Photons
from charon.protocol import tokens, v1

ID = b"\x00k\x8bEg"


def u32(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


def photons(event_id: int = 7, n: int = 3) -> Photons:
    rng = np.random.default_rng(n)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return Photons.from_arrays(event_id, rng.normal(size=(n, 3)), d, np.cross(d, [0, 0, 1]),
                               rng.uniform(300, 600, n), rng.uniform(0, 10, n),
                               np.where(np.arange(n) % 2, tokens.Flag.CHERENKOV, 0))


def request_frames(p: Photons) -> list[bytes]:
    return [tokens.PHOTONDATA, p.metadata(), *(bytes(v1.as_view(f)) for f in p.frames())]


def hits(n: int) -> Hits:
    p = photons(1, n)
    return Hits(np.arange(n, dtype=np.uint32), p.dx, p.dy, p.dz, p.polx, p.poly, p.polz, p.wavelength,
                p.time, p.flags | np.uint32(tokens.Flag.SURFACE_DETECT))


# ---- split_envelope ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("received", "n_envelope"),
    [
        ([], 0),
        ([ID], 1),
        ([ID, b""], 2),
        ([ID, b"", tokens.PING], 2),
        ([ID, tokens.PING], 1),
        ([ID, tokens.PING, b""], 1),
        ([ID, b"", b""], 2),
        ([ID, tokens.PHOTONDATA, b"", b"x"], 1),
        ([ID, b"", tokens.PHOTONDATA, b"", b"x"], 2),
        ([ID, tokens.RUN_BEGIN, b""], 1),
        ([ID, b"FOO"], 1),
        ([ID, b"FOO", b"", tokens.PING], 3),  # a proxied REQ (identities, delimiter, header)
        ([b"hop", ID, b"", tokens.DETECTOR_INFO], 3),
        ([ID, b"FOO", b"", b"BAR"], 1),  # no request header after the empty frame: not an envelope
        ([ID, tokens.PING + b"\x00"], 1),
    ],
)
def test_split_envelope(received: list[bytes], n_envelope: int) -> None:
    envelope, payload = v1.split_envelope(received)
    assert envelope == received[:n_envelope]
    assert payload == received[n_envelope:]


def test_split_envelope_gives_up_after_eight_hops() -> None:
    hops = [bytes([i + 1]) for i in range(9)]
    envelope, payload = v1.split_envelope([*hops, b"", tokens.PING])
    assert envelope == hops[:1]
    assert payload[-1] == tokens.PING


def test_empty_metadata_frame_is_never_a_delimiter() -> None:
    p = request_frames(photons())
    p[1] = b""
    for received in ([ID, *p], [ID, b"", *p]):
        envelope, payload = v1.split_envelope(received)
        assert envelope == received[: len(received) - len(p)]
        assert payload == p
        with pytest.raises(errors.MalformedRequest) as info:
            v1.decode_request(payload)
        assert info.value.reply() == [tokens.UNKNOWN_REQUEST]


# ---- decode_request ------------------------------------------------------------------------------


def test_decode_well_formed_requests() -> None:
    assert v1.decode_request([tokens.PING]) == v1.Ping()
    assert v1.decode_request([tokens.RUN_BEGIN, b"run.root"]) == v1.RunBegin("run.root")
    assert v1.decode_request([tokens.RUN_BEGIN]) == v1.RunBegin(None)
    assert v1.decode_request([tokens.RUN_END, b"x", b"y"]) == v1.RunEnd()
    assert v1.decode_request([tokens.DETECTOR_INFO]) == v1.DetectorInfoRequest()
    r = v1.decode_request(request_frames(photons(5, 4)))
    assert isinstance(r, v1.PhotonData)
    assert (r.event_id, r.n_photons, len(r.arrays), r.nbytes) == (5, 4, 12, 4 * 4 * 12)


def test_decode_ignores_extra_metadata_elements_and_trailing_frames() -> None:
    f = request_frames(photons(3, 2))
    f[1] = u32(3, 2, 99)
    r = v1.decode_request([*f, b"trailing", b""])
    assert isinstance(r, v1.PhotonData)
    assert (r.event_id, r.n_photons) == (3, 2)


def test_zero_photons_is_a_valid_request() -> None:
    r = v1.decode_request([tokens.PHOTONDATA, u32(9, 0), *[b""] * 12])
    assert isinstance(r, v1.PhotonData)
    assert r.n_photons == 0
    assert len(Photons.from_request(r)) == 0


@pytest.mark.parametrize(
    ("mutate", "event_id", "message"),
    [
        (lambda f: f[:13], 7, "13 frames"),
        (lambda f: f[:2], 7, "2 frames"),
        (lambda f: f[:1], None, "1 frames"),
        (lambda f: [f[0], b"", *f[2:]], None, "metadata is 0 bytes"),
        (lambda f: [f[0], b"\x07\x00\x00", *f[2:]], None, "metadata is 3 bytes"),
        (lambda f: [f[0], u32(7), *f[2:]], 7, "metadata is 4 bytes"),
        (lambda f: [f[0], f[1][:7], *f[2:]], 7, "metadata is 7 bytes"),
        (lambda f: [f[0], f[1] + b"\x00", *f[2:]], 7, "metadata is 9 bytes"),
        (lambda f: [f[0], u32(7, 4), *f[2:]], 7, "'x' is 12 bytes, expected 4 x 4"),
        (lambda f: [*f[:3], f[3][:4], *f[4:]], 7, "'y' is 4 bytes"),
        (lambda f: [*f[:2], f[2] + b"\x00", *f[3:]], 7, "'x' is 13 bytes"),
        (lambda f: [*f[:13], f[13][:-1]], 7, "'flags' is 11 bytes"),
        (lambda f: [f[0], u32(7, 0xFFFFFFFF), *f[2:]], 7, "expected 4 x 4294967295"),
    ],
)
def test_malformed_photondata(mutate: Any, event_id: int | None, message: str) -> None:
    f = mutate(request_frames(photons(7, 3)))
    with pytest.raises(errors.MalformedRequest, match=message) as info:
        v1.decode_request(f)
    exc = info.value
    assert exc.event_id == event_id
    assert exc.outcome == "malformed"
    expected = [tokens.UNKNOWN_REQUEST] if event_id is None else [tokens.SIM_FAILED, u32(event_id)]
    assert exc.reply() == expected
    assert isinstance(exc, errors.ProtocolError)


@pytest.mark.parametrize("header", [b"FOO", b"ping", b"PING\x00", b" PING", b"", b"ACK",
                                    b"SIM_COMPLETE", b"PHOTONDATAX", b"X" * 1000, tokens.PPP_READY])
def test_unknown_headers(header: bytes) -> None:
    with pytest.raises(errors.UnknownRequest) as info:
        v1.decode_request([header, b"more"])
    assert info.value.reply() == [tokens.UNKNOWN_REQUEST]
    assert info.value.outcome == "unknown_request"
    assert len(str(info.value)) < 120


def test_empty_message_is_unknown_request() -> None:
    with pytest.raises(errors.UnknownRequest):
        v1.decode_request([])


def test_undecodable_filename_is_absent() -> None:
    assert v1.decode_request([tokens.RUN_BEGIN, b"\xff\xfe"]) == v1.RunBegin(None)
    assert v1.decode_request([tokens.RUN_BEGIN, b""]) == v1.RunBegin(None)


def test_header_of_is_bounded() -> None:
    assert v1.header_of([]) == b""
    assert v1.header_of([b"Z" * 10_000]) == b"Z" * 32
    assert v1.header_of([memoryview(b"PING")]) == b"PING"


def test_read_event_id() -> None:
    assert v1.read_event_id(b"") is None
    assert v1.read_event_id(b"\x01\x02\x03") is None
    assert v1.read_event_id(u32(0xFFFFFFFF)) == 0xFFFFFFFF
    assert v1.read_event_id(u32(7, 2)) == 7


def test_random_frames_only_ever_raise_protocol_errors() -> None:
    """Fuzz: any frame list decodes or raises one of the two defined errors with a defined reply."""
    rng = random.Random(1234)
    headers = [*tokens.REQUEST_HEADERS, b"", b"X"]
    for _ in range(3000):
        n = rng.randrange(0, 17)
        f = [rng.randbytes(rng.choice([0, 1, 3, 4, 7, 8, 9, 12, 16])) for _ in range(n)]
        if f and rng.random() < 0.9:
            f[0] = rng.choice(headers)
        if len(f) > 1 and rng.random() < 0.5:
            count = rng.randrange(0, 4)
            f[1] = u32(rng.randrange(2**32), count)
            for i in range(2, len(f)):
                f[i] = rng.randbytes(4 * count + rng.choice([0, 0, 0, 1, 4]))
        try:
            v1.decode_request(f)
        except errors.ProtocolError as exc:
            reply = exc.reply()
            assert reply[0] in (tokens.UNKNOWN_REQUEST, tokens.SIM_FAILED)
            if reply[0] == tokens.SIM_FAILED:
                assert reply[1] == f[1][:4]


# ---- encoders and reply builders -----------------------------------------------------------------


def test_encode_request_round_trips() -> None:
    for frames in ([tokens.PING], [tokens.RUN_BEGIN, b"a.root"], [tokens.RUN_BEGIN, b""], [tokens.RUN_END],
                   [tokens.DETECTOR_INFO], request_frames(photons(0xFFFFFFFF, 5))):
        encoded = v1.encode_request(v1.decode_request(frames))
        assert [bytes(v1.as_view(f)) for f in encoded] == frames


def test_photondata_request_builder() -> None:
    p = photons(11, 6)
    built = v1.photondata_request(11, p.frames())
    assert [bytes(v1.as_view(f)) for f in built] == request_frames(p)
    assert v1.photondata_request(12, [b""] * 12)[1] == u32(12, 0)
    with pytest.raises(ValueError, match="12 array frames"):
        v1.photondata_request(1, [b""] * 11)
    with pytest.raises(ValueError, match="share one length"):
        v1.photondata_request(1, [b"\0" * 4] * 11 + [b""])
    with pytest.raises(ValueError, match="share one length"):
        v1.photondata_request(1, [b"\0" * 5] * 12)


def test_simple_replies() -> None:
    assert v1.ack() == [b"ACK"]
    assert v1.unknown_request() == [b"UNKNOWN_REQUEST"]
    assert v1.no_workers() == [b"NO_WORKERS"]
    assert v1.sim_failed(7) == [b"SIM_FAILED", bytes.fromhex("07000000")]
    assert v1.sim_complete_async(7) == [b"SIM_COMPLETE_ASYNC", bytes.fromhex("07000000")]
    assert errors.QueueFull("full").reply() == errors.DeadlineExceeded("late").reply() == v1.no_workers()


@pytest.mark.parametrize("event_id", [0, 1, 7, 0x7FFFFFFF, 0xFFFFFFFF])
def test_event_id_echo_is_exactly_four_le_bytes(event_id: int) -> None:
    frame = v1.event_id_frame(event_id)
    assert frame == struct.pack("<I", event_id)
    reply = v1.sim_complete(event_id, hits(2).frames())
    assert reply[1] == frame
    assert len(reply) == 12


def test_sim_complete_builder() -> None:
    h = hits(4)
    reply = v1.sim_complete(3, h.frames())
    assert reply[0] == tokens.SIM_COMPLETE
    assert {len(v1.as_view(f)) for f in reply[2:]} == {16}
    assert v1.empty_sim_complete(9) == [tokens.SIM_COMPLETE, u32(9), *[b""] * 10]
    assert v1.sim_complete(9, Hits.empty().frames()) == v1.empty_sim_complete(9)
    with pytest.raises(ValueError, match="10 hit frames"):
        v1.sim_complete(3, h.frames()[:9])
    ragged = h.frames()
    ragged[4] = b"\0" * 12
    with pytest.raises(ValueError, match="share one length"):
        v1.sim_complete(3, ragged)
    with pytest.raises(ValueError, match="share one length"):
        v1.sim_complete(3, [b"\0" * 6] * 10)


def test_detector_info_builder() -> None:
    f = [b"\0" * 8] * 4
    assert v1.detector_info(*f) == [tokens.DETECTOR_INFO, *f]
    assert v1.detector_info(b"", b"", b"", b"") == [tokens.DETECTOR_INFO, b"", b"", b"", b""]
    with pytest.raises(ValueError, match="share one length"):
        v1.detector_info(b"\0" * 16, b"\0" * 16, b"\0" * 16, b"\0" * 8)  # float64 positions
    with pytest.raises(ValueError, match="share one length"):
        v1.detector_info(b"\0" * 6, b"\0" * 6, b"\0" * 6, b"\0" * 6)


# ---- client-side validators ----------------------------------------------------------------------


def test_check_ack() -> None:
    v1.check_ack([b"ACK"])
    v1.check_ack([b"ACK", b"anything"])
    for bad in ([b"PONG"], [b"ack"], [b"NO_WORKERS"], []):
        with pytest.raises(v1.InvalidReply):
            v1.check_ack(bad)


def test_check_sim_complete_accepts_what_ratpac_accepts() -> None:
    reply = v1.sim_complete(7, hits(3).frames())
    done = v1.check_sim_complete(reply, 7)
    assert done.event_id == 7
    assert done.n_hits == 3
    assert v1.check_sim_complete(reply, 7, n_channels=3).n_hits == 3
    assert v1.check_sim_complete([*reply, b"extra"], 7).n_hits == 3  # > 11 frames is enough
    assert v1.check_sim_complete(v1.empty_sim_complete(7), 7, n_channels=1).n_hits == 0
    long_echo = [reply[0], u32(7, 99), *reply[2:]]  # the client compares the first 4 bytes only
    assert v1.check_sim_complete(long_echo, 7).event_id == 7


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r[:11], "11 frames"),
        (lambda r: r[:2], "2 frames"),
        (lambda r: [r[0], u32(8), *r[2:]], "echoes 08000000 for event 7"),
        (lambda r: [r[0], b"\x07\x00", *r[2:]], "echoes 0700 for event 7"),
        (lambda r: [r[0], b"", *r[2:]], "echoes  for event 7"),
        (lambda r: [tokens.SIM_FAILED, u32(7)], "got b'SIM_FAILED'"),
        (lambda r: [tokens.NO_WORKERS], "got b'NO_WORKERS'"),
        (lambda r: [tokens.SIM_COMPLETE_ASYNC, u32(7)], "got b'SIM_COMPLETE_ASYNC'"),
        (lambda r: [*r[:3], r[3][:4], *r[4:]], "differ in length"),
        (lambda r: [*r[:11], b""], "differ in length"),
    ],
)
def test_check_sim_complete_rejects(mutate: Any, message: str) -> None:
    reply = [bytes(v1.as_view(f)) for f in v1.sim_complete(7, hits(3).frames())]
    with pytest.raises(v1.InvalidReply, match=message):
        v1.check_sim_complete(mutate(reply), 7)


def test_check_sim_complete_channel_bound() -> None:
    reply = v1.sim_complete(7, hits(3).frames())  # channels 0, 1, 2
    with pytest.raises(v1.InvalidReply, match="channel 2 >= 2"):
        v1.check_sim_complete(reply, 7, n_channels=2)


def test_check_sim_complete_async() -> None:
    assert v1.check_sim_complete_async(v1.sim_complete_async(7), 7) == 7
    assert v1.check_sim_complete_async(v1.sim_complete_async(0xFFFFFFFF), -1) == 0xFFFFFFFF
    for bad in ([*v1.sim_complete_async(7), b""], v1.sim_complete_async(8), [tokens.SIM_COMPLETE_ASYNC],
                v1.sim_failed(7)):
        with pytest.raises(v1.InvalidReply):
            v1.check_sim_complete_async(bad, 7)


def test_check_detector_info() -> None:
    f32 = np.array([1.5, -1000.0], "<f4").tobytes()
    reply = [tokens.DETECTOR_INFO, f32, f32, f32, np.array([1, -1], "<i4").tobytes()]
    assert v1.check_detector_info(reply).n_channels == 2
    assert v1.check_detector_info([*reply, b"extra"]).n_channels == 2
    with pytest.raises(v1.InvalidReply):
        v1.check_detector_info(reply[:4])
    with pytest.raises(v1.InvalidReply):
        v1.check_detector_info([b"DETECTOR_INFO_", *reply[1:]])
    f64 = np.array([1.5, -1000.0], "<f8").tobytes()
    with pytest.raises(v1.InvalidReply, match="differ"):
        v1.check_detector_info([tokens.DETECTOR_INFO, f64, f64, f64, reply[4]])


# ---- zero copy -----------------------------------------------------------------------------------


def test_photon_arrays_are_views_of_the_received_buffer() -> None:
    p = photons(7, 50)
    f = request_frames(p)
    buffers = [bytearray(x) for x in f]
    request = v1.decode_request([memoryview(b) for b in buffers])
    assert isinstance(request, v1.PhotonData)
    view = Photons.from_request(request)
    for name, buf in zip(tokens.PHOTON_FIELDS, buffers[2:], strict=True):
        arr = getattr(view, name)
        assert np.shares_memory(arr, np.frombuffer(buf, np.uint8)), name
    # A change in the source buffer shows through: nothing was copied.
    buffers[2][0:4] = np.float32(123.0).tobytes()
    assert view.x[0] == np.float32(123.0)
    np.testing.assert_array_equal(view.y, p.y)


def test_photon_arrays_are_views_of_zmq_frames_received_without_copy(context: zmq.Context[Any]) -> None:
    p = photons(7, 1000)
    a, b = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    try:
        a.bind("inproc://zero-copy")
        b.connect("inproc://zero-copy")
        a.send_multipart(request_frames(p))
        assert b.poll(5000)
        received = b.recv_multipart(copy=False)
        buffers = [f.buffer for f in received]
        request = v1.decode_request(buffers)
        assert isinstance(request, v1.PhotonData)
        view = Photons.from_request(request)
        for name, buf in zip(tokens.PHOTON_FIELDS, buffers[2:], strict=True):
            assert np.shares_memory(getattr(view, name), np.frombuffer(buf, np.uint8)), name
        np.testing.assert_array_equal(view.wavelength, p.wavelength)
        np.testing.assert_array_equal(view.flags, p.flags)
    finally:
        a.close(linger=0)
        b.close(linger=0)


def test_hit_frames_are_views_of_the_hit_arrays() -> None:
    h = hits(20)
    reply = v1.sim_complete(1, h.frames())
    for name, frame in zip(tokens.HIT_FIELDS, reply[2:], strict=True):
        assert np.shares_memory(np.frombuffer(frame, np.uint8), getattr(h, name)), name
    back = Hits.from_frames(v1.check_sim_complete(reply, 1).hit_frames)
    for name in tokens.HIT_FIELDS:
        np.testing.assert_array_equal(getattr(back, name), getattr(h, name))
