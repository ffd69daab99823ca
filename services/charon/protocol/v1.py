"""Sans-IO codec of the ChAR0N v1 protocol (ratpac-two ⇄ ChAR0N, contract in proto-spec/charon-v1.md).

It turns a received list of frames into a typed request and builds reply frame lists; it never
touches a socket. Frames are any buffer (``bytes``, ``memoryview``, or the ``memoryview`` of a
received ``zmq.Frame``) and are never copied: PHOTONDATA keeps the twelve array frames as
``memoryview`` objects so the router can forward them untouched and the worker can wrap them as
numpy arrays without a copy. This module imports no numpy: the router depends on it.

Validation is complete here (counts, lengths, multiples of four), so a malformed request is
rejected wherever it first arrives. :func:`error_reply` turns any :mod:`charon.errors` error into
the v1 reply its hints call for.
"""

from __future__ import annotations

import array
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from charon import errors
from charon.errors import InvalidReply, MalformedRequest, ReplyKind, UnknownRequest
from charon.protocol import tokens

Frame: TypeAlias = bytes | bytearray | memoryview
_U32 = struct.Struct("<I")
_META = struct.Struct("<II")
#: How many leading frames may be routing identities before the delimiter (ROUTER chains).
_MAX_ENVELOPE_FRAMES = 8
_LONGEST_REQUEST_HEADER = max(len(h) for h in tokens.REQUEST_HEADERS)


@dataclass(frozen=True, slots=True)
class Ping:
    """PING: liveness probe, answered with ACK."""


@dataclass(frozen=True, slots=True)
class RunBegin:
    """RUN_BEGIN: informational in synchronous mode; ``filename`` is None when absent or undecodable."""

    filename: str | None


@dataclass(frozen=True, slots=True)
class RunEnd:
    """RUN_END: informational in synchronous mode."""


@dataclass(frozen=True, slots=True)
class DetectorInfoRequest:
    """DETECTOR_INFO: asks for the PMT positions and types."""


@dataclass(frozen=True, slots=True)
class PhotonData:
    """PHOTONDATA: one event's photons; ``arrays`` are the 12 array frames in wire order."""

    event_id: int
    n_photons: int
    arrays: tuple[memoryview, ...]

    @property
    def nbytes(self) -> int:
        return self.n_photons * 4 * len(tokens.PHOTON_FIELDS)


Request: TypeAlias = Ping | RunBegin | RunEnd | DetectorInfoRequest | PhotonData


def as_view(frame: Frame) -> memoryview:
    """A flat byte view of a frame, without copying."""
    view = frame if isinstance(frame, memoryview) else memoryview(frame)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view


def split_envelope(frames: Sequence[Frame]) -> tuple[list[Frame], list[Frame]]:
    """Split a message received on a ROUTER socket into (envelope, payload).

    Frame 0 is always the peer identity ROUTER added. A REQ peer (or a DEALER mimicking one) puts
    an empty delimiter next; a DEALER peer may send the header directly. Only a frame *before* the
    header can be a delimiter: an empty frame inside the payload (e.g. empty PHOTONDATA metadata)
    is payload. The reply is ``envelope + reply_frames``.
    """
    if not frames:
        return [], []
    if len(frames) == 1:
        return [frames[0]], []
    if len(as_view(frames[1])) == 0:
        return list(frames[:2]), list(frames[2:])
    if _is_request_header(frames[1]):
        return [frames[0]], list(frames[1:])
    # Several routing hops: identities, then a delimiter, then a request header.
    for i in range(2, min(len(frames) - 1, _MAX_ENVELOPE_FRAMES + 1)):
        if len(as_view(frames[i])) == 0 and _is_request_header(frames[i + 1]):
            return list(frames[: i + 1]), list(frames[i + 1 :])
    return [frames[0]], list(frames[1:])


def _is_request_header(frame: Frame) -> bool:
    view = as_view(frame)
    return len(view) <= _LONGEST_REQUEST_HEADER and bytes(view) in tokens.REQUEST_HEADERS


def read_event_id(metadata: Frame) -> int | None:
    """The event id in a PHOTONDATA metadata frame, or None if fewer than 4 bytes are present."""
    view = as_view(metadata)
    if len(view) < 4:
        return None
    return int(_U32.unpack_from(view, 0)[0])


def header_of(payload: Sequence[Frame]) -> bytes:
    """The request header of a payload (b"" for an empty payload); cheap, for routing and metrics."""
    if not payload:
        return b""
    view = as_view(payload[0])
    return bytes(view) if len(view) <= 32 else bytes(view[:32])


def decode_request(payload: Sequence[Frame]) -> Request:
    """Parse the payload frames of one request (envelope already removed).

    Raises :class:`UnknownRequest` or :class:`MalformedRequest`; their ``reply()`` is the answer.
    Extra trailing frames are ignored, as ChAR0N ignores them.
    """
    if not payload:
        raise UnknownRequest("empty message")
    header = header_of(payload)
    if header == tokens.PHOTONDATA:
        return decode_photondata(payload)
    if header == tokens.PING:
        return Ping()
    if header == tokens.DETECTOR_INFO:
        return DetectorInfoRequest()
    if header == tokens.RUN_BEGIN:
        return RunBegin(_filename(payload))
    if header == tokens.RUN_END:
        return RunEnd()
    raise UnknownRequest(f"unknown request header {header[:32]!r}")


