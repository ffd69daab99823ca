"""Server side of the FlukaIO API: listen, accept and handshake (``flukaio_server_*``).

:meth:`Server.accept` returns only handshaken connections; a client that fails the handshake is
closed without a reply and reported with :class:`~charon.flukaio.codec.HandshakeError`, after
which the caller may simply accept the next one, as the C sample server does.
"""

from __future__ import annotations

import socket
from types import TracebackType
from typing import Self

from charon.flukaio import handshake
from charon.flukaio.codec import FlukaIOError, FlukaIOProtocolError, HandshakeError, Layout
from charon.flukaio.connection import DEFAULT_TIMEOUT_S, Connection, FlukaIOTimeout

_BACKLOG = 5


class Server:
    """A listening FlukaIO server. ``start(port)`` with port 0 picks a free port and returns it."""

    def __init__(self, *, host: str = "0.0.0.0", layout: Layout | None = None,
                 read_timeout: float = DEFAULT_TIMEOUT_S, write_timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.host = host
        self.layout = layout
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self._sock: socket.socket | None = None

    def start(self, port: int = 0) -> int:
        """Listen on ``port`` (0 = any free port); returns the port. Raises if already started."""
        if self._sock is not None:
            raise FlukaIOError("server already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((self.host, port))
            sock.listen(_BACKLOG)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        return self.port

    @property
    def port(self) -> int:
        if self._sock is None:
            raise FlukaIOError("server not started")
        return int(self._sock.getsockname()[1])

    def accept(self, timeout: float | None = None) -> Connection:
        """Wait for a client (``timeout`` None = forever) and handshake with it.

        Raises :class:`HandshakeError` (the client was closed without reply), ``FlukaIOTimeout``
        (no client in time, or no handshake within the read timeout) or ``ConnectionClosed``.
        """
        if self._sock is None:
            raise FlukaIOError("server not started")
        self._sock.settimeout(timeout)
        try:
            client, _ = self._sock.accept()
        except TimeoutError:
            raise FlukaIOTimeout(f"no client within {timeout:g} s") from None
        conn = Connection(client, layout=self.layout, read_timeout=self.read_timeout,
                          write_timeout=self.write_timeout)
        try:
            first = conn.wait_message()
            reply = handshake.answer(first)
            conn.send(reply)
        except FlukaIOProtocolError as exc:
            conn.close()
            if isinstance(exc, HandshakeError):
                raise
            raise HandshakeError(exc.reason, f"handshake: {exc}") from None
        except BaseException:
            conn.close()
            raise
        conn.peer_key = reply.key
        return conn

    def shutdown(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()
