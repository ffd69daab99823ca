"""The HTTP side of every service: Prometheus ``/metrics``, liveness ``/healthz``, readiness ``/readyz``.

:class:`Health` is the state (ready or not, and a liveness check) that a service updates; it exists
whether or not HTTP is served, so in-process tests read it directly. :class:`HealthServer` serves
it and the service's metric registry. A port already in use is logged as a warning and the service
runs on without HTTP: losing metrics must never take the simulation down. ``/healthz`` asks the
liveness check (for example :class:`charon.liveness.Progress`: is the engine stuck?) and answers
503 with its reason, so a Kubernetes liveness probe restarts a process that still answers but no
longer works. The server answers on a fixed pool of threads (``metrics.threads``); connections wait
for their request in a selector, bounded (``metrics.max_waiting``, oldest evicted first) and with
an idle timeout, so idle connections can neither take a thread each nor lock scrapes out.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import selectors
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from charon.settings import MetricsSettings

log = logging.getLogger(__name__)


class Health:
    """Readiness (``/readyz``) and liveness (``/healthz``) of one service; thread-safe."""

    def __init__(self, liveness: Callable[[], str | None] | None = None) -> None:
        self._ready = threading.Event()
        #: None while the service is alive, else why not (the /healthz body).
        self.liveness: Callable[[], str | None] = liveness or (lambda: None)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def set_ready(self, ready: bool) -> None:
        if ready:
            self._ready.set()
        else:
            self._ready.clear()


class PooledHTTPServer(HTTPServer):
    """An HTTP server on a fixed pool of threads, where an idle connection costs no thread.

    Accepted connections wait in a selector (one watcher thread) until they have sent something;
    only then does one of ``threads`` workers answer (one request per connection, HTTP/1.0). A
    connection silent for ``idle_timeout_s`` is closed, and when ``max_waiting`` already wait, the
    one that has waited longest is closed to make room, so a new scrape always gets in however many
    idle connections a peer holds open. A peer that sends part of a request and stalls holds a
    worker for at most ``idle_timeout_s``.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any, *, threads: int, max_waiting: int,
                 idle_timeout_s: float) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.idle_timeout_s = idle_timeout_s
        self.max_waiting = max_waiting
        #: Connections closed unanswered: evicted to make room, or silent past the idle timeout.
        self.refused = 0
        self.timed_out = 0
        self._lock = threading.Lock()
        self._incoming: deque[tuple[Any, Any]] = deque()
        self._ready: queue.Queue[tuple[Any, Any] | None] = queue.Queue()
        self._closing = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._threads: list[threading.Thread] = []
        #: The listen backlog: a burst of connections waits in the kernel, not in SYN retries.
        self.request_queue_size = max(128, max_waiting)
        super().__init__(address, handler)  # binds: may raise (then server_close has run)
        self._threads = [threading.Thread(target=self._watch, name="health-http-watch", daemon=True)]
        self._threads += [threading.Thread(target=self._work, name=f"health-http-{i}", daemon=True)
                          for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        """On the accepting thread: hand the connection to the watcher."""
        request.settimeout(self.idle_timeout_s)
        with self._lock:
            self._incoming.append((request, client_address))
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    def _watch(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ, None)
        waiting: OrderedDict[Any, tuple[Any, float]] = OrderedDict()  # oldest first = deadline order
        try:
            while not self._closing.is_set():
                now = time.monotonic()
                timeout = min(0.5, max(0.0, next(iter(waiting.values()))[1] - now)) if waiting else 0.5
                for key, _ in selector.select(timeout):
                    if key.data is None:
                        with contextlib.suppress(BlockingIOError, OSError):
                            self._wake_r.recv(4096)
                        self._admit(selector, waiting)
                    else:
                        selector.unregister(key.fileobj)
                        client_address, _ = waiting.pop(key.fileobj)
                        self._ready.put((key.fileobj, client_address))
                now = time.monotonic()
                while waiting and next(iter(waiting.values()))[1] <= now:
                    request, _ = waiting.popitem(last=False)
                    selector.unregister(request)
                    self.timed_out += 1
                    self.shutdown_request(request)
        finally:
            for request in waiting:
                self.shutdown_request(request)
            selector.close()

    def _admit(self, selector: selectors.BaseSelector, waiting: OrderedDict[Any, tuple[Any, float]]) -> None:
        with self._lock:
            new, self._incoming = list(self._incoming), deque()
        for request, client_address in new:
            if len(waiting) >= self.max_waiting:  # make room: the longest-waiting one goes
                oldest, _ = waiting.popitem(last=False)
                selector.unregister(oldest)
                self.refused += 1
                self.shutdown_request(oldest)
            waiting[request] = (client_address, time.monotonic() + self.idle_timeout_s)
            selector.register(request, selectors.EVENT_READ, client_address)

    def _work(self) -> None:
        while True:
            item = self._ready.get()
            if item is None:
                return
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:  # one bad connection must not end the worker
                log.debug("HTTP connection from %s failed", client_address, exc_info=True)
            finally:
                self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        self._closing.set()
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")
        for thread in self._threads[:1]:
            thread.join(5.0)
        with self._lock:
            pending, self._incoming = list(self._incoming), deque()
        for request, _ in pending:
            self.shutdown_request(request)
        for _ in self._threads[1:]:
            self._ready.put(None)
        self._wake_r.close()
        self._wake_w.close()


class HealthServer:
    """Serves a registry's metrics and a :class:`Health` over HTTP in a daemon thread, when
    ``metrics.enabled``; started in a service's start-up, stopped in its shutdown."""

    def __init__(self, settings: MetricsSettings, default_port: int, registry: CollectorRegistry,
                 health: Health | None = None) -> None:
        host, _, port = (settings.addr or f":{default_port}").rpartition(":")
        self._host = host.strip("[]") or "0.0.0.0"
        self._port = int(port)
        self._enabled = settings.enabled
        self._settings = settings
        self.health = health or Health()
        self.registry = registry
        #: The bound ``host:port`` once started (None when off or the port was taken).
        self.address: str | None = None
        self._server: PooledHTTPServer | None = None

    def start(self) -> str | None:
        """Bind and serve; returns the bound ``host:port``, or None when off or it could not bind."""
        if not self._enabled or self._server is not None:
            return self.address
        health, registry = self.health, self.registry
        settings = self._settings

        class Handler(BaseHTTPRequestHandler):
            timeout = settings.idle_timeout_s

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    problem = health.liveness()
                    if problem is None:
                        self._send(200, b"ok\n")
                    else:
                        self._send(503, f"{problem}\n".encode())
                elif path == "/readyz":
                    ok = health.ready
                    self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
                else:
                    self._send(404, b"not found\n")

            def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        try:
            self._server = PooledHTTPServer((self._host, self._port), Handler, threads=settings.threads,
                                            max_waiting=settings.max_waiting,
                                            idle_timeout_s=settings.idle_timeout_s)
        except OSError as exc:
            log.warning("metrics/health HTTP server not started on %s:%s: %s", self._host, self._port, exc)
            return None
        threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True).start()
        host, port = self._server.server_address[:2]
        host_text = host.decode() if isinstance(host, bytes) else str(host)
        if host_text == "0.0.0.0":
            host_text = "127.0.0.1"
        bound = f"[{host_text}]:{port}" if ":" in host_text else f"{host_text}:{port}"
        log.info("metrics and health on http://%s/metrics", bound)
        self.address = bound
        return bound

    def stop(self) -> None:
        """Not ready any more; stop serving (idempotent)."""
        self.health.set_ready(False)
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        self.address = None
