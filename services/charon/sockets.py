"""Every ZeroMQ socket charon opens, configured in one place per role.

A driver asks for the socket of its role here instead of setting options itself, so an option that
concerns a role (security, high-water marks, linger) is added once and holds for every driver and
test that plays it. Endpoint helpers for connecting and reporting live here too.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import zmq

from charon.errors import StartupError
from charon.settings import LimitsSettings

if TYPE_CHECKING:
    from charon.curve import ClientKeys, ServerKeys

log = logging.getLogger("charon.sockets")


def _socket(ctx: zmq.Context[Any], kind: int) -> zmq.Socket[Any]:
    sock: zmq.Socket[Any] = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    return sock


#: ZAP domains of the CURVE server sockets: the ``socket`` label of ``charon_auth_refused_total``.
CLIENTS: str = "clients"
WORKERS: str = "workers"


def _curve_server(sock: zmq.Socket[Any], keys: ServerKeys | None, domain: str) -> None:
    """CURVE server options (before bind); the ZAP handler decides per ``domain`` who may connect."""
    if keys is None:
        return
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.keys.secret)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.keys.public)
    sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())


def _curve_client(sock: zmq.Socket[Any], keys: ClientKeys | None) -> None:
    """CURVE client options (before connect): the server's public key and this peer's key pair."""
    if keys is None:
        return
    sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.keys.secret)


def client_facing(ctx: zmq.Context[Any], limits: LimitsSettings, curve: ServerKeys | None = None) -> zmq.Socket[Any]:
    """A client-facing ROUTER (``charon serve``'s socket, the router's frontend).

    * ZMQ_MAXMSGSIZE = ``limits.max_frame_bytes``: a frame larger than any frame of a request at
      the byte limit closes its connection before it is buffered (libzmq reads the length first);
    * ZMQ_SNDHWM = ``limits.client_send_hwm`` replies per connection, with ROUTER_MANDATORY so a
      reply over it fails (EAGAIN, counted by the driver) instead of vanishing, as does a reply
      to a connection that has gone (EHOSTUNREACH); replies are sent with NOBLOCK;
    * ZMQ_RCVHWM = ``limits.client_receive_hwm`` requests read ahead per connection: beyond it
      libzmq stops reading that connection (TCP back-pressure on the client, nothing is dropped),
      so a client that floods cannot make the process buffer its requests faster than the state
      machine admits or refuses them;
    * CURVE server options when ``curve`` is given (ZAP domain ``clients``).
    """
    sock = _socket(ctx, zmq.ROUTER)
    sock.setsockopt(zmq.IPV6, 1)
    sock.setsockopt(zmq.MAXMSGSIZE, limits.max_frame_bytes)
    sock.setsockopt(zmq.SNDHWM, limits.client_send_hwm)
    sock.setsockopt(zmq.RCVHWM, limits.client_receive_hwm)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    _curve_server(sock, curve, CLIENTS)
    return sock


def serve_socket(ctx: zmq.Context[Any], curve: ServerKeys | None = None, *,
                 limits: LimitsSettings | None = None) -> zmq.Socket[Any]:
    """``charon serve``'s client-facing ROUTER (binds; IPv6 endpoints too, IPv4 where it must)."""
    return client_facing(ctx, limits or LimitsSettings(), curve)


def router_frontend(ctx: zmq.Context[Any], curve: ServerKeys | None = None, *,
                    limits: LimitsSettings | None = None) -> zmq.Socket[Any]:
    """The router's client-facing ROUTER (see :func:`client_facing`)."""
    return client_facing(ctx, limits or LimitsSettings(), curve)


def router_backend(ctx: zmq.Context[Any], curve: ServerKeys | None = None) -> zmq.Socket[Any]:
    """The router's worker-facing ROUTER: no high-water marks (the state machine bounds what each
    worker holds by its capacity), and a send to a worker whose connection closed fails
    (EHOSTUNREACH) instead of vanishing, so its requests are requeued at once."""
    sock = _socket(ctx, zmq.ROUTER)
    sock.setsockopt(zmq.IPV6, 1)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    _curve_server(sock, curve, WORKERS)
    return sock


