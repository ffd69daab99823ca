"""Hit pictures: counts per channel are right and a real PNG comes out (with and without hits)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from charon.engine.base import Hits
from charon.engine.detector import reference_detector
from charon.plot import hit_counts, plot_hits


def make_hits(channels: list[int], times: list[float]) -> Hits:
    n = len(channels)
    f = np.zeros(n, np.float32)
    return Hits(np.asarray(channels, np.uint32), f, f, f, f, f, f, f + 420, np.asarray(times, np.float32),
                np.full(n, 4, np.uint32))


def test_hit_counts_sum_events() -> None:
    info = reference_detector().info()
    counts = hit_counts(info, [make_hits([0, 5, 5], [1, 2, 3]), make_hits([5, 2999], [4, 5])])
    assert (counts[0], counts[5], counts[2999], counts.sum()) == (1, 3, 1, 5)


def test_plot_writes_png(tmp_path: Path) -> None:
    info = reference_detector().info()
    rng = np.random.default_rng(1)
    hits = [make_hits(list(rng.integers(0, len(info), 5000)), list(rng.normal(27.7, 1.0, 5000)))]
    out = plot_hits(info, hits, tmp_path / "hits.png", title="test")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000
    empty = plot_hits(info, [Hits.empty()], tmp_path / "none.png")
    assert empty.read_bytes()[:4] == b"\x89PNG"
