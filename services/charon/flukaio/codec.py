"""Sans-IO codec of the FlukaIO 3.1 wire protocol (contract in proto-spec/flukaio.md).

FlukaIO frames every message with a 3-byte header (uint16 total size including the header, uint8
type), little-endian and packed. Two incompatible particle layouts both claim version 3.1: the
95-byte legacy message (``aa``/``zz``) and the 121-byte current one (spin, ``pdgid``, ``q``); only
the size of a PART message tells them apart, so the layout is a property of a connection.

:class:`StreamDecoder` turns arbitrary TCP fragments into messages and is stricter than the C
library: every header is checked as soon as its three bytes arrive (size 0, size < 3, oversize,
unknown type, size not matching the type or the connection's layout), so malformed input fails
fast with a :class:`FlukaIOProtocolError` naming the reason instead of stalling or overflowing.
It buffers at most one incomplete message, so memory per connection stays bounded. No sockets,
no clocks, no numpy: drivers and the mapping layer build on it.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from charon.errors import CharonError

HEADER: Final = struct.Struct("<HB")
HEADER_LEN: Final = 3
#: The C library's input and output buffer size; nothing larger can ever be received by it.
BUFFER_LEN: Final = 10240
#: The C library flushes its output buffer once it holds this much (90 % of 10 KiB).
FLUSH_THRESHOLD: Final = 9216

MAJOR_VERSION: Final = 3
MINOR_VERSION: Final = 1
#: The key every C client sends in its handshake.
DEFAULT_KEY: Final = 123141

#: ``N_INT`` / ``N_DBLE`` variable ids (the id spaces overlap; the type disambiguates).
N_NPART: Final = 0
N_BRHONO: Final = 0


class MessageType(enum.IntEnum):
    """``flukaio_message_type_t``; ERR is never sent, it marks failed reads in the C library."""

    ERR = 0
    PART = 1
    EOB = 2
    END = 3
    CONF = 4
    IPT = 5
    HSK = 6
    INT = 7
    DBLE = 8


class Layout(enum.Enum):
    """The two particle layouts; the value is the size of a whole PART message."""

    LEGACY = 95
    CURRENT = 121

    @classmethod
    def from_setting(cls, value: str) -> Layout | None:
        """'legacy' | 'current' -> the layout; 'auto' -> None (detect from the first PART)."""
        if value == "auto":
            return None
        return cls[value.upper()]


_IPT = struct.Struct("<HBIH")
_HSK = struct.Struct("<HBHHI")
_INT = struct.Struct("<HBHi")
_DBLE = struct.Struct("<HBHd")
_LEGACY = struct.Struct("<HBIIHH10d")
_CURRENT = struct.Struct("<HBII12dihd")
assert _LEGACY.size == Layout.LEGACY.value
assert _CURRENT.size == Layout.CURRENT.value

#: Whole-message size of every fixed-size type (PART depends on the layout).
FIXED_SIZES: Final[dict[MessageType, int]] = {
    MessageType.EOB: HEADER_LEN,
    MessageType.END: HEADER_LEN,
    MessageType.CONF: HEADER_LEN,
    MessageType.IPT: _IPT.size,
    MessageType.HSK: _HSK.size,
    MessageType.INT: _INT.size,
    MessageType.DBLE: _DBLE.size,
}
_PART_SIZES: Final = frozenset(layout.value for layout in Layout)

Reason: TypeAlias = Literal[
    "zero_size",        # size field 0: the C library never consumes it and stalls
    "short_size",       # size 1 or 2: shorter than the header itself
    "oversize",         # size > 10240: larger than any FlukaIO input buffer
    "unknown_type",     # type not in 1..8 (0 = ERR is never sent)
    "size_mismatch",    # size does not match a fixed-size type
    "particle_size",    # PART neither 95 (legacy) nor 121 (current) bytes
    "layout_mismatch",  # PART of the other layout than the connection's
    "handshake",        # first message not HSK, or a server reply that is not HSK
    "version",          # handshake major version is not 3
    "key",              # server answered the handshake with another key
    "unexpected",       # a message that is legal FlukaIO but not at this point of the session
    "truncated",        # the peer closed the connection in the middle of a message
    "batch_too_large",  # more particles in one batch than the receiver accepts
]
REASONS: Final[tuple[str, ...]] = Reason.__args__  # type: ignore[attr-defined]


class FlukaIOError(CharonError):
    """Base of FlukaIO errors. FlukaIO has no error message: the answer is closing the socket."""


class FlukaIOProtocolError(FlukaIOError):
    """Bytes that break the FlukaIO framing or session rules; ``reason`` is a bounded metric label."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