def worker_dealer(ctx: zmq.Context[Any], router: str, curve: ClientKeys | None = None) -> zmq.Socket[Any]:
    """A worker's DEALER to the router (a new one, with a new identity, for every connection).

    Sends never wait: with no high-water mark they only could when the connection is gone for
    good (libzmq stops reconnecting after the router refused the CURVE key), and then raise
    ``zmq.Again`` for the driver to start a fresh connection instead of hanging.
    """
    sock = _socket(ctx, zmq.DEALER)
    sock.setsockopt(zmq.IPV6, connect_ipv6(router))
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.SNDTIMEO, 0)
    _curve_client(sock, curve)
    return sock


def client_req(ctx: zmq.Context[Any], endpoint: str, curve: ClientKeys | None = None) -> zmq.Socket[Any]:
    """The client library's REQ socket (a fresh one per Lazy Pirate try after a timeout)."""
    sock = _socket(ctx, zmq.REQ)
    sock.setsockopt(zmq.IPV6, connect_ipv6(endpoint))
    _curve_client(sock, curve)
    return sock


def client_dealer(ctx: zmq.Context[Any], endpoint: str, curve: ClientKeys | None = None) -> zmq.Socket[Any]:
    """A v2 client's DEALER (not yet connected): many events in flight on one connection, so no
    high-water mark may drop or block what the credit window already bounds."""
    sock = _socket(ctx, zmq.DEALER)
    sock.setsockopt(zmq.IPV6, connect_ipv6(endpoint))
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    _curve_client(sock, curve)
    return sock


def connect_ipv6(endpoint: str) -> int:
    """The zmq.IPV6 option for a socket connecting to ``endpoint``.

    Only an IPv6 literal turns it on: with it on, libzmq resolves names such as ``localhost`` to
    ``::1`` first, which an IPv4-only peer (e.g. a ChAR0N router) never answers. Binding sockets
    always enable it and so listen on both families.
    """
    return int(endpoint.startswith("tcp://["))


def resolve_endpoint(socket: zmq.Socket[Any]) -> str:
    """The endpoint a socket actually bound (a ``*`` port resolved), connectable from this host."""
    raw = socket.getsockopt(zmq.LAST_ENDPOINT)
    endpoint = raw.decode() if isinstance(raw, bytes) else str(raw)
    # An IPv6-enabled socket reports an IPv4 address as v4-mapped; IPv4-only clients need it plain.
    endpoint = _V4_MAPPED.sub(r"tcp://\1:", endpoint)
    # A wildcard bind listens on both families: 127.0.0.1 reaches it from IPv4-only clients too.
    return endpoint.replace("tcp://0.0.0.0:", "tcp://127.0.0.1:").replace("tcp://[::]:", "tcp://127.0.0.1:")


_V4_MAPPED = re.compile(r"^tcp://\[::ffff:(\d+\.\d+\.\d+\.\d+)\]:", re.IGNORECASE)


def bind(sock: zmq.Socket[Any], endpoint: str) -> str:
    """Bind ``sock`` and return the endpoint it bound; raises :class:`~charon.errors.StartupError`."""
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise StartupError(f"cannot bind {endpoint}: {exc}") from None
    return resolve_endpoint(sock)


def send_reply(sock: zmq.Socket[Any], frames: Any) -> str | None:
    """Send a reply on a :func:`client_facing` socket without blocking: None when sent, else why
    not (``hwm``: the connection has ``limits.client_send_hwm`` replies unread; ``gone``: it closed)."""
    try:
        sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
    except zmq.Again:
        return "hwm"
    except zmq.ZMQError:
        return "gone"
    return None


class DroppedReplies:
    """Counts replies :func:`send_reply` could not send, in a ``reason``-labelled counter, and
    logs the 1st, 10th, 100th, ... of each reason (a client that never reads would otherwise
    cost one log line per reply)."""

    def __init__(self, counter: Any) -> None:
        self._counter = counter
        self._seen: dict[str, int] = {}

    def __call__(self, reason: str) -> None:
        self._counter.labels(reason).inc()
        n = self._seen[reason] = self._seen.get(reason, 0) + 1
        if str(n).rstrip("0") == "1":
            if reason == "hwm":
                log.warning("reply dropped (%d so far): a client connection has limits.client_send_hwm "
                            "replies unread", n)
            else:
                log.info("reply to a departed client dropped (%d so far)", n)


def peer_address(frame: zmq.Frame) -> str:
    """The network address of the peer a received frame came from (ZeroMQ's ``Peer-Address``);
    empty where the transport has none (inproc). It keys v1 async runs: the ratpac-two client
    opens a new socket, hence a new identity, for every request."""
    try:
        return str(frame.get("Peer-Address"))
    except (zmq.ZMQError, ValueError):
        return ""
