"""The one service shape: stop requests, signal capture, start-up/run/shutdown order, simulators."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from charon.errors import ConfigError, StartupError
from charon.process import Stop, capture_signals, open_simulator, run_service
from charon.settings import EngineSettings


class Recorded:
    """A service that records the order of its lifecycle calls."""

    stopping = "stopping"

    def __init__(self, fail_startup: bool = False, fail_run: bool = False) -> None:
        self.calls: list[str] = []
        self.fail_startup = fail_startup
        self.fail_run = fail_run

    def startup(self) -> dict[str, object]:
        self.calls.append("startup")
        if self.fail_startup:
            raise StartupError("cannot bind tcp://*:1: in use")
        return {"endpoint": "inproc://x"}

    def run(self, stop: Stop) -> int:
        self.calls.append("run")
        if self.fail_run:
            raise RuntimeError("bug")
        stop.wait(5)
        return 3

    def shutdown(self) -> None:
        self.calls.append("shutdown")


def test_run_service_orders_startup_ready_line_run_shutdown() -> None:
    service, stop, lines = Recorded(), Stop(), []
    stop.request()
    assert run_service(service, stop, announce=lambda **f: lines.append(f)) == 3
    assert service.calls == ["startup", "run", "shutdown"]
    assert lines == [{"endpoint": "inproc://x"}]


@pytest.mark.parametrize(("fail_startup", "fail_run", "error", "calls"), [
    (True, False, StartupError, ["startup", "shutdown"]),
    (False, True, RuntimeError, ["startup", "run", "shutdown"]),
])
def test_shutdown_runs_whatever_failed(fail_startup: bool, fail_run: bool, error: type[Exception],
                                       calls: list[str]) -> None:
    service, lines = Recorded(fail_startup, fail_run), []
    with pytest.raises(error):
        run_service(service, Stop(), announce=lambda **f: lines.append(f))
    assert service.calls == calls
    assert lines == ([] if fail_startup else [{"endpoint": "inproc://x"}])


def test_stop_callbacks_see_request_and_force_and_can_unregister() -> None:
    stop, seen = Stop(), []
    unregister = stop.on_change(lambda: seen.append((stop.is_set(), stop.forced)))
    stop.request()
    stop.force()
    unregister()
    stop.force()
    assert seen == [(True, False), (True, True)]
    late = []
    stop.on_change(lambda: late.append(stop.forced))  # registered after the fact: told at once
    assert late == [True]


def test_capture_signals_turns_sigterm_into_a_stop_and_a_second_into_a_forced_stop() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    stop = Stop()
    with capture_signals(stop, "draining"):
        assert signal.getsignal(signal.SIGTERM) not in before
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
        assert not stop.forced
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.forced
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_capture_signals_restores_the_previous_handlers_after_an_error() -> None:
    got: list[int] = []

    def mine(signum: int, _frame: Any) -> None:
        got.append(signum)

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with pytest.raises(KeyError), capture_signals(Stop(), "stopping"):
            raise KeyError("x")
        assert signal.getsignal(signal.SIGTERM) is mine
        os.kill(os.getpid(), signal.SIGTERM)
        assert got == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_capture_signals_does_nothing_off_the_main_thread() -> None:
    before = signal.getsignal(signal.SIGTERM)
    results: list[object] = []

    def body() -> None:
        try:
            with capture_signals(Stop(), "stopping"):
                results.append(signal.getsignal(signal.SIGTERM))
        except BaseException as exc:  # noqa: BLE001 - reported below
            results.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(5)
    assert results == [before]


def test_a_service_runs_to_completion_on_a_thread() -> None:
    service, stop = Recorded(), Stop()
    out: list[int] = []
    thread = threading.Thread(target=lambda: out.append(run_service(service, stop, announce=lambda **f: None)))
    thread.start()
    stop.request()
    thread.join(5)
    assert out == [3]
    assert service.calls == ["startup", "run", "shutdown"]


def test_open_simulator_refuses_a_missing_detector_file_as_an_invalid_setting(tmp_path: Path) -> None:
    missing = tmp_path / "det.npz"
    with pytest.raises(ConfigError) as info, open_simulator(EngineSettings(backend="echo", detector=missing)):
        pass
    assert str(info.value) == (f"invalid setting engine.detector (--detector / CHARON_ENGINE__DETECTOR) = "
                               f"{str(missing)!r}: no such file")
    assert info.value.exit_status == 2


def test_open_simulator_closes_the_simulator() -> None:
    closed: list[bool] = []
    with open_simulator(EngineSettings(backend="echo")) as simulator:
        simulator.close = lambda: closed.append(True)  # type: ignore[method-assign]
    assert closed == [True]
