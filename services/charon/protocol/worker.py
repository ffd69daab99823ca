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
# v1 async mode: the router gives each run to one worker, which writes its file (spec §3.5).
RUN_OPEN: Final = b"\x10"
RUN_EVENT: Final = b"\x11"
RUN_CLOSE: Final = b"\x12"
RUN_WRITTEN: Final = b"\x13"
RUN_CLOSED: Final = b"\x14"
#: READY's optional tenth frame: the features a worker offers, comma-separated.
FEATURE_RUNS: Final = b"runs"

#: Why a DISCONNECT was sent (the frame after the command; ASCII).
REASON_DRAIN: Final = b"drain"  # worker: finishing in-flight work, send nothing new
REASON_EXIT: Final = b"exit"  # worker: leaving now, requeue whatever it still holds
REASON_ACK: Final = b"ack"  # router: drain acknowledged, nothing more will be sent
REASON_FINGERPRINT: Final = b"fingerprint"  # router: detector differs from the pool's
REASON_UNKNOWN: Final = b"unknown"  # router: not registered (router restarted, or expired)
REASON_PROTOCOL: Final = b"protocol"  # router: invalid or unexpected message
REASON_SHUTDOWN: Final = b"shutdown"  # router: stopping

_TOKEN = struct.Struct("<Q")
_CAPACITY = struct.Struct("<I")
_RUN_OPEN = struct.Struct("<QIQ")  # resume_from, flush_events, flush_bytes
_COUNT = struct.Struct("<Q")
_MAX_RUN_NAME = 4096
_MAX_ENGINE_NAME = 64


@dataclass(frozen=True, slots=True)
class Ready:
    """A worker registers: its detector fingerprint, capacity, engine and DETECTOR_INFO body."""

    fingerprint: str
    capacity: int
    engine: str
    detector_info: tuple[Frame, Frame, Frame, Frame] | None
    legacy: bool = False
    #: It writes async-mode run files (READY's feature frame names ``runs``).
    runs: bool = False


@dataclass(frozen=True, slots=True)
class RunOpen:
    """Router -> worker: write run ``run_id`` to ``name`` (relative to the worker's --outdir);
    entries ``[0, resume_from)`` are already in that file (a run taken over from a lost worker)."""

    run_id: int
    name: str
    resume_from: int
    flush_events: int
    flush_bytes: int


@dataclass(frozen=True, slots=True)
class RunEvent:
    """Router -> worker: the v1 PHOTONDATA payload of entry ``seq`` of run ``run_id``."""

    run_id: int
    seq: int
    payload: list[Frame]


@dataclass(frozen=True, slots=True)
class RunClose:
    run_id: int


@dataclass(frozen=True, slots=True)
class RunProgress:
    """Worker -> router: entries ``[0, count)`` of the run are on disk; ``closed``: the file is closed."""

    run_id: int
    count: int
    closed: bool


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


FromWorker: TypeAlias = Ready | Heartbeat | Reply | Disconnect | RunProgress
FromRouter: TypeAlias = Request | Heartbeat | Disconnect | RunOpen | RunEvent | RunClose


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


def ready(fingerprint: str, capacity: int, engine: str, detector_info: Sequence[Frame], *,
          runs: bool = False) -> list[Frame]:
    """READY: [PROTOCOL, READY, fingerprint, capacity u32, engine, x, y, z, channel_type(, features)]."""
    if len(detector_info) != 4:
        raise ValueError("READY carries the four DETECTOR_INFO body frames")
    features = [FEATURE_RUNS] if runs else []
    return [PROTOCOL, READY, fingerprint.encode("ascii"), _CAPACITY.pack(capacity),
            engine.encode("utf-8")[:_MAX_ENGINE_NAME], *detector_info, *features]


def run_written(run_id: int, count: int, *, closed: bool = False) -> list[Frame]:
    return [PROTOCOL, RUN_CLOSED if closed else RUN_WRITTEN, _TOKEN.pack(run_id), _COUNT.pack(count)]


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
    if command in (RUN_WRITTEN, RUN_CLOSED):
        return _decode_run_progress(frames, command)
    raise WorkerProtocolError(f"unexpected command {command!r} from a worker")


