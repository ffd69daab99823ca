"""Process plumbing shared by every long-running command: logging and the ready line.

Each service prints exactly one ``ready key=value ...`` line on stdout once it can answer (logs go
to stderr), so parents (``charon demo``, tests, scripts) learn the endpoints a ``*`` port bound to.
"""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def announce(**fields: object) -> None:
    """Print the one stdout ready line, e.g. ``ready endpoint=tcp://127.0.0.1:5555 metrics=:9100``."""
    line = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
    print(f"ready {line}", flush=True)  # noqa: T201


def parse_ready_line(line: str) -> dict[str, str]:
    """Inverse of :func:`announce`; raises ValueError for any other line."""
    words = line.strip().split()
    if not words or words[0] != "ready":
        raise ValueError(f"not a ready line: {line!r}")
    return dict(w.split("=", 1) for w in words[1:])