class HandshakeError(FlukaIOProtocolError):
    """The peer's handshake was refused (the C library reports EPROTO and closes)."""


@dataclass(frozen=True, slots=True)
class Eob:
    """End of batch: every particle of the batch has been sent."""


@dataclass(frozen=True, slots=True)
class End:
    """End of computation; answered with END, then the connection closes."""


@dataclass(frozen=True, slots=True)
class Conf:
    """Reserved configuration message without payload; accepted and ignored."""


@dataclass(frozen=True, slots=True)
class Ipt:
    """Insertion point: where and when the following particles enter."""

    turn: int
    ipt: int


@dataclass(frozen=True, slots=True)
class Hsk:
    """Handshake: protocol version and a key the server echoes."""

    major: int = MAJOR_VERSION
    minor: int = MINOR_VERSION
    key: int = DEFAULT_KEY


@dataclass(frozen=True, slots=True)
class IntVar:
    """``N_INT``: a named int32 (id ``N_NPART``: the largest particle id)."""

    id: int
    value: int


@dataclass(frozen=True, slots=True)
class DbleVar:
    """``N_DBLE``: a named float64 (id ``N_BRHONO``: the reference rigidity)."""

    id: int
    value: float


@dataclass(frozen=True, slots=True)
class Particle:
    """One particle; ``aa``/``zz`` exist only in the legacy layout, spin/``pdgid``/``q`` only in
    the current one (the other layout's fields are not sent)."""

    id: int = 0
    gen: int = 0
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    tx: float = 0.0
    ty: float = 0.0
    tz: float = 0.0
    m: float = 0.0
    pc: float = 0.0
    t: float = 0.0
    weight: float = 1.0
    aa: int = 0
    zz: int = 0
    sx: float = 0.0
    sy: float = 0.0
    sz: float = 0.0
    pdgid: int = 0
    q: int = 0


@dataclass(frozen=True, slots=True)
class ParticleBlock:
    """Consecutive PART messages kept as their raw bytes (``count`` whole messages of ``layout``).

    Emitted instead of single :class:`Particle` objects when a decoder runs in block mode, so a
    batch of many particles is converted with one vectorised step and echoed without re-encoding.
    """

    layout: Layout
    data: bytes

    @property
    def count(self) -> int:
        return len(self.data) // self.layout.value


Message: TypeAlias = Eob | End | Conf | Ipt | Hsk | IntVar | DbleVar | Particle
Decoded: TypeAlias = Message | ParticleBlock

EOB_BYTES: Final = HEADER.pack(HEADER_LEN, MessageType.EOB)
END_BYTES: Final = HEADER.pack(HEADER_LEN, MessageType.END)
CONF_BYTES: Final = HEADER.pack(HEADER_LEN, MessageType.CONF)


def message_type(message: Message) -> MessageType:
    return _TYPES[type(message)]


_TYPES: Final[dict[type, MessageType]] = {
    Eob: MessageType.EOB,
    End: MessageType.END,
    Conf: MessageType.CONF,
    Ipt: MessageType.IPT,
    Hsk: MessageType.HSK,
    IntVar: MessageType.INT,
    DbleVar: MessageType.DBLE,
    Particle: MessageType.PART,
}


def encode_particle(p: Particle, layout: Layout) -> bytes:
    if layout is Layout.LEGACY:
        return _LEGACY.pack(_LEGACY.size, MessageType.PART, p.id, p.gen, p.aa, p.zz,
                            p.x, p.y, p.z, p.tx, p.ty, p.tz, p.m, p.pc, p.t, p.weight)
    return _CURRENT.pack(_CURRENT.size, MessageType.PART, p.id, p.gen, p.x, p.y, p.z,
                         p.tx, p.ty, p.tz, p.m, p.pc, p.t, p.sx, p.sy, p.sz, p.pdgid, p.q, p.weight)