def _filename(payload: Sequence[Frame]) -> str | None:
    if len(payload) < 2:
        return None
    try:
        return bytes(as_view(payload[1])).decode("utf-8") or None
    except UnicodeDecodeError:
        return None


def decode_photondata(payload: Sequence[Frame]) -> PhotonData:
    """Validate a PHOTONDATA payload and keep zero-copy views of its array frames."""
    event_id = read_event_id(payload[1]) if len(payload) > 1 else None
    if len(payload) < tokens.PHOTONDATA_FRAMES:
        raise MalformedRequest(
            f"PHOTONDATA has {len(payload)} frames, needs {tokens.PHOTONDATA_FRAMES}", event_id
        )
    meta = as_view(payload[1])
    if len(meta) < tokens.METADATA_BYTES or len(meta) % 4:
        raise MalformedRequest(
            f"PHOTONDATA metadata is {len(meta)} bytes, needs 8 (uint32 event id, uint32 count)",
            event_id,
        )
    event_id, n_photons = _META.unpack_from(meta, 0)
    arrays = tuple(as_view(f) for f in payload[2 : tokens.PHOTONDATA_FRAMES])
    for name, view in zip(tokens.PHOTON_FIELDS, arrays, strict=True):
        if len(view) != 4 * n_photons:
            raise MalformedRequest(
                f"PHOTONDATA frame {name!r} is {len(view)} bytes, expected 4 x {n_photons} photons",
                event_id,
            )
    return PhotonData(int(event_id), int(n_photons), arrays)


# ---- requests (client side) ----------------------------------------------------------------------


def photondata_request(event_id: int, arrays: Sequence[Frame]) -> list[Frame]:
    """A 14-frame PHOTONDATA request from the twelve array frames in wire order (not copied)."""
    if len(arrays) != len(tokens.PHOTON_FIELDS):
        raise ValueError(f"PHOTONDATA needs {len(tokens.PHOTON_FIELDS)} array frames, got {len(arrays)}")
    sizes = {len(as_view(f)) for f in arrays}
    if len(sizes) != 1 or next(iter(sizes)) % 4:
        raise ValueError(f"PHOTONDATA array frames must share one length, a multiple of 4: {sizes}")
    n_photons = next(iter(sizes)) // 4
    return [tokens.PHOTONDATA, _META.pack(event_id & 0xFFFFFFFF, n_photons), *arrays]


def encode_request(request: Request) -> list[Frame]:
    """The payload frames of a request, as the ratpac-two client sends it (inverse of decode_request).

    RUN_BEGIN always carries its filename frame; an absent filename is sent as an empty frame.
    """
    if isinstance(request, Ping):
        return [tokens.PING]
    if isinstance(request, RunBegin):
        return [tokens.RUN_BEGIN, (request.filename or "").encode("utf-8")]
    if isinstance(request, RunEnd):
        return [tokens.RUN_END]
    if isinstance(request, DetectorInfoRequest):
        return [tokens.DETECTOR_INFO]
    return [tokens.PHOTONDATA, _META.pack(request.event_id & 0xFFFFFFFF, request.n_photons),
            *request.arrays]


# ---- replies -------------------------------------------------------------------------------------


def event_id_frame(event_id: int) -> bytes:
    """The 4-byte little-endian event id echo the client compares byte for byte."""
    return _U32.pack(event_id & 0xFFFFFFFF)


def ack() -> list[Frame]:
    return [tokens.ACK]


def unknown_request() -> list[Frame]:
    return [tokens.UNKNOWN_REQUEST]


def no_workers() -> list[Frame]:
    return [tokens.NO_WORKERS]


def sim_failed(event_id: int) -> list[Frame]:
    return [tokens.SIM_FAILED, event_id_frame(event_id)]


def error_reply(exc: errors.CharonError) -> list[Frame]:
    """The v1 reply an error's hints call for: SIM_FAILED with its event id, NO_WORKERS, else
    UNKNOWN_REQUEST (also for a failure whose event id is unknown)."""
    if exc.reply_kind is ReplyKind.FAILED and exc.event_id is not None:
        return sim_failed(exc.event_id)
    if exc.reply_kind is ReplyKind.NO_CAPACITY:
        return no_workers()
    return unknown_request()


def _error_reply_bytes(exc: errors.CharonError) -> list[bytes]:
    return [bytes(as_view(f)) for f in error_reply(exc)]


errors.register_renderer("v1", _error_reply_bytes)


def sim_complete_async(event_id: int) -> list[Frame]:
    return [tokens.SIM_COMPLETE_ASYNC, event_id_frame(event_id)]


