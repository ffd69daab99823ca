"""Process plumbing shared by every long-running command: logging, the ready line, endpoints.

Each service prints exactly one ``ready key=value ...`` line on stdout once it can answer (logs go
to stderr), so parents (``charon demo``, tests, scripts) learn the endpoints a ``*`` port bound to.
"""

from __future__ import annotations

import logging
import re
import signal
import sys
import threading
from types import FrameType
from typing import Any

import zmq


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def set_on_signal(event: threading.Event, next_step: str) -> None:
    """SIGTERM and SIGINT set ``event``; ``next_step`` says in the log what the process does then."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger("charon").info("signal %d: %s", signum, next_step)
        event.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


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
