"""What the gateway does with each FlukaIO message of one connection, sans-IO.

A :class:`GatewaySession` takes decoded messages (particles as :class:`ParticleBlock`) and
returns actions for the driver: :class:`Send` bytes, :class:`Simulate` a finished batch (the
driver answers it with hit particles and EOB), or :class:`Close` after END. Protocol violations
raise :class:`FlukaIOProtocolError`; the driver then closes the connection without a reply.

Rules: the first message must be a valid handshake; IPT sets the event id (``turn``) and region
(``ipt``) of the batch being collected, and a batch without its own IPT takes the previous event
id + 1 (0 for the first), so no two batches share random numbers; CONF, INT and DBLE are
accepted and ignored; a second HSK is refused; END is answered with END and closes.

In echo mode the session behaves like the C sample server: particles are echoed as received
(flushed once 9216 bytes are pending, like the C library's output buffer), EOB with EOB, END
with END.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from charon.flukaio import codec, handshake
from charon.flukaio.codec import (
    FLUSH_THRESHOLD,
    Conf,
    DbleVar,
    Decoded,
    End,
    Eob,
    FlukaIOProtocolError,
    Hsk,
    IntVar,
    Ipt,
    Particle,
    ParticleBlock,
)


@dataclass(slots=True)
class Batch:
    """The particles between two EOBs, with the insertion point that came with them."""

    event_id: int
    ipt: int | None = None
    blocks: list[ParticleBlock] = field(default_factory=list)
    particles: int = 0


@dataclass(frozen=True, slots=True)
class Send:
    data: bytes


@dataclass(frozen=True, slots=True)
class Simulate:
    batch: Batch


@dataclass(frozen=True, slots=True)
class Close:
    """END was answered; close the connection (a normal end)."""


Action = Send | Simulate | Close


class GatewaySession:
    def __init__(self, *, echo: bool = False, max_batch_particles: int = 10_000_000) -> None:
        self.echo = echo
        self.max_batch_particles = max_batch_particles
        self.handshaken = False
        self.finished = False
        self.key: int | None = None
        self._batch = Batch(event_id=0)
        self._echo_out = bytearray()

    @property
    def pending_particles(self) -> int:
        return self._batch.particles

    def handle(self, message: Decoded) -> list[Action]:
        if self.finished:
            raise FlukaIOProtocolError("unexpected", "message after END")
        if not self.handshaken:
            reply = handshake.answer(message)
            self.handshaken = True
            self.key = reply.key
            return [Send(codec.encode(reply))]
        match message:
            case ParticleBlock():
                return self._particles(message)
            case Ipt(turn, ipt):
                if not self.echo:
                    self._batch.event_id = turn
                    self._batch.ipt = ipt
                return []
            case Eob():
                return self._end_of_batch()
            case End():
                self.finished = True
                out = bytes(self._echo_out) + codec.END_BYTES
                self._echo_out.clear()
                return [Send(out), Close()]
            case Conf() | IntVar() | DbleVar():
                return []
            case Hsk():
                raise FlukaIOProtocolError("unexpected", "a second handshake on a handshaken connection")
            case Particle():
                raise TypeError("the gateway decodes particles in block mode")
        raise TypeError(f"not a FlukaIO message: {message!r}")

    def _particles(self, block: ParticleBlock) -> list[Action]:
        if self.echo:
            self._echo_out += block.data
            if len(self._echo_out) >= FLUSH_THRESHOLD:
                out = bytes(self._echo_out)
                self._echo_out.clear()
                return [Send(out)]
            return []
        count = self._batch.particles + block.count
        if count > self.max_batch_particles:
            raise FlukaIOProtocolError(
                "batch_too_large", f"batch of more than {self.max_batch_particles} particles "
                "(setting gateway.max_batch_particles)")
        self._batch.blocks.append(block)
        self._batch.particles = count
        return []

    def _end_of_batch(self) -> list[Action]:
        if self.echo:
            out = bytes(self._echo_out) + codec.EOB_BYTES
            self._echo_out.clear()
            return [Send(out)]
        batch = self._batch
        self._batch = Batch(event_id=(batch.event_id + 1) & 0xFFFFFFFF)
        return [Simulate(batch)]
