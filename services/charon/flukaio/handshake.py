"""The FlukaIO handshake rules, sans-IO: what a server answers and what a client accepts.

The client sends HSK{major 3, minor 1, key}; the server requires an HSK with major 3 as the very
first message and answers HSK{its own major 3 and minor 1, the client's key}. Anything else is
refused by closing the connection without a reply. The minor version is informational only, and
nothing in the handshake identifies the particle layout.
"""

from __future__ import annotations

from charon.flukaio.codec import (
    MAJOR_VERSION,
    MINOR_VERSION,
    Decoded,
    HandshakeError,
    Hsk,
    ParticleBlock,
    message_type,
)


def _name(message: Decoded) -> str:
    return "PART" if isinstance(message, ParticleBlock) else message_type(message).name


def answer(first: Decoded) -> Hsk:
    """Server side: the reply to the client's first message; raises :class:`HandshakeError`."""
    if not isinstance(first, Hsk):
        raise HandshakeError("handshake", f"first message is {_name(first)}, not HSK")
    if first.major != MAJOR_VERSION:
        raise HandshakeError(
            "version", f"handshake major version {first.major} (this side speaks {MAJOR_VERSION})")
    return Hsk(MAJOR_VERSION, MINOR_VERSION, first.key)


def check_reply(sent: Hsk, reply: Decoded) -> Hsk:
    """Client side: accept the server's reply (HSK, same major, our key; minor ignored)."""
    if not isinstance(reply, Hsk):
        raise HandshakeError("handshake", f"server answered the handshake with {_name(reply)}, not HSK")
    if reply.major != sent.major:
        raise HandshakeError(
            "version", f"server speaks major version {reply.major} (this side speaks {sent.major})")
    if reply.key != sent.key:
        raise HandshakeError("key", f"server answered key {reply.key} (sent {sent.key})")
    return reply
