"""One shape for every long-running command (serve, router, worker, flukaio-gateway).

As uvicorn's ``Server``: :func:`run_service` calls a :class:`Service`'s ``startup`` (open and bind
everything; a failure is a :class:`~charon.errors.StartupError`), prints the ready line, calls
``run`` until a :class:`Stop` is requested, and always calls ``shutdown``, which closes what the
service opened, in the reverse order, whatever happened before. Each command's ``main`` opens what
the service is given (a simulator) and closes it after :func:`run_service` returns.

Signals are a driver concern kept out of the services: :func:`capture_signals` turns SIGTERM and
SIGINT into a stop request for the duration of one run, restores the previous handlers on exit,
does nothing off the main thread (so a service runs in a test thread as it runs in production),
and lets a second signal force the stop (drains are cut short). Services take their ``Stop``,
sockets' context, clock and metric registry from their caller, so tests run them in-process.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Protocol

from charon import runtime

if TYPE_CHECKING:
    from charon.engine.base import Simulator
    from charon.settings import EngineSettings

log = logging.getLogger("charon")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stop:
    """A request to stop, and whether it is forced; set from a signal handler, a thread or a test.

    ``request`` asks for an orderly stop (drain within the grace period); ``force`` asks to stop
    at once. Callbacks run in the thread that sets it (a signal handler, for real signals): they
    must only hand the news on (``loop.call_soon_threadsafe``, setting an event).
    """

    def __init__(self) -> None:
        self._requested = threading.Event()
        self._forced = threading.Event()
        self._callbacks: list[Callable[[], None]] = []

    def request(self) -> None:
        self._requested.set()
        self._notify()

    def force(self) -> None:
        self._forced.set()
        self._requested.set()
        self._notify()

    def is_set(self) -> bool:
        return self._requested.is_set()

    @property
    def forced(self) -> bool:
        return self._forced.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until requested (True) or ``timeout`` seconds pass (False)."""
        return self._requested.wait(timeout)

    def on_change(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` at every request or force (at once if already requested); returns a
        function that unregisters it."""
        self._callbacks.append(callback)
        if self.is_set():
            callback()
        return lambda: self._callbacks.remove(callback)

    def _notify(self) -> None:
        for callback in list(self._callbacks):
            callback()


@contextlib.contextmanager
def capture_signals(stop: Stop, next_step: str) -> Iterator[None]:
    """SIGTERM/SIGINT request ``stop`` (a second one forces it) while the block runs.

    The previous handlers are restored on exit. Off the main thread (where Python cannot install
    signal handlers) this does nothing: whoever runs the service there stops it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("signal %d again: stopping at once", signum)
            stop.force()
        else:
            log.info("signal %d: %s (a second signal stops at once)", signum, next_step)
            stop.request()

    previous = {signum: signal.signal(signum, handler) for signum in _SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


class Service(Protocol):
    """A long-running command, driven by :func:`run_service`."""

    #: What the service does once asked to stop, for the signal's log line (e.g. "draining").
    stopping: str

    def startup(self) -> dict[str, object]:
        """Open and bind everything; the fields of the ready line. Raises StartupError."""
        ...

    def run(self, stop: Stop) -> int:
        """Serve until ``stop`` is requested (and any drain is over); the exit status."""
        ...

    def shutdown(self) -> None:
        """Close everything the service opened; safe after a failed or partial start-up."""
        ...


def run_service(service: Service, stop: Stop | None = None,
                announce: Callable[..., None] = runtime.announce) -> int:
    """Start-up, ready line, run, shutdown; signals stop the service while it runs."""
    stop = stop or Stop()
    with capture_signals(stop, service.stopping):
        try:
            announce(**service.startup())
            return service.run(stop)
        finally:
            service.shutdown()


@contextlib.contextmanager
def open_simulator(engine: EngineSettings) -> Iterator[Simulator]:
    """The configured simulator, closed on exit. A detector file that does not exist is an
    invalid setting, reported before the engine is built."""
    from charon.engine.registry import make_simulator
    from charon.settings import invalid_setting

    if engine.detector is not None and not engine.detector.is_file():
        raise invalid_setting("engine.detector", str(engine.detector), "no such file")
    simulator = make_simulator(engine)
    try:
        yield simulator
    finally:
        simulator.close()
