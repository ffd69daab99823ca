"""Hostile inputs from valid ones: seed messages of every codec and the mutations applied to them.

Shared by the property-based fuzzers (``tests/test_fuzz_codecs.py``, driven by hypothesis through
a seeded :class:`random.Random`) and the soak script (``bench/soak.py``), so both send the same
kinds of damage: flipped and random bytes, truncated, extended, dropped, duplicated and swapped
frames, foreign headers, and counts that disagree with the lengths that follow them.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Final

from charon.protocol import tokens, v1, v2
from charon.protocol import worker as wp

Frames = list[bytes]

FP: Final = "c" * 64
INFO: Final = [struct.pack("<2f", 1.0, 2.0), struct.pack("<2f", 3.0, 4.0), struct.pack("<2f", 5.0, 6.0),
               struct.pack("<2i", 1, 1)]
#: Every v1 header and CHARONW1 command byte: mutations often land on a real one.
HEADERS: Final = [b"CHARON/2", tokens.PHOTONDATA, tokens.PING, tokens.RUN_BEGIN, tokens.RUN_END, tokens.DETECTOR_INFO,
                  tokens.SIM_COMPLETE, tokens.SIM_COMPLETE_ASYNC, tokens.SIM_FAILED, tokens.ACK,
                  tokens.NO_WORKERS, tokens.UNKNOWN_REQUEST, b"", b"\x00", b"\xff" * 40]


def photondata(event_id: int, n: int) -> Frames:
    arrays = [struct.pack("<f", 1.0 + i) * n for i in range(11)] + [struct.pack("<I", 0x400) * n]
    return [tokens.PHOTONDATA, struct.pack("<II", event_id, n), *arrays]


def v1_requests(rng: random.Random) -> Frames:
    """A valid v1 request, as ratpac-two sends them (PHOTONDATA most often)."""
    choice = rng.randrange(6)
    if choice == 0:
        return [tokens.PING]
    if choice == 1:
        return [tokens.RUN_BEGIN, b"run.root"]
    if choice == 2:
        return [tokens.RUN_END]
    if choice == 3:
        return [tokens.DETECTOR_INFO]
    return photondata(rng.randrange(2**32), rng.choice([0, 1, 3, 17, 100]))


def v1_replies(rng: random.Random) -> tuple[Frames, int]:
    """A valid v1 reply and the event id it answers."""
    event_id = rng.randrange(2**32)
    choice = rng.randrange(4)
    if choice == 0:
        return [bytes(f) for f in v1.ack()], event_id
    if choice == 1:
        return [tokens.DETECTOR_INFO, *INFO], event_id
    if choice == 2:
        return [bytes(f) for f in v1.sim_complete_async(event_id)], event_id
    n = rng.choice([0, 1, 5])
    return [bytes(f) for f in v1.sim_complete(event_id, [struct.pack("<I", i % 2) * n for i in range(10)])], event_id


def from_worker(rng: random.Random) -> Frames:
    """A valid CHARONW1 (or ChAR0N) message a worker sends."""
    choice = rng.randrange(6)
    if choice == 0:
        return [bytes(f) for f in wp.ready(FP, rng.randint(1, 4), "fuzz", INFO)]
    if choice == 1:
        return [bytes(f) for f in wp.heartbeat()]
    if choice == 2:
        return [bytes(f) for f in wp.disconnect(rng.choice([wp.REASON_DRAIN, wp.REASON_EXIT]))]
    if choice == 3:
        return [tokens.PPP_READY]
    reply, _ = v1_replies(rng)
    return [bytes(f) for f in wp.reply(rng.randrange(1, 50), reply)]


def from_router(rng: random.Random) -> Frames:
    """A valid CHARONW1 message the router sends."""
    choice = rng.randrange(3)
    if choice == 0:
        return [bytes(f) for f in wp.heartbeat()]
    if choice == 1:
        return [bytes(f) for f in wp.disconnect(wp.REASON_UNKNOWN)]
    return [bytes(f) for f in wp.request(rng.randrange(2**64), v1_requests(rng))]


def v2_from_client(rng: random.Random) -> Frames:
    """A valid protocol v2 HELLO or SIMULATE (a few events)."""
    if rng.random() < 0.3:
        return [bytes(v1.as_view(f)) for f in v2.hello(v2.Hello(seed=rng.randrange(2**32), client="fuzz"))]
    events = [v2.Event(tag + 1, rng.randrange(2**32), rng.choice([0, 1, 3])) for tag in range(rng.randint(1, 3))]
    total = sum(e.n_photons for e in events)
    arrays = [struct.pack("<f", 1.0 + i) * total for i in range(11)] + [struct.pack("<I", 0x400) * total]
    return [bytes(v1.as_view(f)) for f in v2.simulate(events, arrays)]


def v2_from_server(rng: random.Random) -> Frames:
    """A valid protocol v2 WELCOME, RESULT or ERROR."""
    choice = rng.randrange(3)
    if choice == 0:
        w = v2.Welcome("fuzz", FP, FP, 2, 16, 4, 1000, False, 1)
        return [bytes(v1.as_view(f)) for f in v2.welcome(w)]
    if choice == 1:
        n = rng.choice([0, 1, 4])
        hits = [struct.pack("<I", i % 2) * n for i in range(10)]
        return [bytes(v1.as_view(f)) for f in v2.result(rng.randrange(1, 9), rng.randrange(2**32), hits)]
    return [bytes(v1.as_view(f)) for f in v2.error(rng.randrange(1, 9), 7, v2.ErrorCode.MALFORMED, "fuzz")]


def _flip(rng: random.Random, frames: Frames) -> None:
    i = rng.randrange(len(frames))
    if frames[i]:
        b = bytearray(frames[i])
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        frames[i] = bytes(b)


def _random_bytes(rng: random.Random, frames: Frames) -> None:
    i = rng.randrange(len(frames))
    frames[i] = rng.randbytes(rng.choice([0, 1, 3, 4, 7, 8, 12, 64]))


def _truncate(rng: random.Random, frames: Frames) -> None:
    i = rng.randrange(len(frames))
    frames[i] = frames[i][: rng.randrange(len(frames[i]) + 1)]


def _extend(rng: random.Random, frames: Frames) -> None:
    i = rng.randrange(len(frames))
    frames[i] = frames[i] + rng.randbytes(rng.choice([1, 3, 4, 8]))


def _drop(rng: random.Random, frames: Frames) -> None:
    del frames[rng.randrange(len(frames))]


def _duplicate(rng: random.Random, frames: Frames) -> None:
    i = rng.randrange(len(frames))
    frames.insert(i, frames[i])


def _swap(rng: random.Random, frames: Frames) -> None:
    i, j = rng.randrange(len(frames)), rng.randrange(len(frames))
    frames[i], frames[j] = frames[j], frames[i]


def _header(rng: random.Random, frames: Frames) -> None:
    frames[0] = rng.choice(HEADERS)


def _count(rng: random.Random, frames: Frames) -> None:
    """A count field (u32 at offset 4 of frame 1, as in PHOTONDATA metadata) that lies."""
    if len(frames) > 1 and len(frames[1]) >= 8:
        b = bytearray(frames[1])
        b[4:8] = struct.pack("<I", rng.choice([0, 1, 2**31, 2**32 - 1, rng.randrange(2**32)]))
        frames[1] = bytes(b)


MUTATIONS: Final[list[Callable[[random.Random, Frames], None]]] = [
    _flip, _random_bytes, _truncate, _extend, _drop, _duplicate, _swap, _header, _count,
]


def mutate(rng: random.Random, frames: Frames, max_mutations: int = 3) -> Frames:
    """``frames`` with 1 to ``max_mutations`` random mutations (it may end up empty)."""
    out = list(frames)
    for _ in range(rng.randint(1, max_mutations)):
        if not out:
            out.append(rng.randbytes(rng.randrange(4)))
            continue
        rng.choice(MUTATIONS)(rng, out)
    return out


def mutate_bytes(rng: random.Random, data: bytes, max_mutations: int = 3) -> bytes:
    """A byte string with flips, random runs, cuts and insertions (for stream protocols)."""
    b = bytearray(data)
    for _ in range(rng.randint(1, max_mutations)):
        choice = rng.randrange(4)
        if choice == 0 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif choice == 1 and b:
            i = rng.randrange(len(b))
            b[i : i + 4] = rng.randbytes(4)
        elif choice == 2 and b:
            del b[rng.randrange(len(b)) :]
        else:
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.randbytes(rng.choice([1, 3, 8]))
    return bytes(b)
