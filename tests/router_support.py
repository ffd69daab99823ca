"""Helpers for the router and worker end-to-end tests: raw v1 frames, DEALER requesters, metrics scrapes."""

from __future__ import annotations

import re
import socket
import struct
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import zmq

from charon.protocol import tokens, v1

#: Short heartbeats keep failure detection (liveness x interval = 0.6 s) fast in tests.
FAST = {"CHARON_HEARTBEAT__INTERVAL_S": "0.2", "CHARON_HEARTBEAT__LIVENESS": "3"}


def photondata(event_id: int, n: int = 100, salt: int = 0) -> list[bytes]:
    """A valid PHOTONDATA with recognisable arrays (distinct per event and ``salt``)."""
    arrays = []
    for i in range(12):
        value = struct.pack("<I", (event_id * 131 + i * 7 + salt) & 0x7FFFFF) if i < 11 else struct.pack("<I", 0x400)
        arrays.append(value * n)
    return [tokens.PHOTONDATA, struct.pack("<II", event_id, n), *arrays]


def check_sim_complete(reply: list[bytes], event_id: int, n: int) -> None:
    result = v1.check_sim_complete(reply, event_id)
    assert result.n_hits == n, f"event {event_id}: {result.n_hits} hits for {n} echo photons"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Requester:
    """A DEALER that frames like REQ ([b"", payload]) but can also see a duplicate reply."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str) -> None:
        self.sock: zmq.Socket[Any] = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def send(self, payload: list[bytes]) -> None:
        self.sock.send_multipart([b"", *payload])

    def recv(self, timeout_s: float) -> list[bytes] | None:
        if not self.sock.poll(int(timeout_s * 1000)):
            return None
        frames = self.sock.recv_multipart()
        assert frames[0] == b"", frames[:2]
        return frames[1:]

    def request(self, payload: list[bytes], timeout_s: float = 10.0) -> list[bytes]:
        self.send(payload)
        reply = self.recv(timeout_s)
        assert reply is not None, f"no reply to {payload[0]!r} within {timeout_s} s"
        return reply

    def close(self) -> None:
        self.sock.close(linger=0)


def scrape(addr: str) -> str:
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def metric(text: str, name: str, labels: str = "") -> float:
    """One sample's value from Prometheus text (0 when absent), e.g. metric(t, "charon_workers", 'state="idle"')."""
    pattern = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, step_s: float = 0.05) -> float:
    """Poll ``condition`` until true; returns the seconds it took, fails the test after ``timeout_s``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(step_s)
    return time.monotonic() - start


def poll_until(condition: Callable[[], bool], timeout_s: float, step_s: float = 0.02) -> bool:
    """Whether ``condition`` became true within ``timeout_s`` (no error when it did not)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step_s)


def wait_metric(metrics_addr: str, name: str, labels: str = "", *, at_least: float, timeout_s: float = 5.0) -> str:
    """Scrape until ``name{labels}`` reaches ``at_least`` and return that scrape.

    The router records request metrics just after it sends the replies, so a client that has its
    reply can scrape a moment before the counters move.
    """
    text = ""

    def reached() -> bool:
        nonlocal text
        text = scrape(metrics_addr)
        return metric(text, name, labels) >= at_least

    wait_for(reached, timeout_s, f"{name}{{{labels}}} >= {at_least}")
    return text
