"""Geant4 subprocesses for the harness: offline environment, a timeout, and always reaped.

Geant4's run manager and geometry stores live once per process, so every build and every run is
its own ``python -m tests.g4.<module>`` process. Each starts in its own session (process group),
so a timeout kills the whole group, and every started process is waited for before returning.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.g4.offline import subprocess_env

ROOT = Path(__file__).resolve().parents[2]


class Geant4ProcessError(RuntimeError):
    """A Geant4 subprocess failed or ran past its timeout; the message carries its output tail."""


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


def _describe(proc: subprocess.Popen[str]) -> str:
    args = proc.args
    return " ".join(str(a) for a in args) if isinstance(args, list | tuple) else str(args)


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.communicate(timeout=10)


@contextlib.contextmanager
def started(commands: Sequence[Sequence[str]]) -> Iterator[list[subprocess.Popen[str]]]:
    """Start ``python -m ...`` commands together in an offline Geant4 environment; kill all on exit."""
    with tempfile.TemporaryDirectory(prefix="g4env-") as scratch:
        env = subprocess_env(scratch)
        procs: list[subprocess.Popen[str]] = []
        try:
            for cmd in commands:
                procs.append(subprocess.Popen([sys.executable, *cmd], cwd=ROOT, env=env, text=True,
                                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, start_new_session=True))
            yield procs
        finally:
            for p in procs:
                _kill(p)


def wait_all(procs: Sequence[subprocess.Popen[str]], timeout_s: float) -> list[Finished]:
    """Wait for every process (one shared deadline); raise with their output if any fails."""
    import time

    deadline = time.monotonic() + timeout_s
    out: list[Finished] = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired as exc:
            for q in procs:
                _kill(q)
            raise Geant4ProcessError(f"Geant4 process {_describe(p)} ran past {timeout_s:.0f} s"
                                     ) from exc
        out.append(Finished(p.returncode, stdout, stderr))
    for p, f in zip(procs, out, strict=True):
        if f.returncode != 0:
            raise Geant4ProcessError(f"Geant4 process {_describe(p)} exited {f.returncode}:\n"
                                     f"--- stdout (tail)\n{f.stdout[-3000:]}\n--- stderr (tail)\n{f.stderr[-3000:]}")
    return out


def run_module(args: Sequence[str], timeout_s: float) -> Finished:
    """Run one ``python -m`` command to completion (see ``started``)."""
    with started([args]) as procs:
        return wait_all(procs, timeout_s)[0]


def result_line(stdout: str, tag: str) -> str:
    """The payload of the last ``<tag> ...`` line a worker printed."""
    lines = [line for line in stdout.splitlines() if line.startswith(tag + " ")]
    if not lines:
        raise Geant4ProcessError(f"no {tag} line in the output:\n{stdout[-3000:]}")
    return lines[-1][len(tag) + 1:]
