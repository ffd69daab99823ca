"""The CHARONW1 router <-> worker codec, including ChAR0N's legacy one-byte framing."""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest

from charon.protocol import tokens
from charon.protocol import worker as wp

FP = "0123456789abcdef" * 4
INFO = [struct.pack("<f", 1.0), struct.pack("<f", 2.0), struct.pack("<f", 3.0), struct.pack("<i", 7)]


def test_ready_round_trip() -> None:
    frames = wp.ready(FP, 4, "echo", INFO)
    assert frames[:2] == [b"CHARONW1", b"\x01"]
    msg = wp.decode_from_worker(frames)
    assert msg == wp.Ready(FP, 4, "echo", tuple(INFO))  # type: ignore[arg-type]


def test_reply_round_trip_keeps_frames_as_sent() -> None:
    body = [tokens.SIM_COMPLETE, b"\x07\0\0\0", *([b""] * 10)]
    msg = wp.decode_from_worker(wp.reply(2**40 + 3, body))
    assert isinstance(msg, wp.Reply)
    assert msg.token == 2**40 + 3
    assert msg.payload == body
    assert not msg.legacy


def test_request_round_trip() -> None:
    msg = wp.decode_from_router(wp.request(9, [tokens.PING]))
    assert msg == wp.Request(9, [tokens.PING])


@pytest.mark.parametrize("reason", [wp.REASON_DRAIN, wp.REASON_EXIT])
def test_disconnect_from_worker(reason: bytes) -> None:
    assert wp.decode_from_worker(wp.disconnect(reason)) == wp.Disconnect(reason)


def test_heartbeats_both_ways() -> None:
    assert wp.decode_from_worker(wp.heartbeat()) == wp.Heartbeat()
    assert wp.decode_from_router(wp.heartbeat()) == wp.Heartbeat()
    assert wp.decode_from_router(wp.disconnect(wp.REASON_FINGERPRINT)) == wp.Disconnect(b"fingerprint")


def test_legacy_char0n_framing() -> None:
    assert wp.decode_from_worker([b"\x01"]) == wp.Ready("", 1, "char0n", None, legacy=True)
    assert wp.decode_from_worker([b"\x02"]) == wp.Heartbeat(legacy=True)
    req = wp.legacy_request(5, [tokens.PHOTONDATA, b"meta"])
    assert req[1:] == [b"", tokens.PHOTONDATA, b"meta"]
    msg = wp.decode_from_worker([req[0], b"", tokens.SIM_FAILED, b"\x05\0\0\0"])
    assert msg == wp.Reply(5, [tokens.SIM_FAILED, b"\x05\0\0\0"], legacy=True)
    assert wp.legacy_heartbeat() == [b"\x02"]


@pytest.mark.parametrize("frames", [
    [],
    [b"\x09"],
    [b"CHARONW1"],
    [b"CHARONW2", b"\x02"],
    [b"CHARONW1", b"\x02\x02"],
    [b"CHARONW1", b"\x03", b"\0" * 8, b"PING"],  # REQUEST is router -> worker only
    [b"CHARONW1", b"\x04", b"short", b"ACK"],
    [b"CHARONW1", b"\x04", b"\0" * 8],
    wp.ready(FP, 1, "echo", INFO)[:8],
    [*wp.ready(FP, 1, "echo", INFO)[:2], b"A" * 64, *wp.ready(FP, 1, "echo", INFO)[3:]],
    [*wp.ready(FP, 1, "echo", INFO)[:3], b"\0\0\0\0", *wp.ready(FP, 1, "echo", INFO)[4:]],
    [*wp.ready(FP, 1, "echo", INFO)[:5], b"\0" * 8, *INFO[1:]],
    [b"\xff" * 8, b"x", b"y"],
    [b"short-token", b"", b"SIM_COMPLETE"],
])
def test_invalid_worker_messages_raise_the_codec_error(frames: list[bytes]) -> None:
    with pytest.raises(wp.WorkerProtocolError):
        wp.decode_from_worker(frames)


@pytest.mark.parametrize("frames", [[b"CHARONW1", b"\x01"], [b"x"], [b"CHARONW1", b"\x03", b"\0" * 8]])
def test_invalid_router_messages_raise_the_codec_error(frames: list[bytes]) -> None:
    with pytest.raises(wp.WorkerProtocolError):
        wp.decode_from_router(frames)


def test_router_import_graph_has_no_numpy() -> None:
    code = ("import sys, charon.router.driver, charon.cli; "
            "assert 'numpy' not in sys.modules, sorted(m for m in sys.modules if 'numpy' in m)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
