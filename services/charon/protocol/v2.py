"""Sans-IO codec of charon protocol v2 (many events per message, streamed replies; proto-spec/charon-v2.md).

v2 shares the client port with v1 and is told apart by its first payload frame, :data:`MAGIC`,
which no v1 request header equals or starts with. Every message is ``[MAGIC, command, ...]``:

* ``HELLO`` / ``WELCOME``: a flat JSON object each way (version, the client's per-run seed; the
  server's engine, detector fingerprint, digest of the PMT positions, credit window and limits);
* ``SIMULATE``: an event table (tag, event id, photon count per event) and the twelve v1 photon
  arrays of all its events one after another, so a message is split into parts by byte offsets
  alone, without reading a photon;
* ``RESULT`` (one per event, as each finishes: its hit arrays back to back in one frame) or
  ``ERROR`` (one per event, with a code).

``JOB`` / ``JOB_DONE`` are what a router (or ``charon serve``) hands an engine: a part of one
SIMULATE with the session's seed, and the per-event outcomes back. They travel inside CHARONW1
REQUEST/REPLY and never on the client port.

Frames are the buffer types of :mod:`charon.protocol.v1` and are never copied (parts are
``memoryview`` slices of the received frames). No numpy: the router imports this module.
"""

from __future__ import annotations

import enum
import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from charon import errors
from charon.errors import CharonError, MalformedRequest, ReplyKind
from charon.protocol import tokens
from charon.protocol.v1 import Frame, as_view

#: First frame of every v2 message (no v1 request header equals or starts with it).
MAGIC: Final = b"CHARON/2"
VERSION: Final = 2

HELLO: Final = b"H"
WELCOME: Final = b"W"
SIMULATE: Final = b"S"
RESULT: Final = b"R"
ERROR: Final = b"E"
JOB: Final = b"J"
JOB_DONE: Final = b"K"

#: The tag of an ERROR about a whole message (HELLO, an unknown command, an unreadable table).
NO_TAG: Final = 2**64 - 1
#: The event id of an ERROR that concerns no event.
NO_EVENT: Final = 2**32 - 1

#: RESULT flag: the hits frame also holds the detection positions x, y, z.
HAS_POSITIONS: Final = 0x1

#: Arrays of a RESULT's hits frame, in wire order: the ten v1 SIM_COMPLETE arrays, then (with
#: HAS_POSITIONS) the positions; each holds H 4-byte elements.
HIT_FIELDS: Final = (*tokens.HIT_FIELDS, "x", "y", "z")
N_PHOTON_FRAMES: Final = len(tokens.PHOTON_FIELDS)
#: HELLO / WELCOME bodies are small flat JSON objects.
MAX_JSON_BYTES: Final = 4096

_ENTRY = struct.Struct("<QII")  # tag, event id, photons
_RESULT_HEAD = struct.Struct("<QIII")  # tag, event id, hits, flags
_ERROR_HEAD = struct.Struct("<QII")  # tag, event id, code
_DONE_ENTRY = struct.Struct("<QIIII")  # tag, event id, code (0 = ok), hits, flags
_SEED = struct.Struct("<Q")
_SIMULATE_FRAMES = 3 + N_PHOTON_FRAMES
_JOB_FRAMES = 3 + N_PHOTON_FRAMES


class ErrorCode(enum.IntEnum):
    """Why an event (or a message) was not simulated; ``retryable`` ones may succeed if resent."""

    OK = 0  # JOB_DONE only: the event was simulated
    MALFORMED = 1
    UNKNOWN_COMMAND = 2
    VERSION = 3
    NO_SESSION = 4
    CREDIT_EXCEEDED = 5
    TOO_LARGE = 6
    QUEUE_FULL = 7
    DEADLINE = 8
    NO_WORKERS = 9
    SIMULATION_FAILED = 10
    RETRIES_EXHAUSTED = 11

    @property
    def retryable(self) -> bool:
        return self in _RETRYABLE


