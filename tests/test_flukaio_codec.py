"""FlukaIO codec against the bytes captured from the real C library, and every malformed case."""

from __future__ import annotations

import hashlib
import json
import random
import struct
from pathlib import Path

import pytest

from charon.flukaio import codec, handshake
from charon.flukaio.codec import (
    Conf,
    DbleVar,
    End,
    Eob,
    FlukaIOProtocolError,
    HandshakeError,
    Hsk,
    IntVar,
    Ipt,
    Layout,
    Particle,
    ParticleBlock,
    StreamDecoder,
)
from charon.flukaio.vectors import load_stream, parse_hex

VECTORS = Path(__file__).resolve().parents[1] / "proto-spec" / "vectors" / "flukaio"
INDEX = json.loads((VECTORS / "index.json").read_text())
ALL = [v["file"] for v in INDEX["vectors"]]
LAYOUT_OF = {v["file"]: Layout[v["layout"].upper()] for v in INDEX["vectors"]}

SAMPLE = {"x": -0.6319439221, "y": 1.147679085, "z": 1.0, "tx": -3.856529999e-5, "ty": -2.004572999e-6,
              "tz": 5.004483739e-6, "m": 450.0, "pc": 4520.0, "t": 0.005, "weight": 1.0}


def messages(name: str) -> list[tuple[str, bytes]]:
    return parse_hex((VECTORS / name).read_text())


@pytest.mark.parametrize("name", ALL)
def test_transcription_matches_reference_sha256(name: str) -> None:
    entry = next(v for v in INDEX["vectors"] if v["file"] == name)
    data = load_stream(VECTORS / name)
    assert len(data) == entry["bytes"]
    digest = hashlib.sha256(data).hexdigest()
    assert digest == entry["sha256"]
    if entry["reference_sha256"] is not None:
        assert digest == entry["reference_sha256"]


def test_reference_sizes_of_captured_sessions() -> None:
    sizes = {name: len(load_stream(VECTORS / name)) for name in ALL}
    assert sizes["legacy_c_3x2.c2s.hex"] == 608
    assert sizes["legacy_c_3x2.s2c.hex"] == 590
    assert sizes["legacy_fortran_3x2.c2s.hex"] == 630
    assert sizes["current_c_3x2.c2s.hex"] == 764
    assert sizes["current_c_3x2.s2c.hex"] == 746


@pytest.mark.parametrize("name", ALL)
def test_every_captured_message_decodes_and_reencodes_byte_exactly(name: str) -> None:
    layout = LAYOUT_OF[name]
    for type_name, raw in messages(name):
        message = codec.decode(raw, layout)
        assert codec.message_type(message).name == type_name
        assert codec.encode(message, layout) == raw


@pytest.mark.parametrize("name", ALL)
def test_stream_decoder_over_random_fragments(name: str) -> None:
    expected = [codec.decode(raw, LAYOUT_OF[name]) for _, raw in messages(name)]
    stream = load_stream(VECTORS / name)
    rng = random.Random(7)
    for _ in range(20):
        decoder = StreamDecoder()
        got: list[object] = []
        pos = 0
        while pos < len(stream):
            step = rng.choice([1, 1, 2, 3, 5, 17, 64, 200])
            got += decoder.feed(stream[pos:pos + step])
            pos += step
        assert got == expected
        assert decoder.buffered == 0
        assert decoder.layout is LAYOUT_OF[name]


def test_byte_by_byte_and_block_mode_keep_the_particle_bytes() -> None:
    stream = load_stream(VECTORS / "current_c_3x2.c2s.hex")
    decoder = StreamDecoder(blocks=True)
    out = []
    for i in range(len(stream)):
        out += decoder.feed(stream[i:i + 1])
    # one byte at a time: each particle is its own block
    parts = [m for m in out if isinstance(m, ParticleBlock)]
    assert len(parts) == 6
    assert all(p.count == 1 and p.layout is Layout.CURRENT for p in parts)
    whole = StreamDecoder(blocks=True).feed(stream)
    blocks = [m for m in whole if isinstance(m, ParticleBlock)]
    assert [b.count for b in blocks] == [3, 3]
    raw = messages("current_c_3x2.c2s.hex")
    assert blocks[0].data == b"".join(r for t, r in raw[2:5])
    assert [type(m).__name__ for m in whole] == [
        "Hsk", "Ipt", "ParticleBlock", "Eob", "Ipt", "ParticleBlock", "Eob", "End"]


