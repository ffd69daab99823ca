"""Start charon processes for tests: real subprocesses on 127.0.0.1, always reaped.

Each service prints one ``ready key=value ...`` line on stdout once it can answer; these helpers
wait for it (bounded), expose what it reports and kill the process group on exit.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO

from charon.runtime import parse_ready_line

START_TIMEOUT_S = 60.0


@dataclass
class Proc:
    """A running charon subprocess and what its ready line said."""

    proc: subprocess.Popen[str]
    ready: dict[str, str]
    stderr_lines: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return self.ready["endpoint"]

    @property
    def workers_endpoint(self) -> str:
        return self.ready["workers_endpoint"]

    @property
    def metrics(self) -> str:
        return self.ready["metrics"]

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics}/metrics"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit status (kills if it overruns)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _pump(stream: IO[str], sink: list[str] | queue.Queue[str]) -> None:
    for line in stream:
        if isinstance(sink, list):
            sink.append(line)
        else:
            sink.put(line)
    stream.close()


def start(command: str, *args: str, env: Mapping[str, str] | None = None,
          timeout: float = START_TIMEOUT_S, wait_ready: bool = True) -> Proc:
    """Start ``python -m charon COMMAND ARGS`` and wait for its ready line."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "charon", command, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    handle = Proc(proc, {})
    assert proc.stdout is not None
    assert proc.stderr is not None
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    threading.Thread(target=_pump, args=(proc.stderr, handle.stderr_lines), daemon=True).start()
    if not wait_ready:
        return handle
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            if proc.poll() is not None:
                time.sleep(0.2)
                msg = f"charon {command} exited {proc.returncode}: {handle.stderr()[-2000:]}"
                raise RuntimeError(msg) from None
            if time.monotonic() > deadline:
                handle.kill()
                msg = f"charon {command} not ready in {timeout} s: {handle.stderr()[-2000:]}"
                raise TimeoutError(msg) from None
            continue
        if line.startswith("ready "):
            handle.ready = parse_ready_line(line)
            return handle


@contextlib.contextmanager
def running(command: str, *args: str, env: Mapping[str, str] | None = None,
            timeout: float = START_TIMEOUT_S) -> Iterator[Proc]:
    handle = start(command, *args, env=env, timeout=timeout)
    try:
        yield handle
    finally:
        handle.kill()


def serve(*args: str, backend: str = "echo", env: Mapping[str, str] | None = None
          ) -> contextlib.AbstractContextManager[Proc]:
    """``charon serve`` on a free loopback port."""
    return running("serve", "--bind", "tcp://127.0.0.1:*", "--metrics-addr", "127.0.0.1:0",
                   "--backend", backend, *args, env=env)


def router(*args: str, env: Mapping[str, str] | None = None) -> contextlib.AbstractContextManager[Proc]:
    """``charon router`` with both endpoints on free loopback ports."""
    return running("router", "--bind", "tcp://127.0.0.1:*", "--workers-bind", "tcp://127.0.0.1:*",
                   "--metrics-addr", "127.0.0.1:0", *args, env=env)


def worker(router_endpoint: str, *args: str, backend: str = "echo",
           env: Mapping[str, str] | None = None) -> contextlib.AbstractContextManager[Proc]:
    """``charon worker`` connected to ``router_endpoint``."""
    return running("worker", "--router", router_endpoint, "--metrics-addr", "127.0.0.1:0",
                   "--backend", backend, *args, env=env)
