"""Who may complete a CURVE handshake with a server socket, and what is done about those refused.

libzmq runs the CURVE handshake itself and asks a ZAP handler (RFC 27) whether the client's
public key may connect; a refused peer's connection is closed inside libzmq, so it never reaches
the service and gets no reply of any kind. Here:

* :class:`AllowPolicy` (sans-IO) answers ZAP: per ZAP domain (one per server socket, see
  :mod:`charon.sockets`), the allowed public keys, or any key;
* :class:`RefusalLog` (sans-IO, time as an argument) decides which refusals get a log line: the
  first of each refused key, and for handshakes that fail before a key is known (a peer without
  CURVE, or one holding another server key, which libzmq reports without its address) the first
  of each socket and reason, then one line a minute with the count since;
* :class:`Guard` is the thin driver: pyzmq's ``ThreadAuthenticator`` (``zmq.auth``) serves ZAP
  with the policy, and a monitor thread counts every failed handshake of the protected sockets in
  ``charon_auth_refused_total{socket}``. A guard is started after its sockets are configured and
  before they bind, and stopped after they close.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

import zmq
from prometheus_client import Counter
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import parse_monitor_message

from charon.curve import ServerKeys
from charon.errors import StartupError

log = logging.getLogger("charon.auth")

#: Monitor events of a handshake that did not complete: each is one refused connection attempt.
FAILED_HANDSHAKES: Final = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                            | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_POLL_MS = 100
_REASONS: Final[dict[int, str]] = {
    int(zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH): "a peer without CURVE (plain socket)",
    int(zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC): "a CURVE handshake that does not decrypt "
                                           "(the peer holds another server public key)",
}


def reason_of(event: int, value: int) -> str:
    """What a failed-handshake monitor event means, in words."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return f"client key refused (ZAP status {value})"
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return _REASONS.get(value, f"handshake protocol error 0x{value:08x}")
    return f"a handshake broken off ({os.strerror(value) if value > 0 else 'no detail'})"


class AllowPolicy:
    """The ZAP decision: may this public key (Z85) connect to the socket of this ZAP domain?"""

    def __init__(self) -> None:
        self._allowed: dict[str, frozenset[bytes] | None] = {}

    def add(self, domain: str, allowed: frozenset[bytes] | None) -> None:
        """``allowed`` None = any key (encryption without authentication)."""
        self._allowed[domain] = allowed

    def allows(self, domain: str, key: bytes) -> bool:
        if domain not in self._allowed:
            return False  # a CURVE socket charon did not configure: refuse rather than guess
        allowed = self._allowed[domain]
        return allowed is None or key in allowed


class RefusalLog:
    """Which refusals are logged: bounded memory, however many peers a hostile network has."""

    def __init__(self, max_keys: int = 4096, interval_s: float = 60.0) -> None:
        self.max_keys = max_keys
        self.interval_s = interval_s
        self._keys: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        #: (socket, reason) -> (when last logged, refusals not logged since)
        self._reasons: dict[tuple[str, str], tuple[float, int]] = {}

    def key_refused(self, socket: str, key: bytes) -> bool:
        """True the first time this key is refused on this socket (remembered up to max_keys)."""
        peer = (socket, key)
        if peer in self._keys:
            self._keys.move_to_end(peer)
            return False
        self._keys[peer] = None
        if len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
        return True

    def handshake_failed(self, socket: str, reason: str, now: float) -> int | None:
        """The number of such refusals to report now (this one included), or None for no line."""
        key = (socket, reason)
        last = self._reasons.get(key)
        if last is None or now - last[0] >= self.interval_s:
            self._reasons[key] = (now, 0)
            return 1 if last is None else last[1] + 1
        self._reasons[key] = (last[0], last[1] + 1)
        return None


class _Provider:
    """pyzmq's credentials-provider shape (``callback(domain, key)``) around the policy."""

    def __init__(self, policy: AllowPolicy, refusals: RefusalLog, lock: threading.Lock) -> None:
        self.policy = policy
        self.refusals = refusals
        self.lock = lock

    def callback(self, domain: str, key: bytes) -> bool:
        if self.policy.allows(domain, key):
            return True
        with self.lock:
            first = self.refusals.key_refused(domain, key)
        if first:
            log.warning("%s socket: refused CURVE key %s (not in the allowed certificates; logged once per key)",
                        domain, key.decode("ascii", "replace"))
        return False


class Guard:
    """ZAP and refusal counting for the CURVE server sockets of one service (one per zmq context)."""

    def __init__(self, context: zmq.Context[Any], refused: Counter,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.context = context
        self.refused = refused
        self.clock = clock
        self.policy = AllowPolicy()
        self.refusals = RefusalLog()
        self._lock = threading.Lock()
        self._monitors: list[tuple[zmq.Socket[Any], str]] = []
        self._auth: ThreadAuthenticator | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def protect(self, sock: zmq.Socket[Any], domain: str, keys: ServerKeys) -> None:
        """Admit to ``sock`` (a CURVE server socket of ZAP domain ``domain``, not bound yet) the
        keys of ``keys.allowed``, and count its refused handshakes."""
        assert self._thread is None, "protect() before start()"
        self.policy.add(domain, keys.allowed)
        self.refused.labels(domain)  # the series exists (at 0) before the first refusal
        self._monitors.append((sock.get_monitor_socket(FAILED_HANDSHAKES), domain))

    def start(self) -> None:
        auth = ThreadAuthenticator(self.context, log=logging.getLogger("charon.auth.zap"))
        try:
            auth.start()
        except zmq.ZMQError as exc:
            auth.stop()
            raise StartupError(f"cannot start the CURVE authenticator: {exc} (one CURVE server per "
                               "ZeroMQ context)") from None
        provider = _Provider(self.policy, self.refusals, self._lock)
        for _, domain in self._monitors:
            auth.configure_curve_callback(domain, provider)
        self._auth = auth
        self._thread = threading.Thread(target=self._watch, name="charon-auth-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop counting and answering ZAP (after the protected sockets are closed)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        else:
            for sock, _ in self._monitors:
                sock.close(linger=0)
        self._monitors.clear()
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def _watch(self) -> None:
        poller = zmq.Poller()
        for sock, _ in self._monitors:
            poller.register(sock, zmq.POLLIN)
        domains = dict(self._monitors)
        try:
            while not self._stop.is_set():
                for sock, _ in poller.poll(_POLL_MS):
                    while sock.poll(0):
                        self._event(domains[sock], sock.recv_multipart())
        finally:
            for sock in domains:
                sock.close(linger=0)

    def _event(self, domain: str, message: list[bytes]) -> None:
        event = parse_monitor_message(message)
        kind, value = int(event["event"]), int(event["value"])
        if not kind & FAILED_HANDSHAKES:
            return
        self.refused.labels(domain).inc()
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return  # logged by the ZAP callback, which knows the key
        reason = reason_of(kind, value)
        with self._lock:
            count = self.refusals.handshake_failed(domain, reason, self.clock())
        if count is not None:
            log.warning("%s socket: refused %s (%d since the last such line; peers retry, counted in "
                        "charon_auth_refused_total)", domain, reason, count)