def test_captured_field_values_legacy() -> None:
    raw = messages("legacy_c_3x2.c2s.hex")
    assert codec.decode(raw[0][1]) == Hsk(3, 1, 123141)
    assert codec.decode(raw[1][1]) == Ipt(1, 0)
    p = codec.decode(raw[2][1], Layout.LEGACY)
    assert p == Particle(id=1, gen=1, aa=1, zz=1, **SAMPLE)
    fortran = messages("legacy_fortran_3x2.c2s.hex")
    assert codec.decode(fortran[1][1]) == IntVar(codec.N_NPART, 56000)
    assert codec.decode(fortran[2][1]) == DbleVar(codec.N_BRHONO, 1.2345)
    tail = messages("legacy_full.tail.hex")
    assert codec.decode(tail[0][1], Layout.LEGACY).id == 20000


def test_captured_marker_particles_match_field_tables() -> None:
    legacy = messages("legacy_api_driver.c2s.hex")
    assert codec.decode(legacy[1][1]) == IntVar(0, 0x12345)
    assert codec.decode(legacy[2][1]) == DbleVar(0, 1.5)
    assert codec.decode(legacy[3][1]) == Ipt(0x01020304, 0x0506)
    marker = codec.decode(legacy[4][1], Layout.LEGACY)
    assert marker == Particle(id=0x04030201, gen=0x08070605, aa=0x0B0A, zz=0x0D0C, x=1.0, y=2.0, z=3.0,
                              tx=4.0, ty=5.0, tz=6.0, m=7.0, pc=8.0, t=9.0, weight=13.0)
    current = messages("current_api_driver.c2s.hex")
    marker = codec.decode(current[4][1], Layout.CURRENT)
    assert marker == Particle(id=0x04030201, gen=0x08070605, x=1.0, y=2.0, z=3.0, tx=4.0, ty=5.0, tz=6.0,
                              m=7.0, pc=8.0, t=9.0, sx=10.0, sy=11.0, sz=12.0, pdgid=0x0D0C0B0A,
                              q=0x0F0E, weight=13.0)
    proton = codec.decode(current[5][1], Layout.CURRENT)
    assert isinstance(proton, Particle)
    assert (proton.pdgid, proton.q, proton.m) == (2212, 1, 0.938272)


def test_encoders_of_documented_bytes() -> None:
    assert codec.encode(Ipt(0x01020304, 0x0506)) == bytes.fromhex("090005040302010605")
    assert codec.encode(Hsk()) == bytes.fromhex("0b00060300010005e10100")
    assert codec.encode(Eob()) == b"\x03\x00\x02"
    assert codec.encode(End()) == b"\x03\x00\x03"
    assert codec.encode(Conf()) == b"\x03\x00\x04"
    assert len(codec.encode(Particle(), Layout.LEGACY)) == 95
    assert len(codec.encode(Particle(), Layout.CURRENT)) == 121
    with pytest.raises(struct.error):
        codec.encode(Ipt(1, 70000))


MALFORMED = [
    ("zero_size", b"\x00\x00\x01"),
    ("short_size", b"\x01\x00\x02"),
    ("short_size", b"\x02\x00\x02"),
    ("oversize", struct.pack("<HB", 20000, 1)),
    ("oversize", struct.pack("<HB", 10241, 2)),
    ("unknown_type", b"\x03\x00\x09"),
    ("unknown_type", b"\x03\x00\x00"),
    ("unknown_type", b"\x03\x00\xff"),
    ("size_mismatch", b"\x00\x03\x02"),  # big-endian EOB header: size 768
    ("size_mismatch", b"\x04\x00\x02"),
    ("size_mismatch", struct.pack("<HB", 12, 6)),
    ("size_mismatch", struct.pack("<HB", 8, 5)),
    ("particle_size", struct.pack("<HB", 23, 1)),
    ("particle_size", struct.pack("<HB", 200, 1)),
]


