"""Client side of the FlukaIO API: connect to a server and handshake (``flukaio_connect``)."""

from __future__ import annotations

import socket

from charon.flukaio import codec, handshake
from charon.flukaio.codec import FlukaIOProtocolError, Hsk, Layout
from charon.flukaio.connection import DEFAULT_TIMEOUT_S, Connection


def connect(host: str, port: int, *, key: int = codec.DEFAULT_KEY, layout: Layout | None = None,
            read_timeout: float = DEFAULT_TIMEOUT_S, write_timeout: float = DEFAULT_TIMEOUT_S,
            connect_timeout: float | None = None) -> Connection:
    """Open a TCP connection, send HSK{3, 1, key} and check the server's reply.

    Returns the handshaken :class:`Connection`. Raises :class:`OSError` when the TCP connection
    fails (the C library would hand back a dead connection instead), and
    :class:`~charon.flukaio.codec.HandshakeError` (connection closed) when the server refuses or
    answers wrongly; a server that closes or stays silent raises ``ConnectionClosed`` or
    ``FlukaIOTimeout`` after ``read_timeout``.
    """
    sock = socket.create_connection((host, port), timeout=connect_timeout)
    conn = Connection(sock, layout=layout, read_timeout=read_timeout, write_timeout=write_timeout)
    try:
        sent = Hsk(codec.MAJOR_VERSION, codec.MINOR_VERSION, key)
        conn.send(sent)
        reply = conn.wait_message()
        handshake.check_reply(sent, reply)
    except FlukaIOProtocolError as exc:
        conn.close()
        if isinstance(exc, codec.HandshakeError):
            raise
        raise codec.HandshakeError(exc.reason, f"handshake reply: {exc}") from None
    except BaseException:
        conn.close()
        raise
    conn.peer_key = key
    return conn
