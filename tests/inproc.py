"""Run charon's real services in this process, each in a thread, as ``charon <command>`` runs them.

A service goes through :func:`charon.process.run_service` (start-up, ready line, run, shutdown)
on its own thread; the ready line's fields come back to the test instead of stdout, a
:class:`~charon.process.Stop` replaces the signal, and the thread must have ended (its shutdown
done) when the block exits. Each service gets its own metric registry, so tests read counters
without HTTP (:func:`sample`). Sockets are real: ``inproc://`` endpoints on a shared context, or
TCP on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from charon.engine.base import Simulator
from charon.engine.registry import make_simulator
from charon.process import Service, Stop, run_service
from charon.settings import EngineSettings, Settings, load_settings
from tests.router_support import wait_for

JOIN_TIMEOUT_S = 30.0
_names = itertools.count()

#: Fast heartbeats (liveness x interval = 0.6 s), no HTTP: the in-process default.
FAST: dict[str, dict[str, Any]] = {"heartbeat": {"interval_s": 0.2, "liveness": 3},
                                   "metrics": {"enabled": False}}


def settings(*sections: dict[str, dict[str, Any]]) -> Settings:
    """``FAST`` merged with the given sections (later ones win, field by field)."""
    merged: dict[str, dict[str, Any]] = {}
    for part in (FAST, *sections):
        for name, values in part.items():
            merged.setdefault(name, {}).update(values)
    return load_settings(merged)


def endpoint(tag: str) -> str:
    """A fresh ``inproc://`` endpoint name."""
    return f"inproc://{tag}-{next(_names)}"


def echo(delay_s: float = 0.0) -> Simulator:
    """The echo engine on the reference detector (one hit per photon)."""
    return make_simulator(EngineSettings(backend="echo", echo_delay_s=delay_s))


@dataclass
class Running:
    """A service running on its thread, and what its ready line said."""

    service: Any
    ready: dict[str, Any]
    stop: Stop
    thread: threading.Thread
    result: list[int] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return str(self.ready["endpoint"])

    @property
    def workers_endpoint(self) -> str:
        return str(self.ready["workers_endpoint"])

    def join(self, timeout_s: float = JOIN_TIMEOUT_S) -> int:
        """Wait for the service to end by itself; its exit status (re-raises what it raised)."""
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), f"{type(self.service).__name__} still running after {timeout_s} s"
        if self.errors:
            raise self.errors[0]
        return self.result[0]

    def terminate(self, timeout_s: float = JOIN_TIMEOUT_S, *, force: bool = False) -> int:
        """What SIGTERM does (a second one with ``force``); waits for the end, returns the status."""
        self.stop.force() if force else self.stop.request()
        return self.join(timeout_s)


def start(service: Service, timeout_s: float = JOIN_TIMEOUT_S) -> Running:
    """Start ``service`` on a thread and wait for its ready line (a failed start-up is raised)."""
    stop = Stop()
    ready: queue.Queue[dict[str, Any] | None] = queue.Queue()
    handle = Running(service, {}, stop, threading.Thread())

    def main() -> None:
        try:
            handle.result.append(run_service(service, stop, announce=lambda **f: ready.put(f)))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            handle.errors.append(exc)
        finally:
            ready.put(None)

    handle.thread = threading.Thread(target=main, name=f"service-{type(service).__name__}", daemon=True)
    handle.thread.start()
    fields = ready.get(timeout=timeout_s)
    if fields is None:
        handle.join()
        raise AssertionError(f"{type(service).__name__} ended before it was ready")
    handle.ready = fields
    return handle


@contextlib.contextmanager
def running(service: Service, timeout_s: float = JOIN_TIMEOUT_S) -> Iterator[Running]:
    """:func:`start`, and on exit stop the service (if still running) and wait for its shutdown."""
    handle = start(service, timeout_s)
    try:
        yield handle
    finally:
        handle.stop.request()
        handle.thread.join(timeout_s)
    assert not handle.thread.is_alive(), f"{type(service).__name__} did not stop"
    if handle.errors:
        raise handle.errors[0]


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """One metric sample's value (0 when absent)."""
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


class LogLines(logging.Handler):
    """Collects the ``charon`` loggers' messages (from every thread) for a test to search."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._lock_lines = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_lines:
            self.lines.append(record.getMessage())

    def text(self) -> str:
        with self._lock_lines:
            return "\n".join(self.lines)

    def wait_for(self, needle: str, timeout_s: float = 10.0) -> None:
        wait_for(lambda: needle in self.text(), timeout_s, f"a log line with {needle!r}")


@contextlib.contextmanager
def log_lines(level: int = logging.INFO) -> Iterator[LogLines]:
    handler = LogLines()
    logger = logging.getLogger("charon")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(min(level, old) if old else level)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


class FakeClock:
    """A monotonic clock the test moves: hand it to a service as ``clock``."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Gate:
    """A simulator that holds every engine pass until the test lets it through (then echoes):
    ``release()`` lets one pass through, ``open`` (an Event) every pass from then on."""

    def __init__(self, inner: Simulator | None = None) -> None:
        self.inner = inner or echo()
        self.name = self.inner.name
        self.open = threading.Event()
        self.entered = threading.Semaphore(0)
        self._passes = threading.Semaphore(0)
        self.calls = 0
        #: Events per engine pass, in order.
        self.batches: list[int] = []

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    def detector_info(self) -> Any:
        return self.inner.detector_info()

    def simulate(self, batch: Any) -> Any:
        self.calls += 1
        self.batches.append(len(batch))
        self.entered.release()
        deadline = time.monotonic() + 60
        while not self.open.is_set() and not self._passes.acquire(timeout=0.01):
            assert time.monotonic() < deadline, "gate never opened"
        return self.inner.simulate(batch)

    def release(self) -> None:
        self._passes.release()

    def wait_entered(self, timeout_s: float = 10.0) -> None:
        assert self.entered.acquire(timeout=timeout_s), "no engine pass began"

    def close(self) -> None:
        self.open.set()
