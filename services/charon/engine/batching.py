"""Several requests in one engine pass: plan the groups and pack their photons.

A GPU pass has a fixed cost (uploads, kernel launches, hit compaction) that small events cannot
amortise, so a worker with several queued requests runs them together, each photon tagged with the
index of its request inside the pass (``evidx``). This module is the pure-numpy part of that:

* :func:`plan_groups` cuts an ordered list of request sizes into consecutive groups under a photon
  budget; :class:`BatchPlanner` adds the latency budget (how long a partial group may wait for more
  requests) with the time passed in, so drivers stay thin and the policy is testable with a fake
  clock.
* :func:`pack` copies a group's v1 columns once into the (n, 3) layout GPU engines upload, plus
  ``evidx`` and the per-request photon bounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from charon.engine.base import F32, U32, Photons

I64 = npt.NDArray[np.int64]


def plan_groups(sizes: Sequence[int], max_photons: int) -> list[range]:
    """Consecutive groups of request indices whose photon totals stay within ``max_photons``.

    Requests keep their order. A request larger than the budget forms a group of its own (an event
    is never split across passes). Every index appears in exactly one group.
    """
    if max_photons < 1:
        raise ValueError("max_photons must be >= 1")
    groups: list[range] = []
    start = 0
    total = 0
    for i, n in enumerate(sizes):
        if n < 0:
            raise ValueError(f"request {i} has a negative photon count {n}")
        if i > start and total + n > max_photons:
            groups.append(range(start, i))
            start, total = i, 0
        total += n
    if start < len(sizes):
        groups.append(range(start, len(sizes)))
    return groups


@dataclass(frozen=True, slots=True)
class Decision:
    """What a driver should do now with its pending requests (indices into the pending list)."""

    run: list[range]
    #: Seconds until the held requests must run even if nothing else arrives; None if none are held.
    wait_s: float | None


class BatchPlanner:
    """Photon budget plus latency budget over a FIFO of pending requests.

    Full groups run at once. The last, partial group runs when the latency budget is zero, when
    its oldest request has waited ``max_delay_s``, or when the driver flushes (e.g. while draining).
    An idle engine is deliberately not a reason to run early: that short wait is what fills a pass.
    """

    def __init__(self, max_photons: int, max_delay_s: float) -> None:
        if max_photons < 1:
            raise ValueError("max_photons must be >= 1")
        if max_delay_s < 0:
            raise ValueError("max_delay_s must be >= 0")
        self.max_photons = max_photons
        self.max_delay_s = max_delay_s

    def decide(self, sizes: Sequence[int], arrived_at: Sequence[float], now: float, *,
               flush: bool = False) -> Decision:
        """Groups to run now, in order, and how long the rest may wait.

        ``sizes[i]`` is request i's photon count and ``arrived_at[i]`` when it was queued (same clock
        as ``now``); requests are in arrival order.
        """
        if len(sizes) != len(arrived_at):
            raise ValueError("sizes and arrived_at differ in length")
        groups = plan_groups(sizes, self.max_photons)
        if not groups:
            return Decision([], None)
        last = groups[-1]
        total = sum(sizes[i] for i in last)
        oldest = min(arrived_at[i] for i in last)
        waited = now - oldest
        if flush or self.max_delay_s == 0 or total >= self.max_photons or waited >= self.max_delay_s:
            return Decision(groups, None)
        return Decision(groups[:-1], self.max_delay_s - waited)


@dataclass(frozen=True, slots=True)
class PackedPhotons:
    """One engine pass: the photons of several requests back to back, tagged with ``evidx``."""

    pos: F32
    dir: F32
    pol: F32
    wavelengths: F32
    t: F32
    flags: U32
    evidx: U32
    #: Photon offsets: request i owns rows bounds[i]:bounds[i + 1].
    bounds: I64

    def __len__(self) -> int:
        return int(self.pos.shape[0])

    @property
    def n_events(self) -> int:
        return int(self.bounds.shape[0]) - 1

    def rows(self, i: int) -> slice:
        return slice(int(self.bounds[i]), int(self.bounds[i + 1]))


def pack(batch: Sequence[Photons]) -> PackedPhotons:
    """Copy the requests' v1 columns once into preallocated (n, 3) / (n,) arrays of one pass."""
    sizes = np.fromiter((len(p) for p in batch), dtype=np.int64, count=len(batch))
    bounds = np.zeros(len(batch) + 1, dtype=np.int64)
    np.cumsum(sizes, out=bounds[1:])
    n = int(bounds[-1])
    pos = np.empty((n, 3), np.float32)
    dir_ = np.empty((n, 3), np.float32)
    pol = np.empty((n, 3), np.float32)
    wavelengths = np.empty(n, np.float32)
    t = np.empty(n, np.float32)
    flags = np.empty(n, np.uint32)
    for i, p in enumerate(batch):
        a, b = int(bounds[i]), int(bounds[i + 1])
        if a == b:
            continue
        np.stack((p.x, p.y, p.z), axis=1, out=pos[a:b])
        np.stack((p.dx, p.dy, p.dz), axis=1, out=dir_[a:b])
        np.stack((p.polx, p.poly, p.polz), axis=1, out=pol[a:b])
        wavelengths[a:b] = p.wavelength
        t[a:b] = p.time
        flags[a:b] = p.flags
    evidx = np.repeat(np.arange(len(batch), dtype=np.uint32), sizes)
    return PackedPhotons(pos, dir_, pol, wavelengths, t, flags, evidx, bounds)