@pytest.mark.parametrize(("reason", "header"), MALFORMED)
def test_malformed_header_fails_on_its_three_bytes(reason: str, header: bytes) -> None:
    decoder = StreamDecoder()
    assert decoder.feed(codec.encode(Hsk())) == [Hsk()]
    with pytest.raises(FlukaIOProtocolError) as info:
        decoder.feed(header)  # no payload needed: rejected at once, never waits for it
    assert info.value.reason == reason
    assert str(info.value)
    with pytest.raises(FlukaIOProtocolError):
        decoder.feed(b"\x03\x00\x02")  # the stream cannot be resynchronised
    assert decoder.buffered == 0


def test_malformed_header_split_over_fragments() -> None:
    decoder = StreamDecoder()
    assert decoder.feed(b"\x00") == []
    assert decoder.feed(b"\x00") == []
    with pytest.raises(FlukaIOProtocolError, match="size 0"):
        decoder.feed(b"\x02")


def test_messages_before_a_malformed_one_are_not_lost_in_separate_feeds() -> None:
    decoder = StreamDecoder()
    assert decoder.feed(b"\x03\x00\x04\x03\x00\x02") == [Conf(), Eob()]
    with pytest.raises(FlukaIOProtocolError):
        decoder.feed(b"\x03\x00\x09\x03\x00\x02")


def test_layout_is_fixed_per_connection() -> None:
    legacy = codec.encode(Particle(id=1), Layout.LEGACY)
    current = codec.encode(Particle(id=1), Layout.CURRENT)
    auto = StreamDecoder()
    assert auto.feed(legacy) == [Particle(id=1)]
    assert auto.layout is Layout.LEGACY
    with pytest.raises(FlukaIOProtocolError) as info:
        auto.feed(current)
    assert info.value.reason == "layout_mismatch"
    fixed = StreamDecoder(Layout.CURRENT)
    with pytest.raises(FlukaIOProtocolError) as info:
        fixed.feed(legacy[:3])
    assert info.value.reason == "layout_mismatch"
    assert Layout.from_setting("auto") is None
    assert Layout.from_setting("legacy") is Layout.LEGACY


def test_decode_requires_exactly_one_message() -> None:
    with pytest.raises(FlukaIOProtocolError):
        codec.decode(b"\x03\x00")
    with pytest.raises(FlukaIOProtocolError):
        codec.decode(b"\x03\x00\x02\x00")


def test_memory_is_bounded_by_one_message() -> None:
    decoder = StreamDecoder()
    stream = load_stream(VECTORS / "current_c_3x2.c2s.hex")
    for cut in range(len(stream)):
        d = StreamDecoder()
        d.feed(stream[:cut])
        assert d.buffered < Layout.CURRENT.value
    assert decoder.buffered == 0


def test_eof_in_the_middle_of_a_message() -> None:
    decoder = StreamDecoder()
    decoder.feed(b"\x0b\x00\x06\x03")
    with pytest.raises(FlukaIOProtocolError) as info:
        decoder.check_eof()
    assert info.value.reason == "truncated"
    StreamDecoder().check_eof()


def test_handshake_rules() -> None:
    assert handshake.answer(Hsk(3, 1, 0xDEADBEEF)) == Hsk(3, 1, 0xDEADBEEF)
    assert handshake.answer(Hsk(3, 99, 42)) == Hsk(3, 1, 42)
    for bad, reason in [(Hsk(4, 0, 42), "version"), (Hsk(2, 9, 42), "version"), (Eob(), "handshake")]:
        with pytest.raises(HandshakeError) as info:
            handshake.answer(bad)
        assert info.value.reason == reason
    sent = Hsk(3, 1, 123141)
    assert handshake.check_reply(sent, Hsk(3, 7, 123141)).minor == 7
    for bad, reason in [(Hsk(2, 1, 123141), "version"), (Hsk(3, 1, 123142), "key"), (Eob(), "handshake")]:
        with pytest.raises(HandshakeError) as info:
            handshake.check_reply(sent, bad)
        assert info.value.reason == reason


def test_reason_set_is_bounded_and_named() -> None:
    assert len(set(codec.REASONS)) == len(codec.REASONS) <= 16
    assert {reason for reason, _ in MALFORMED} <= set(codec.REASONS)