def encode(message: Message, layout: Layout = Layout.CURRENT) -> bytes:
    """One whole message; ``layout`` matters only for particles.

    Raises :class:`struct.error` for a field out of its wire range (e.g. ipt > 65535).
    """
    match message:
        case Particle():
            return encode_particle(message, layout)
        case Eob():
            return EOB_BYTES
        case End():
            return END_BYTES
        case Conf():
            return CONF_BYTES
        case Ipt(turn, ipt):
            return _IPT.pack(_IPT.size, MessageType.IPT, turn, ipt)
        case Hsk(major, minor, key):
            return _HSK.pack(_HSK.size, MessageType.HSK, major, minor, key)
        case IntVar(var_id, value):
            return _INT.pack(_INT.size, MessageType.INT, var_id, value)
        case DbleVar(var_id, value):
            return _DBLE.pack(_DBLE.size, MessageType.DBLE, var_id, value)
    raise TypeError(f"not a FlukaIO message: {message!r}")


def check_header(size: int, type_code: int, layout: Layout | None) -> tuple[MessageType, Layout | None]:
    """Validate one header against the rules; returns the type and the (possibly detected) layout."""
    if size == 0:
        raise FlukaIOProtocolError("zero_size", "message size 0 (a message is at least its 3-byte header)")
    if size < HEADER_LEN:
        raise FlukaIOProtocolError("short_size", f"message size {size} is shorter than the 3-byte header")
    if size > BUFFER_LEN:
        raise FlukaIOProtocolError("oversize", f"message size {size} exceeds the {BUFFER_LEN}-byte limit")
    try:
        mtype = MessageType(type_code)
    except ValueError:
        mtype = MessageType.ERR
    if mtype is MessageType.ERR:
        raise FlukaIOProtocolError("unknown_type", f"unknown message type {type_code} (size {size})")
    if mtype is MessageType.PART:
        if size not in _PART_SIZES:
            raise FlukaIOProtocolError(
                "particle_size", f"particle message of {size} bytes (allowed: 95 legacy, 121 current)")
        if layout is None:
            return mtype, Layout(size)
        if size != layout.value:
            raise FlukaIOProtocolError(
                "layout_mismatch", f"particle message of {size} bytes on a connection using the "
                f"{layout.name.lower()} layout ({layout.value} bytes)")
        return mtype, layout
    expected = FIXED_SIZES[mtype]
    if size != expected:
        raise FlukaIOProtocolError(
            "size_mismatch", f"{mtype.name} message of {size} bytes (must be {expected})")
    return mtype, layout


def decode_particle(buf: bytes | bytearray | memoryview, offset: int, layout: Layout) -> Particle:
    if layout is Layout.LEGACY:
        (_, _, pid, gen, aa, zz, x, y, z, tx, ty, tz, m, pc, t, weight) = _LEGACY.unpack_from(buf, offset)
        return Particle(pid, gen, x, y, z, tx, ty, tz, m, pc, t, weight, aa=aa, zz=zz)
    (_, _, pid, gen, x, y, z, tx, ty, tz, m, pc, t, sx, sy, sz, pdgid, q, weight) = \
        _CURRENT.unpack_from(buf, offset)
    return Particle(pid, gen, x, y, z, tx, ty, tz, m, pc, t, weight, sx=sx, sy=sy, sz=sz, pdgid=pdgid, q=q)