_RETRYABLE: Final = frozenset({ErrorCode.NO_SESSION, ErrorCode.CREDIT_EXCEEDED, ErrorCode.QUEUE_FULL,
                               ErrorCode.DEADLINE, ErrorCode.NO_WORKERS, ErrorCode.RETRIES_EXHAUSTED})
_BY_OUTCOME: Final = {
    "malformed": ErrorCode.MALFORMED,
    "unknown_request": ErrorCode.UNKNOWN_COMMAND,
    "queue_full": ErrorCode.QUEUE_FULL,
    "deadline": ErrorCode.DEADLINE,
    "simulation_failed": ErrorCode.SIMULATION_FAILED,
    "retries_exhausted": ErrorCode.RETRIES_EXHAUSTED,
}


class Rejected(MalformedRequest):
    """A v2 message the server answers with ERROR: ``code``, and the events it concerns (empty when
    its event table could not be read; the ERROR then carries :data:`NO_TAG`)."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.MALFORMED,
                 events: Sequence[Event] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.events = tuple(events)


def code_of(exc: CharonError) -> ErrorCode:
    """The v2 error code an error of the tree calls for."""
    if isinstance(exc, Rejected):
        return exc.code
    code = _BY_OUTCOME.get(exc.outcome)
    if code is not None:
        return code
    if exc.reply_kind is ReplyKind.NO_CAPACITY:
        return ErrorCode.QUEUE_FULL
    if exc.reply_kind is ReplyKind.FAILED:
        return ErrorCode.SIMULATION_FAILED
    return ErrorCode.MALFORMED


# ---- values ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One row of an event table: the client's ``tag`` (unique among its events in flight), the
    event id (as v1's) and the photon count."""

    tag: int
    event_id: int
    n_photons: int


@dataclass(frozen=True, slots=True)
class Hello:
    version: int = VERSION
    seed: int = 0
    client: str = ""


@dataclass(frozen=True, slots=True)
class Welcome:
    """The server's answer to HELLO: what it simulates and how much a client may send."""

    engine: str
    fingerprint: str
    pmt_digest: str
    n_channels: int
    credit: int
    max_events_per_message: int
    max_photons_per_message: int
    hit_positions: bool
    seed: int
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class Simulate:
    """SIMULATE: events in table order; each array frame holds every event's photons in that order."""

    events: tuple[Event, ...]
    arrays: tuple[memoryview, ...]

    @property
    def n_photons(self) -> int:
        return sum(e.n_photons for e in self.events)

    @property
    def nbytes(self) -> int:
        return 4 * N_PHOTON_FRAMES * self.n_photons


def hit_arrays(flags: int) -> int:
    """How many arrays a hits frame with ``flags`` holds (10, or 13 with HAS_POSITIONS)."""
    return len(HIT_FIELDS) if flags & HAS_POSITIONS else len(tokens.HIT_FIELDS)


@dataclass(frozen=True, slots=True)
class Result:
    """RESULT: one event's hits, ``hits`` = the arrays of :data:`HIT_FIELDS` back to back."""

    tag: int
    event_id: int
    n_hits: int
    flags: int
    hits: memoryview

    @property
    def has_positions(self) -> bool:
        return bool(self.flags & HAS_POSITIONS)

    def array(self, index: int) -> memoryview:
        """Bytes of array ``index`` of :data:`HIT_FIELDS` (no copy)."""
        n = 4 * self.n_hits
        return self.hits[index * n : (index + 1) * n]


@dataclass(frozen=True, slots=True)
class Error:
    """ERROR: the event ``tag`` (or, with :data:`NO_TAG`, the message) was not simulated."""

    tag: int
    event_id: int
    code: ErrorCode
    message: str