def sim_complete(event_id: int, hit_frames: Sequence[Frame]) -> list[Frame]:
    """SIM_COMPLETE with the ten hit arrays in wire order (each 4·H bytes; H = 0 gives ten empties)."""
    if len(hit_frames) != len(tokens.HIT_FIELDS):
        raise ValueError(f"SIM_COMPLETE needs {len(tokens.HIT_FIELDS)} hit frames, got {len(hit_frames)}")
    sizes = {len(as_view(f)) for f in hit_frames}
    if len(sizes) != 1 or next(iter(sizes)) % 4:
        raise ValueError(f"SIM_COMPLETE hit frames must share one length, a multiple of 4: {sizes}")
    return [tokens.SIM_COMPLETE, event_id_frame(event_id), *hit_frames]


def empty_sim_complete(event_id: int) -> list[Frame]:
    return sim_complete(event_id, [b""] * len(tokens.HIT_FIELDS))


def detector_info(x: Frame, y: Frame, z: Frame, channel_type: Frame) -> list[Frame]:
    """DETECTOR_INFO reply: float32 x, y, z (mm) and int32 type per channel."""
    n = {len(as_view(f)) for f in (x, y, z, channel_type)}
    if len(n) != 1 or next(iter(n)) % 4:
        raise ValueError(f"DETECTOR_INFO frames must share one length, a multiple of 4: {n}")
    return [tokens.DETECTOR_INFO, x, y, z, channel_type]


# ---- reply validation (the ratpac-two client's rules, for charon's own clients) -------------------


@dataclass(frozen=True, slots=True)
class SimComplete:
    event_id: int
    hit_frames: tuple[memoryview, ...]

    @property
    def n_hits(self) -> int:
        return len(self.hit_frames[0]) // 4


@dataclass(frozen=True, slots=True)
class DetectorInfoReply:
    frames: tuple[memoryview, memoryview, memoryview, memoryview]

    @property
    def n_channels(self) -> int:
        return len(self.frames[0]) // 4


def check_ack(payload: Sequence[Frame]) -> None:
    header = header_of(payload)
    if header != tokens.ACK:
        raise InvalidReply(f"expected ACK, got {header!r}", header)


def check_detector_info(payload: Sequence[Frame]) -> DetectorInfoReply:
    header = header_of(payload)
    if header != tokens.DETECTOR_INFO or len(payload) < tokens.DETECTOR_INFO_FRAMES:
        raise InvalidReply(f"expected 5-frame DETECTOR_INFO, got {header!r} x {len(payload)}", header)
    views = tuple(as_view(f) for f in payload[1:5])
    if len({len(v) for v in views}) != 1 or len(views[0]) % 4:
        raise InvalidReply("DETECTOR_INFO frames differ in length", header)
    return DetectorInfoReply((views[0], views[1], views[2], views[3]))


def check_sim_complete(
    payload: Sequence[Frame], event_id: int, *, n_channels: int | None = None
) -> SimComplete:
    """Accept a PHOTONDATA reply when ratpac-two's ``PEData::readmsg`` would (sync mode) and the
    client could use it without reading out of bounds: equal hit-frame lengths and, when
    ``n_channels`` is given, every channel id below it.
    """
    header = header_of(payload)
    if header != tokens.SIM_COMPLETE:
        raise InvalidReply(f"expected SIM_COMPLETE for event {event_id}, got {header!r}", header)
    if len(payload) < tokens.SIM_COMPLETE_FRAMES:
        raise InvalidReply(f"SIM_COMPLETE has {len(payload)} frames, needs 12", header)
    echo = as_view(payload[1])
    if len(echo) < 4 or _U32.unpack_from(echo, 0)[0] != event_id & 0xFFFFFFFF:
        raise InvalidReply(f"SIM_COMPLETE echoes {bytes(echo[:4]).hex()} for event {event_id}", header)
    views = tuple(as_view(f) for f in payload[2 : tokens.SIM_COMPLETE_FRAMES])
    n = len(views[0])
    if n % 4 or any(len(v) != n for v in views):
        raise InvalidReply("SIM_COMPLETE hit frames differ in length", header)
    if n_channels is not None and n:
        channels = array.array("I")
        channels.frombytes(views[0])
        if sys.byteorder == "big":
            channels.byteswap()
        highest = max(channels)
        if highest >= n_channels:
            raise InvalidReply(f"SIM_COMPLETE channel {highest} >= {n_channels} channels", header)
    return SimComplete(event_id, views)


def check_sim_complete_async(payload: Sequence[Frame], event_id: int) -> int:
    """Accept an asynchronous PHOTONDATA reply as ratpac-two does: exactly two frames, id echoed.

    charon sends it in async mode (``runs.async_mode``); charon's own clients do not use that mode.
    """
    header = header_of(payload)
    if header != tokens.SIM_COMPLETE_ASYNC or len(payload) != 2:
        raise InvalidReply(f"expected 2-frame SIM_COMPLETE_ASYNC, got {header!r} x {len(payload)}", header)
    echo = as_view(payload[1])
    if len(echo) < 4 or _U32.unpack_from(echo, 0)[0] != event_id & 0xFFFFFFFF:
        raise InvalidReply(
            f"SIM_COMPLETE_ASYNC echoes {bytes(echo[:4]).hex()} for event {event_id}", header
        )
    return event_id & 0xFFFFFFFF
