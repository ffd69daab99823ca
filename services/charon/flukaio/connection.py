"""A blocking FlukaIO connection over a TCP socket with the C library's buffering semantics.

Sends append whole messages to a 10 KiB output buffer that is flushed, in one ``sendall``, by
EOB, END, HSK, INT and DBLE, and by a particle that brings it to 90 % (9216 B); IPT never
flushes. So a peer sees a batch (IPT, particles, EOB) as one write, and never a part of a message,
which the C library cannot cope with. Receiving is either non-blocking
(:meth:`Connection.receive_message`) or blocking with the read timeout
(:meth:`Connection.wait_message`). Unlike the C library, a message arriving in pieces is simply
waited for (no "two attempts" failure), write errors are raised, and malformed input raises a
:class:`~charon.flukaio.codec.FlukaIOProtocolError` instead of corrupting memory.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections import deque
from types import TracebackType
from typing import Self

from charon.flukaio import codec
from charon.flukaio.codec import (
    BUFFER_LEN,
    FLUSH_THRESHOLD,
    DbleVar,
    FlukaIOError,
    Hsk,
    IntVar,
    Ipt,
    Layout,
    Message,
    Particle,
    StreamDecoder,
)

#: The C library's default read and write timeouts, seconds.
DEFAULT_TIMEOUT_S = 3000.0
_RECV_BYTES = 65536


class ConnectionClosed(FlukaIOError):
    """The peer closed the connection (or it was closed locally)."""


class FlukaIOTimeout(FlukaIOError, TimeoutError):
    """No complete message within the read timeout, or a write that could not finish in time."""


class BufferFull(FlukaIOError):
    """The 10 KiB output buffer has no room for the message (the C library returns -4)."""


class Connection:
    """One handshaken FlukaIO peer; build it with :func:`charon.flukaio.client.connect` or
    :meth:`charon.flukaio.server.Server.accept`.

    ``layout`` fixes the particle layout, or None detects it from the first particle received;
    particles are sent in that layout (current until one is known).
    """

    def __init__(self, sock: socket.socket, *, layout: Layout | None = None,
                 read_timeout: float = DEFAULT_TIMEOUT_S, write_timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self._sock: socket.socket | None = sock
        self._decoder = StreamDecoder(layout)
        self._inbox: deque[Message] = deque()
        self._out = bytearray()
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.peer_key: int | None = None

    # -- configuration -------------------------------------------------------------------------
    @property
    def layout(self) -> Layout | None:
        """The particle layout in use: configured, or detected from the first particle received."""
        return self._decoder.layout

    def set_read_timeout(self, seconds: float) -> float:
        self.read_timeout = float(seconds)
        return self.read_timeout

    def fileno(self) -> int:
        return self._socket().fileno()

    @property
    def closed(self) -> bool:
        return self._sock is None

    @property
    def pending_output(self) -> int:
        """Bytes queued and not yet flushed."""
        return len(self._out)

    # -- sending -------------------------------------------------------------------------------
    def send(self, message: Message) -> int:
        """Queue one message, flushing as the C library would; returns the bytes queued."""
        data = codec.encode(message, self.layout or Layout.CURRENT)
        if len(self._out) + len(data) > BUFFER_LEN:
            raise BufferFull(f"{len(data)}-byte message does not fit in the output buffer "
                             f"({len(self._out)} of {BUFFER_LEN} bytes used)")
        self._out += data
        if isinstance(message, Ipt):
            pass
        elif isinstance(message, Particle):
            if len(self._out) >= FLUSH_THRESHOLD:
                self.flush()
        else:
            self.flush()
        return len(data)

    def send_particle(self, particle: Particle) -> int:
        return self.send(particle)

    def send_ipt(self, turn: int, ipt: int) -> int:
        return self.send(Ipt(turn, ipt))

    def send_eob(self) -> int:
        return self.send(codec.Eob())

    def send_eoc(self) -> int:
        """End of computation (an END message)."""
        return self.send(codec.End())

    def send_int(self, var_id: int, value: int) -> int:
        return self.send(IntVar(var_id, value))

    def send_double(self, var_id: int, value: float) -> int:
        return self.send(DbleVar(var_id, value))

    def send_npart(self, npart: int) -> int:
        return self.send(IntVar(codec.N_NPART, npart))

    def send_brhono(self, brho: float) -> int:
        return self.send(DbleVar(codec.N_BRHONO, brho))

    def send_hsk(self, major: int = codec.MAJOR_VERSION, minor: int = codec.MINOR_VERSION,
                 key: int = codec.DEFAULT_KEY) -> int:
        return self.send(Hsk(major, minor, key))

    def flush(self) -> None:
        """Write the whole output buffer (whole messages only) in one ``sendall``."""
        if not self._out:
            return
        sock = self._socket()
        sock.settimeout(self.write_timeout)
        try:
            sock.sendall(self._out)
        except TimeoutError:
            raise FlukaIOTimeout(f"write not finished within {self.write_timeout:g} s") from None
        except OSError as exc:
            raise ConnectionClosed(f"write failed: {exc}") from None
        self._out.clear()

    # -- receiving -----------------------------------------------------------------------------
    def receive_message(self) -> Message | None:
        """Non-blocking: the next complete message, or None if none has arrived yet."""
        if self._inbox:
            return self._inbox.popleft()
        sock = self._socket()
        sock.setblocking(False)
        try:
            data = sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            raise ConnectionClosed(f"read failed: {exc}") from None
        self._absorb(data)
        return self._inbox.popleft() if self._inbox else None

    def wait_message(self, timeout: float | None = None) -> Message:
        """Block until a complete message arrives; ``timeout`` defaults to the read timeout.

        Raises :class:`FlukaIOTimeout`, :class:`ConnectionClosed` or a protocol error.
        """
        if self._inbox:
            return self._inbox.popleft()
        limit = self.read_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        sock = self._socket()
        while not self._inbox:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FlukaIOTimeout(f"no complete message within {limit:g} s")
            sock.settimeout(remaining)
            try:
                data = sock.recv(_RECV_BYTES)
            except TimeoutError:
                continue
            except OSError as exc:
                raise ConnectionClosed(f"read failed: {exc}") from None
            self._absorb(data)
        return self._inbox.popleft()

    def _absorb(self, data: bytes) -> None:
        if not data:
            self._decoder.check_eof()
            raise ConnectionClosed("peer closed the connection")
        for message in self._decoder.feed(data):
            assert not isinstance(message, codec.ParticleBlock)
            self._inbox.append(message)

    # -- lifetime ------------------------------------------------------------------------------
    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise ConnectionClosed("connection is closed")
        return self._sock

    def close(self) -> None:
        """Close without flushing, as ``flukaio_disconnect`` does (queued output is dropped)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