def _decode_body(buf: bytes | bytearray | memoryview, offset: int, mtype: MessageType, layout: Layout | None) -> Message:
    match mtype:
        case MessageType.PART:
            assert layout is not None
            return decode_particle(buf, offset, layout)
        case MessageType.EOB:
            return Eob()
        case MessageType.END:
            return End()
        case MessageType.CONF:
            return Conf()
        case MessageType.IPT:
            _, _, turn, ipt = _IPT.unpack_from(buf, offset)
            return Ipt(turn, ipt)
        case MessageType.HSK:
            _, _, major, minor, key = _HSK.unpack_from(buf, offset)
            return Hsk(major, minor, key)
        case MessageType.INT:
            _, _, var_id, ivalue = _INT.unpack_from(buf, offset)
            return IntVar(var_id, ivalue)
        case MessageType.DBLE:
            _, _, var_id, dvalue = _DBLE.unpack_from(buf, offset)
            return DbleVar(var_id, dvalue)
    raise AssertionError(mtype)  # pragma: no cover - check_header admits only the types above


def decode(data: bytes, layout: Layout | None = None) -> Message:
    """Decode exactly one whole message (tests, tools); raises :class:`FlukaIOProtocolError`."""
    if len(data) < HEADER_LEN:
        raise FlukaIOProtocolError("short_size", f"{len(data)} bytes cannot hold a message header")
    size, type_code = HEADER.unpack_from(data, 0)
    mtype, layout = check_header(size, type_code, layout)
    if len(data) != size:
        raise FlukaIOProtocolError("size_mismatch", f"message claims {size} bytes, {len(data)} given")
    return _decode_body(data, 0, mtype, layout)


class StreamDecoder:
    """Reassembles messages from a byte stream fed in arbitrary pieces.

    ``feed(data)`` returns every message completed by ``data``, in order. In block mode, runs of
    PART messages come out as :class:`ParticleBlock` objects (one per run within one ``feed``).
    After a :class:`FlukaIOProtocolError` the stream cannot be resynchronised (FlukaIO has no
    markers): the decoder refuses further input and the connection must be closed.
    """

    def __init__(self, layout: Layout | None = None, *, blocks: bool = False) -> None:
        self.layout = layout
        self._blocks = blocks
        self._pending = bytearray()
        self._failed: FlukaIOProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete message held (at most one message, < 122 bytes)."""
        return len(self._pending)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Decoded]:
        if self._failed is not None:
            raise self._failed
        if self._pending:
            self._pending += data
            buf: bytes | bytearray | memoryview = self._pending
        else:
            buf = data
        out: list[Decoded] = []
        try:
            consumed = self._parse(buf, out)
        except FlukaIOProtocolError as exc:
            self._failed = exc
            self._pending.clear()
            raise
        rest = memoryview(buf)[consumed:]
        if buf is self._pending:
            rest.release()
            del self._pending[:consumed]
        else:
            self._pending[:] = rest
            rest.release()
        return out

    def _parse(self, buf: bytes | bytearray | memoryview, out: list[Decoded]) -> int:
        n = len(buf)
        pos = 0
        block_start = -1
        part_size = self.layout.value if self.layout is not None else -1
        unpack_header = HEADER.unpack_from
        while n - pos >= HEADER_LEN:
            size, type_code = unpack_header(buf, pos)
            if type_code == MessageType.PART and size == part_size:
                # Fast path inside a run of particles of the already checked layout.
                if n - pos < size:
                    break
                if block_start < 0:
                    block_start = pos
                if not self._blocks:
                    out.append(decode_particle(buf, pos, self.layout))  # type: ignore[arg-type]
                pos += size
                continue
            mtype, self.layout = check_header(size, type_code, self.layout)
            if mtype is MessageType.PART:
                part_size = size
                continue
            if n - pos < size:
                break
            if block_start >= 0:
                self._close_block(buf, block_start, pos, out)
                block_start = -1
            out.append(_decode_body(buf, pos, mtype, self.layout))
            pos += size
        if block_start >= 0:
            self._close_block(buf, block_start, pos, out)
        return pos

    def _close_block(self, buf: bytes | bytearray | memoryview, start: int, end: int,
                     out: list[Decoded]) -> None:
        if self._blocks and end > start:
            assert self.layout is not None
            out.append(ParticleBlock(self.layout, bytes(buf[start:end])))

    def check_eof(self) -> None:
        """Call when the peer closed: raises if it stopped in the middle of a message."""
        if self._pending:
            raise FlukaIOProtocolError(
                "truncated", f"peer closed in the middle of a message ({len(self._pending)} bytes)")
