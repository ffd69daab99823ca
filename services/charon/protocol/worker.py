"""Sans-IO codec of the router <-> worker protocol CHARONW1 (spec: proto-spec/charon-worker.md).

Workers connect a DEALER to the router's worker-facing ROUTER. Every charon message starts with
the protocol-id frame ``CHARONW1`` and a one-byte command, so control traffic can never be
mistaken for v1 payload and a future CHARONW2 can be told apart. ChAR0N's own workers speak the
bare Paranoid Pirate bytes (READY ``\\x01``, HEARTBEAT ``\\x02``) and put a v1 reply behind an
``[identity, b""]`` envelope; :func:`decode_from_worker` recognises those as legacy messages.

Frames here are the same buffer types as in :mod:`charon.protocol.v1`; nothing is copied except
the few small fields decoded into Python values. No numpy: the router imports this module.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from charon.errors import WorkerProtocolError
from charon.protocol import tokens
from charon.protocol.v1 import Frame, as_view

PROTOCOL: Final = b"CHARONW1"

READY: Final = b"\x01"
HEARTBEAT: Final = b"\x02"
REQUEST: Final = b"\x03"
REPLY: Final = b"\x04"
DISCONNECT: Final = b"\x05"

#: Why a DISCONNECT was sent (the frame after the command; ASCII).
REASON_DRAIN: Final = b"drain"  # worker: finishing in-flight work, send nothing new
REASON_EXIT: Final = b"exit"  # worker: leaving now, requeue whatever it still holds
REASON_ACK: Final = b"ack"  # router: drain acknowledged, nothing more will be sent
REASON_FINGERPRINT: Final = b"fingerprint"  # router: detector differs from the pool's
REASON_UNKNOWN: Final = b"unknown"  # router: not registered (router restarted, or expired)
REASON_PROTOCOL: Final = b"protocol"  # router: invalid or unexpected message
REASON_SHUTDOWN: Final = b"shutdown"  # router: stopping
REASON_DEADLINE: Final = b"deadline"  # router: expelled after repeated execution deadlines

_TOKEN = struct.Struct("<Q")
_CAPACITY = struct.Struct("<I")
_MAX_ENGINE_NAME = 64


@dataclass(frozen=True, slots=True)
class Ready:
    """A worker registers: its detector fingerprint, capacity, engine and DETECTOR_INFO body."""

    fingerprint: str
    capacity: int
    engine: str
    detector_info: tuple[Frame, Frame, Frame, Frame] | None
    legacy: bool = False


@dataclass(frozen=True, slots=True)
class Heartbeat:
    legacy: bool = False


@dataclass(frozen=True, slots=True)
class Request:
    """Router -> worker: one v1 request payload under a router-assigned token."""

    token: int
    payload: list[Frame]


@dataclass(frozen=True, slots=True)
class Reply:
    """Worker -> router: the v1 reply frames for ``token``."""

    token: int
    payload: list[Frame]
    legacy: bool = False


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason: bytes


FromWorker: TypeAlias = Ready | Heartbeat | Reply | Disconnect
FromRouter: TypeAlias = Request | Heartbeat | Disconnect


def token_frame(token: int) -> bytes:
    """The 8-byte token frame; never empty, so a legacy worker's envelope heuristic sees an identity."""
    return _TOKEN.pack(token)


def _token(frame: Frame) -> int:
    view = as_view(frame)
    if len(view) != _TOKEN.size:
        raise WorkerProtocolError(f"token frame is {len(view)} bytes, needs {_TOKEN.size}")
    return int(_TOKEN.unpack(view)[0])


def _command(frames: Sequence[Frame]) -> bytes:
    if len(frames) < 2 or bytes(as_view(frames[0])[:16]) != PROTOCOL:
        head = bytes(as_view(frames[0])[:16]) if frames else b""
        raise WorkerProtocolError(f"not a {PROTOCOL.decode()} message (first frame {head!r})")
    command = bytes(as_view(frames[1])[:2])
    if len(command) != 1:
        raise WorkerProtocolError(f"command frame must be one byte, got {command!r}")
    return command


# ---- worker -> router ----------------------------------------------------------------------------


def ready(fingerprint: str, capacity: int, engine: str, detector_info: Sequence[Frame]) -> list[Frame]:
    """READY: [PROTOCOL, READY, fingerprint, capacity u32, engine, x, y, z, channel_type]."""
    if len(detector_info) != 4:
        raise ValueError("READY carries the four DETECTOR_INFO body frames")
    return [PROTOCOL, READY, fingerprint.encode("ascii"), _CAPACITY.pack(capacity),
            engine.encode("utf-8")[:_MAX_ENGINE_NAME], *detector_info]


