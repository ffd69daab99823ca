"""How many client connections a client-facing socket holds, and closing those beyond the limit.

libzmq accepts every TCP connection a ROUTER's listener sees and has no option to cap them, so
idle connections can use up the process's descriptors (after which PING and /metrics fail). The
socket's monitor reports each accepted and each closed connection with its descriptor:
:class:`ConnectionCount` (no sockets, no clock) keeps the count and says which new connection is
over ``limits.max_client_connections``; :class:`ConnectionGuard` reads the monitor in the
service's poll loop and shuts such a connection down (``shutdown(2)`` on its descriptor, which
libzmq then closes itself and reports as closed), with one log line per burst.

:func:`raise_descriptor_limit` lifts the soft RLIMIT_NOFILE to the hard one when a serving
command starts (its ``main``), so the limit, not the descriptor table, is what refuses a client.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from charon.auth import FAILED_HANDSHAKES
from charon.sockets import CLIENTS

log = logging.getLogger("charon.connections")



#: Descriptors kept for everything that is not a client connection (workers, HTTP, files, libzmq).
RESERVED_DESCRIPTORS = 256


@dataclass(slots=True)
class ConnectionCount:
    """The open connections of one listener, from its monitor events."""

    limit: int
    open: int = 0
    refused: int = 0

    def accepted(self) -> bool:
        """A connection was accepted; True when it is over the limit and must be closed."""
        self.open += 1
        if self.open > self.limit:
            self.refused += 1
            return True
        return False

    def closed(self) -> None:
        self.open = max(0, self.open - 1)


class ConnectionGuard:
    """The monitor of one client-facing socket: :attr:`socket` goes in the service's poller, and
    :meth:`handle` is called when it is readable."""

    def __init__(self, sock: zmq.Socket[Any], limit: int, metrics: Any | None = None, *,
                 handshake: Callable[[str, int, int], None] | None = None) -> None:
        """``handshake``: where failed CURVE handshakes go (:meth:`charon.auth.Guard.handshake_event`;
        a socket has one monitor, and this is it)."""
        self.count = ConnectionCount(limit)
        #: Refusals already logged: one line when the count first passes 1, 10, 100, ...
        events = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
        if handshake is not None:
            events |= FAILED_HANDSHAKES
        self.socket: zmq.Socket[Any] = sock.get_monitor_socket(events)
        self._handshake = handshake
        self._owner = sock
        self._metrics = metrics
        self._logged_refused = 0

    def handle(self) -> None:
        """Every event waiting on the monitor."""
        while self.socket.poll(0):
            event = parse_monitor_message(self.socket.recv_multipart())
            if event["event"] == zmq.EVENT_ACCEPTED:
                if self.count.accepted():
                    _cut(int(event["value"]))
                    if self._metrics is not None:
                        self._metrics.client_connections_refused.inc()
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self.count.closed()
            elif self._handshake is not None:
                self._handshake(CLIENTS, int(event["event"]), int(event["value"]))
        if self._metrics is not None:
            self._metrics.client_connections.set(self.count.open)
        if len(str(self.count.refused)) > len(str(self._logged_refused)) or self._logged_refused == 0 < self.count.refused:
            log.warning("client connection refused: %d open, limits.max_client_connections = %d "
                        "(%d refused so far)", self.count.open, self.count.limit, self.count.refused)
        self._logged_refused = self.count.refused

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._owner.disable_monitor()
        self.socket.close(linger=0)


def _cut(fd: int) -> None:
    """Shut a connection down by descriptor without closing it: libzmq sees the end of the stream,
    closes the descriptor itself and reports it, so the descriptor is never reused under it."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return  # already gone
    try:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    finally:
        sock.detach()


def raise_descriptor_limit() -> tuple[int, int]:
    """Lift the soft RLIMIT_NOFILE to the hard limit; returns (soft, hard) as they are now."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return (-1, -1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError) as exc:
            log.warning("could not raise the descriptor limit from %d to %d: %s", soft, target, exc)
    return soft, hard


def descriptor_limit() -> int:
    """The soft RLIMIT_NOFILE now (-1 where there is none)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return -1
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return -1 if soft == resource.RLIM_INFINITY else int(soft)


def check_descriptors(max_connections: int) -> int:
    """The descriptor limit; a warning when it cannot hold ``max_connections`` clients."""
    soft = descriptor_limit()
    if 0 <= soft < max_connections + RESERVED_DESCRIPTORS:
        log.warning("descriptor limit %d is below limits.max_client_connections (%d) + %d reserved: "
                    "raise the hard RLIMIT_NOFILE (ulimit -n) or lower the setting", soft, max_connections,
                    RESERVED_DESCRIPTORS)
    return soft