def _decode_run_progress(frames: Sequence[Frame], command: bytes) -> RunProgress:
    if len(frames) != 4:
        raise WorkerProtocolError(f"RUN_WRITTEN/RUN_CLOSED has {len(frames)} frames, needs 4")
    return RunProgress(_token(frames[2]), _count(frames[3]), command == RUN_CLOSED)


def _count(frame: Frame) -> int:
    view = as_view(frame)
    if len(view) != _COUNT.size:
        raise WorkerProtocolError(f"count frame is {len(view)} bytes, needs {_COUNT.size}")
    return int(_COUNT.unpack(view)[0])


def _decode_ready(frames: Sequence[Frame]) -> Ready:
    if len(frames) not in (9, 10):
        raise WorkerProtocolError(f"READY has {len(frames)} frames, needs 9 (or 10 with features)")
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
    features = bytes(as_view(frames[9])[:256]).split(b",") if len(frames) == 10 else []
    return Ready(fingerprint, capacity, engine, (info[0], info[1], info[2], info[3]), runs=FEATURE_RUNS in features)


# ---- router -> worker ----------------------------------------------------------------------------


def request(token: int, payload: Sequence[Frame]) -> list[Frame]:
    return [PROTOCOL, REQUEST, token_frame(token), *payload]


def legacy_request(token: int, payload: Sequence[Frame]) -> list[Frame]:
    """A request for a ChAR0N worker: the token stands where a client identity would."""
    return [token_frame(token), b"", *payload]


def run_open(run_id: int, name: str, resume_from: int, flush_events: int, flush_bytes: int) -> list[Frame]:
    return [PROTOCOL, RUN_OPEN, _TOKEN.pack(run_id), name.encode("utf-8"),
            _RUN_OPEN.pack(resume_from, flush_events, flush_bytes)]


def run_event(run_id: int, seq: int, payload: Sequence[Frame]) -> list[Frame]:
    return [PROTOCOL, RUN_EVENT, _TOKEN.pack(run_id), _COUNT.pack(seq), *payload]


def run_close(run_id: int) -> list[Frame]:
    return [PROTOCOL, RUN_CLOSE, _TOKEN.pack(run_id)]


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
    if command == RUN_EVENT:
        if len(frames) < 5:
            raise WorkerProtocolError("RUN_EVENT needs a run id, an entry number and a v1 payload")
        return RunEvent(_token(frames[2]), _count(frames[3]), list(frames[4:]))
    if command == RUN_OPEN:
        return _decode_run_open(frames)
    if command == RUN_CLOSE:
        if len(frames) != 3:
            raise WorkerProtocolError(f"RUN_CLOSE has {len(frames)} frames, needs 3")
        return RunClose(_token(frames[2]))
    raise WorkerProtocolError(f"unexpected command {command!r} from the router")


def _decode_run_open(frames: Sequence[Frame]) -> RunOpen:
    if len(frames) != 5:
        raise WorkerProtocolError(f"RUN_OPEN has {len(frames)} frames, needs 5")
    raw = as_view(frames[3])
    if not 0 < len(raw) <= _MAX_RUN_NAME:
        raise WorkerProtocolError(f"RUN_OPEN name of {len(raw)} bytes (1 to {_MAX_RUN_NAME} allowed)")
    try:
        name = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise WorkerProtocolError("RUN_OPEN name is not UTF-8") from None
    params = as_view(frames[4])
    if len(params) != _RUN_OPEN.size:
        raise WorkerProtocolError(f"RUN_OPEN parameters are {len(params)} bytes, needs {_RUN_OPEN.size}")
    resume_from, flush_events, flush_bytes = _RUN_OPEN.unpack(params)
    if flush_events < 1 or flush_bytes < 1:
        raise WorkerProtocolError("RUN_OPEN batch bounds must be at least 1")
    return RunOpen(_token(frames[2]), name, int(resume_from), int(flush_events), int(flush_bytes))