def heartbeat() -> list[Frame]:
    return [PROTOCOL, HEARTBEAT]


def reply(token: int, payload: Sequence[Frame]) -> list[Frame]:
    return [PROTOCOL, REPLY, token_frame(token), *payload]


def disconnect(reason: bytes) -> list[Frame]:
    return [PROTOCOL, DISCONNECT, reason]


def _is(view: memoryview, constant: bytes) -> bool:
    return len(view) == len(constant) and view.tobytes() == constant


def decode_from_worker(frames: Sequence[Frame]) -> FromWorker:
    """Parse what a worker sent (routing identity already removed); raises WorkerProtocolError."""
    if not frames:
        raise WorkerProtocolError("empty message")
    first = as_view(frames[0])
    if len(frames) >= 4 and _is(first, PROTOCOL) and _is(as_view(frames[1]), REPLY):
        return Reply(_token(frames[2]), list(frames[3:]))  # the common case, checked first
    if len(frames) == 1 and len(first) == 1:
        if first[0] == tokens.PPP_READY[0]:
            return Ready("", 1, "char0n", None, legacy=True)
        if first[0] == tokens.PPP_HEARTBEAT[0]:
            return Heartbeat(legacy=True)
    if len(frames) >= 3 and len(as_view(frames[1])) == 0 and not _is(first, PROTOCOL):
        # ChAR0N worker: the handler echoes the envelope [token, b""] in front of its reply.
        return Reply(_token(frames[0]), list(frames[2:]), legacy=True)
    command = _command(frames)
    if command == HEARTBEAT:
        return Heartbeat()
    if command == REPLY:
        raise WorkerProtocolError("REPLY needs a token and at least one reply frame")
    if command == READY:
        return _decode_ready(frames)
    if command == DISCONNECT:
        return Disconnect(bytes(as_view(frames[2])[:64]) if len(frames) > 2 else b"")
    raise WorkerProtocolError(f"unexpected command {command!r} from a worker")


def _decode_ready(frames: Sequence[Frame]) -> Ready:
    if len(frames) != 9:
        raise WorkerProtocolError(f"READY has {len(frames)} frames, needs 9")
    try:
        fingerprint = bytes(as_view(frames[2])).decode("ascii")
        engine = bytes(as_view(frames[4])[:_MAX_ENGINE_NAME]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WorkerProtocolError(f"READY fingerprint or engine name is not text: {exc}") from None
    if len(fingerprint) != 64 or any(c not in "0123456789abcdef" for c in fingerprint):
        raise WorkerProtocolError("READY fingerprint must be 64 lowercase hex digits")
    cap = as_view(frames[3])
    if len(cap) != _CAPACITY.size:
        raise WorkerProtocolError(f"READY capacity frame is {len(cap)} bytes, needs 4")
    capacity = int(_CAPACITY.unpack(cap)[0])
    if capacity < 1:
        raise WorkerProtocolError("READY capacity must be at least 1")
    info = tuple(frames[5:9])
    sizes = {len(as_view(f)) for f in info}
    if len(sizes) != 1 or next(iter(sizes)) % 4:
        raise WorkerProtocolError(f"READY DETECTOR_INFO frames must share a length, a multiple of 4: {sizes}")
    return Ready(fingerprint, capacity, engine, (info[0], info[1], info[2], info[3]))


# ---- router -> worker ----------------------------------------------------------------------------


def request(token: int, payload: Sequence[Frame]) -> list[Frame]:
    return [PROTOCOL, REQUEST, token_frame(token), *payload]


def legacy_request(token: int, payload: Sequence[Frame]) -> list[Frame]:
    """A request for a ChAR0N worker: the token stands where a client identity would."""
    return [token_frame(token), b"", *payload]


def legacy_heartbeat() -> list[Frame]:
    return [tokens.PPP_HEARTBEAT]


def decode_from_router(frames: Sequence[Frame]) -> FromRouter:
    """Parse what the router sent to a worker; raises WorkerProtocolError."""
    command = _command(frames)
    if command == REQUEST:
        if len(frames) < 4:
            raise WorkerProtocolError("REQUEST needs a token and a v1 payload")
        return Request(_token(frames[2]), list(frames[3:]))
    if command == HEARTBEAT:
        return Heartbeat()
    if command == DISCONNECT:
        return Disconnect(bytes(as_view(frames[2])[:64]) if len(frames) > 2 else b"")
    raise WorkerProtocolError(f"unexpected command {command!r} from the router")