@dataclass(frozen=True, slots=True)
class Job:
    """A part of one SIMULATE for one engine pass: the session's seed and its events' photons."""

    seed: int
    events: tuple[Event, ...]
    arrays: tuple[memoryview, ...]

    @property
    def n_photons(self) -> int:
        return sum(e.n_photons for e in self.events)

    def photon_arrays(self, index: int) -> tuple[memoryview, ...]:
        """The twelve array slices of event ``index`` (no copy)."""
        start = 4 * sum(e.n_photons for e in self.events[:index])
        stop = start + 4 * self.events[index].n_photons
        return tuple(a[start:stop] for a in self.arrays)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One event of a JOB_DONE: ``code`` OK with its hits frame, or an error with a message."""

    event: Event
    code: ErrorCode
    n_hits: int = 0
    flags: int = 0
    hits: Frame = b""
    message: str = ""


@dataclass(frozen=True, slots=True)
class JobDone:
    outcomes: tuple[Outcome, ...]

    @property
    def n_hits(self) -> int:
        return sum(o.n_hits for o in self.outcomes)


FromClient: TypeAlias = Hello | Simulate
FromServer: TypeAlias = Welcome | Result | Error


def is_v2(payload: Sequence[Frame]) -> bool:
    """Whether a payload (envelope removed) is a v2 message: its first frame is exactly MAGIC."""
    if not payload:
        return False
    view = as_view(payload[0])
    return len(view) == len(MAGIC) and view.tobytes() == MAGIC


def _command(frames: Sequence[Frame]) -> bytes:
    if not is_v2(frames):
        raise Rejected("not a v2 message: the first frame must be CHARON/2", ErrorCode.UNKNOWN_COMMAND)
    if len(frames) < 2:
        raise Rejected("v2 message without a command frame", ErrorCode.UNKNOWN_COMMAND)
    command = as_view(frames[1])
    if len(command) != 1:
        raise Rejected(f"v2 command frame must be one byte, got {len(command)}", ErrorCode.UNKNOWN_COMMAND)
    return command.tobytes()


def command_of(frames: Sequence[Frame]) -> bytes:
    """The one-byte command of a v2 message, or b"" when it has none (cheap, for routing)."""
    try:
        return _command(frames)
    except Rejected:
        return b""


# ---- JSON bodies ----------------------------------------------------------------------------------


def _json_frame(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _read_json(frame: Frame, what: str) -> dict[str, Any]:
    view = as_view(frame)
    if len(view) > MAX_JSON_BYTES:
        raise Rejected(f"{what} body is {len(view)} bytes, at most {MAX_JSON_BYTES}")
    try:
        body = json.loads(view.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Rejected(f"{what} body is not a UTF-8 JSON object: {exc}") from None
    if not isinstance(body, dict):
        raise Rejected(f"{what} body must be a JSON object, got {type(body).__name__}")
    return body


def _int_field(body: dict[str, Any], name: str, what: str, low: int, high: int, default: int | None = None) -> int:
    value = body.get(name, default)
    if value is None:
        raise Rejected(f"{what}.{name} is missing (an integer {low}..{high})")
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Rejected(f"{what}.{name} = {value!r}: must be an integer {low}..{high}")
    return value


def _str_field(body: dict[str, Any], name: str, what: str, max_len: int = 128, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or len(value) > max_len:
        raise Rejected(f"{what}.{name} = {value!r}: must be a string of at most {max_len} characters")
    return value


def hello(h: Hello) -> list[Frame]:
    body: dict[str, Any] = {"version": h.version, "seed": h.seed}
    if h.client:
        body["client"] = h.client
    return [MAGIC, HELLO, _json_frame(body)]


def decode_hello(frames: Sequence[Frame]) -> Hello:
    """HELLO: ``version`` (must be 2), ``seed`` (0..2^64-1, default 0), ``client`` (optional text)."""
    if len(frames) != 3:
        raise Rejected(f"HELLO has {len(frames)} frames, needs 3 (magic, command, JSON body)")
    body = _read_json(frames[2], "HELLO")
    version = _int_field(body, "version", "HELLO", 0, 2**32 - 1)
    if version != VERSION:
        raise Rejected(f"HELLO.version = {version}: this server speaks version {VERSION}", ErrorCode.VERSION)
    seed = _int_field(body, "seed", "HELLO", 0, 2**64 - 1, default=0)
    client = _str_field(body, "client", "HELLO", default="")
    return Hello(version, seed, client)


def welcome(w: Welcome) -> list[Frame]:
    return [MAGIC, WELCOME, _json_frame({
        "version": w.version, "engine": w.engine, "fingerprint": w.fingerprint, "pmt_digest": w.pmt_digest,
        "n_channels": w.n_channels, "credit": w.credit, "max_events_per_message": w.max_events_per_message,
        "max_photons_per_message": w.max_photons_per_message, "hit_positions": w.hit_positions, "seed": w.seed,
    })]


def decode_welcome(frames: Sequence[Frame]) -> Welcome:
    if len(frames) != 3:
        raise Rejected(f"WELCOME has {len(frames)} frames, needs 3 (magic, command, JSON body)")
    body = _read_json(frames[2], "WELCOME")
    positions = body.get("hit_positions", False)
    if not isinstance(positions, bool):
        raise Rejected(f"WELCOME.hit_positions = {positions!r}: must be true or false")
    return Welcome(
        engine=_str_field(body, "engine", "WELCOME"),
        fingerprint=_str_field(body, "fingerprint", "WELCOME"),
        pmt_digest=_str_field(body, "pmt_digest", "WELCOME"),
        n_channels=_int_field(body, "n_channels", "WELCOME", 0, 2**32 - 1),
        credit=_int_field(body, "credit", "WELCOME", 1, 2**32 - 1),
        max_events_per_message=_int_field(body, "max_events_per_message", "WELCOME", 1, 2**32 - 1),
        max_photons_per_message=_int_field(body, "max_photons_per_message", "WELCOME", 1, 2**63 - 1),
        hit_positions=positions,
        seed=_int_field(body, "seed", "WELCOME", 0, 2**64 - 1, default=0),
        version=_int_field(body, "version", "WELCOME", 0, 2**32 - 1),
    )


def pmt_digest(x: Frame, y: Frame, z: Frame) -> str:
    """sha256 (hex) of the PMT positions as DETECTOR_INFO sends them: the x, y, z f32 frames, concatenated."""
    h = hashlib.sha256()
    for frame in (x, y, z):
        h.update(as_view(frame))
    return h.hexdigest()


# ---- event tables ---------------------------------------------------------------------------------


def event_table(events: Sequence[Event]) -> bytes:
    return b"".join(_ENTRY.pack(e.tag, e.event_id & 0xFFFFFFFF, e.n_photons) for e in events)


def _read_table(frame: Frame, what: str) -> tuple[Event, ...]:
    view = as_view(frame)
    if not view or len(view) % _ENTRY.size:
        raise Rejected(f"{what} event table is {len(view)} bytes, needs a positive multiple of {_ENTRY.size}")
    events = tuple(Event(*_ENTRY.unpack_from(view, i)) for i in range(0, len(view), _ENTRY.size))
    tags = {e.tag for e in events}
    if len(tags) != len(events):
        raise Rejected(f"{what} event table repeats a tag", events=())
    if NO_TAG in tags:
        raise Rejected(f"{what} event table uses the reserved tag 0x{NO_TAG:x}")
    return events


def _arrays(frames: Sequence[Frame], events: tuple[Event, ...], what: str) -> tuple[memoryview, ...]:
    total = sum(e.n_photons for e in events)
    arrays = tuple(as_view(f) for f in frames)
    for name, view in zip(tokens.PHOTON_FIELDS, arrays, strict=True):
        if len(view) != 4 * total:
            raise Rejected(f"{what} frame {name!r} is {len(view)} bytes, expected 4 x {total} photons",
                           events=events)
    return arrays


def simulate(events: Sequence[Event], arrays: Sequence[Frame]) -> list[Frame]:
    """SIMULATE from an event table and the twelve concatenated photon arrays (not copied)."""
    if len(arrays) != N_PHOTON_FRAMES:
        raise ValueError(f"SIMULATE needs {N_PHOTON_FRAMES} array frames, got {len(arrays)}")
    return [MAGIC, SIMULATE, event_table(events), *arrays]


def decode_simulate(frames: Sequence[Frame]) -> Simulate:
    """Validate a SIMULATE; :class:`Rejected` names the events it concerns when the table is readable."""
    if len(frames) < 3:
        raise Rejected(f"SIMULATE has {len(frames)} frames, needs {_SIMULATE_FRAMES}")
    events = _read_table(frames[2], "SIMULATE")
    if len(frames) != _SIMULATE_FRAMES:
        raise Rejected(f"SIMULATE has {len(frames)} frames, needs {_SIMULATE_FRAMES}", events=events)
    return Simulate(events, _arrays(frames[3:], events, "SIMULATE"))


def decode_from_client(frames: Sequence[Frame]) -> FromClient:
    """A v2 message from a client (envelope removed); raises :class:`Rejected`."""
    command = _command(frames)
    if command == SIMULATE:
        return decode_simulate(frames)
    if command == HELLO:
        return decode_hello(frames)
    raise Rejected(f"unknown v2 command {command!r}", ErrorCode.UNKNOWN_COMMAND)


# ---- parts and jobs -------------------------------------------------------------------------------


def split(message: Simulate, max_photons: int) -> list[tuple[tuple[Event, ...], tuple[memoryview, ...]]]:
    """Cut a SIMULATE into consecutive parts of at most ``max_photons`` photons (an event larger than
    that is a part of its own), by byte offsets: the photon arrays are sliced, never read."""
    parts: list[tuple[tuple[Event, ...], tuple[memoryview, ...]]] = []
    start = 0  # photon offset of the part being built
    first = 0
    photons = 0
    events = message.events
    for i, event in enumerate(events):
        if i > first and photons + event.n_photons > max_photons:
            parts.append(_part(message, first, i, start, photons))
            start += photons
            first, photons = i, 0
        photons += event.n_photons
    if first < len(events):
        parts.append(_part(message, first, len(events), start, photons))
    return parts


def _part(message: Simulate, first: int, stop: int, start: int, photons: int
          ) -> tuple[tuple[Event, ...], tuple[memoryview, ...]]:
    lo, hi = 4 * start, 4 * (start + photons)
    return message.events[first:stop], tuple(a[lo:hi] for a in message.arrays)


def job(seed: int, events: Sequence[Event], arrays: Sequence[Frame]) -> list[Frame]:
    """JOB: [MAGIC, J, seed u64 + event table, 12 arrays]."""
    return [MAGIC, JOB, _SEED.pack(seed) + event_table(events), *arrays]


def is_job(payload: Sequence[Frame]) -> bool:
    return is_v2(payload) and command_of(payload) == JOB


def job_photons(payload: Sequence[Frame]) -> int:
    """Photons of a JOB from its table alone (0 when it is unreadable)."""
    if len(payload) < 3:
        return 0
    head = as_view(payload[2])
    if len(head) < _SEED.size or (len(head) - _SEED.size) % _ENTRY.size:
        return 0
    return sum(_ENTRY.unpack_from(head, i)[2] for i in range(_SEED.size, len(head), _ENTRY.size))


def decode_job(frames: Sequence[Frame]) -> Job:
    if _command(frames) != JOB or len(frames) != _JOB_FRAMES:
        raise Rejected(f"JOB needs {_JOB_FRAMES} frames, got {len(frames)}")
    head = as_view(frames[2])
    if len(head) < _SEED.size:
        raise Rejected("JOB head is shorter than its seed")
    seed = int(_SEED.unpack_from(head, 0)[0])
    events = _read_table(head[_SEED.size :], "JOB")
    return Job(seed, events, _arrays(frames[3:], events, "JOB"))


def job_done(outcomes: Sequence[Outcome]) -> list[Frame]:
    """JOB_DONE: [MAGIC, K, table (tag, event id, code, hits, flags per event), then one frame per
    event: its hits frame (code OK, as in RESULT) or a UTF-8 message]."""
    table = b"".join(_DONE_ENTRY.pack(o.event.tag, o.event.event_id & 0xFFFFFFFF, int(o.code), o.n_hits,
                                      o.flags) for o in outcomes)
    frames: list[Frame] = [MAGIC, JOB_DONE, table]
    for o in outcomes:
        if o.code is ErrorCode.OK:
            if len(as_view(o.hits)) != 4 * o.n_hits * hit_arrays(o.flags):
                raise ValueError(f"hits frame of {len(as_view(o.hits))} bytes for {o.n_hits} hits, flags {o.flags}")
            frames.append(o.hits)
        else:
            frames.append(o.message.encode("utf-8")[:1024])
    return frames


def failed_job(job_: Job, code: ErrorCode, message: str) -> list[Frame]:
    """JOB_DONE failing every event of a job with ``code``."""
    return job_done([Outcome(e, code, message=message) for e in job_.events])


def decode_job_done(frames: Sequence[Frame]) -> JobDone:
    """Read a JOB_DONE (the router does: only its table is decoded, hit frames are kept as they are)."""
    if _command(frames) != JOB_DONE or len(frames) < 3:
        raise Rejected("not a JOB_DONE")
    table = as_view(frames[2])
    if len(table) % _DONE_ENTRY.size:
        raise Rejected(f"JOB_DONE table is {len(table)} bytes, not a multiple of {_DONE_ENTRY.size}")
    entries = list(_DONE_ENTRY.iter_unpack(table))
    if len(frames) != 3 + len(entries):
        raise Rejected(f"JOB_DONE has {len(frames) - 3} event frames for {len(entries)} events")
    outcomes: list[Outcome] = []
    for (tag, event_id, code, n_hits, flags), body in zip(entries, frames[3:], strict=True):
        event = Event(tag, event_id, 0)
        if code == ErrorCode.OK:
            if len(as_view(body)) != 4 * n_hits * hit_arrays(flags):
                raise Rejected(f"JOB_DONE hits frame of event tag {tag} is {len(as_view(body))} bytes, "
                               f"expected {4 * n_hits * hit_arrays(flags)}")
            outcomes.append(Outcome(event, ErrorCode.OK, n_hits, flags, body))
        else:
            try:
                known = ErrorCode(code)
            except ValueError:
                known = ErrorCode.SIMULATION_FAILED
            outcomes.append(Outcome(event, known, message=as_view(body).tobytes().decode("utf-8", "replace")))
    return JobDone(tuple(outcomes))


def job_done_hits(frames: Sequence[Frame]) -> int:
    """Hits in a JOB_DONE from its table alone (0 when unreadable), for the hit counter."""
    if len(frames) < 3:
        return 0
    table = as_view(frames[2])
    if len(table) % _DONE_ENTRY.size:
        return 0
    return sum(entry[3] for entry in _DONE_ENTRY.iter_unpack(table) if entry[2] == ErrorCode.OK)


# ---- replies to the client ------------------------------------------------------------------------


def hits_frame(arrays: Sequence[Frame]) -> tuple[bytes, int, int]:
    """The hits frame of 10 arrays (or 13, with positions) of H 4-byte elements each: (frame, H, flags)."""
    if len(arrays) not in (len(tokens.HIT_FIELDS), len(HIT_FIELDS)):
        raise ValueError(f"a hits frame holds {len(tokens.HIT_FIELDS)} or {len(HIT_FIELDS)} arrays, got {len(arrays)}")
    sizes = {len(as_view(a)) for a in arrays}
    if len(sizes) != 1 or next(iter(sizes)) % 4:
        raise ValueError(f"hit arrays must share one length, a multiple of 4: {sizes}")
    flags = HAS_POSITIONS if len(arrays) == len(HIT_FIELDS) else 0
    return b"".join(arrays), next(iter(sizes)) // 4, flags


def result(tag: int, event_id: int, arrays: Sequence[Frame]) -> list[Frame]:
    """RESULT: [MAGIC, R, head (tag, event id, hits, flags), hits frame] from 10 or 13 hit arrays."""
    hits, n, flags = hits_frame(arrays)
    return [MAGIC, RESULT, _RESULT_HEAD.pack(tag, event_id & 0xFFFFFFFF, n, flags), hits]


def error(tag: int, event_id: int, code: ErrorCode, message: str) -> list[Frame]:
    """ERROR: [MAGIC, E, head (tag, event id, code), UTF-8 message]."""
    return [MAGIC, ERROR, _ERROR_HEAD.pack(tag, event_id & 0xFFFFFFFF, int(code)), message.encode("utf-8")[:1024]]


def rejection(exc: CharonError) -> list[list[Frame]]:
    """The ERROR messages answering a rejected message: one per event it names, or one with NO_TAG."""
    code = code_of(exc)
    events = exc.events if isinstance(exc, Rejected) else ()
    if not events:
        return [error(NO_TAG, NO_EVENT, code, str(exc))]
    return [error(e.tag, e.event_id, code, str(exc)) for e in events]


def client_replies(done: JobDone) -> list[list[Frame]]:
    """The RESULT or ERROR message of each event of a JOB_DONE, hit frames passed on untouched."""
    out: list[list[Frame]] = []
    for o in done.outcomes:
        e = o.event
        if o.code is ErrorCode.OK:
            out.append([MAGIC, RESULT, _RESULT_HEAD.pack(e.tag, e.event_id, o.n_hits, o.flags), o.hits])
        else:
            out.append(error(e.tag, e.event_id, o.code, o.message))
    return out


def decode_from_server(frames: Sequence[Frame]) -> FromServer:
    """A v2 reply as a client receives it (envelope removed); raises :class:`errors.InvalidReply`."""
    try:
        command = _command(frames)
        if command == RESULT:
            return _decode_result(frames)
        if command == ERROR:
            return _decode_error(frames)
        if command == WELCOME:
            return decode_welcome(frames)
    except Rejected as exc:
        raise errors.InvalidReply(str(exc), bytes(as_view(frames[0])[:16]) if frames else b"") from None
    raise errors.InvalidReply(f"unexpected v2 reply command {command!r}", MAGIC)


def _decode_result(frames: Sequence[Frame]) -> Result:
    if len(frames) != 4:
        raise Rejected(f"RESULT has {len(frames)} frames, needs 4")
    head = as_view(frames[2])
    if len(head) != _RESULT_HEAD.size:
        raise Rejected(f"RESULT head is {len(head)} bytes, needs {_RESULT_HEAD.size}")
    tag, event_id, n_hits, flags = _RESULT_HEAD.unpack(head)
    hits = as_view(frames[3])
    if len(hits) != 4 * n_hits * hit_arrays(flags):
        raise Rejected(f"RESULT of event tag {tag}: hits frame is {len(hits)} bytes, expected "
                       f"{4 * n_hits * hit_arrays(flags)} for {n_hits} hits")
    return Result(int(tag), int(event_id), int(n_hits), int(flags), hits)


def _decode_error(frames: Sequence[Frame]) -> Error:
    if len(frames) != 4:
        raise Rejected(f"ERROR has {len(frames)} frames, needs 4")
    head = as_view(frames[2])
    if len(head) != _ERROR_HEAD.size:
        raise Rejected(f"ERROR head is {len(head)} bytes, needs {_ERROR_HEAD.size}")
    tag, event_id, code = _ERROR_HEAD.unpack(head)
    try:
        known = ErrorCode(code)
    except ValueError:
        known = ErrorCode.SIMULATION_FAILED
    return Error(int(tag), int(event_id), known, as_view(frames[3]).tobytes().decode("utf-8", "replace"))
