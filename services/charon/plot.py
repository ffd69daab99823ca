"""Pictures of a simulation's result, so a user sees at a glance what came back.

``plot_hits`` draws the detector unrolled (each PMT at its azimuth phi and cos(theta) seen from the
detector centre, coloured by its hit count) next to a histogram of hit times. matplotlib runs with
the Agg back end: no display is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from charon.engine.base import DetectorInfo, Hits


def hit_counts(info: DetectorInfo, hits: Sequence[Hits]) -> np.ndarray:
    """Hits per channel summed over events (channels outside the detector are ignored)."""
    n = len(info)
    counts = np.zeros(n, dtype=np.int64)
    for h in hits:
        ch = np.asarray(h.channel, dtype=np.int64)
        counts += np.bincount(ch[ch < n], minlength=n)[:n]
    return counts


def plot_hits(info: DetectorInfo, hits: Sequence[Hits], path: str | Path, *, title: str | None = None) -> Path:
    """Write a PNG (or any format matplotlib infers from ``path``): hit map and hit-time histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos = info.positions().astype(np.float64)
    r = np.linalg.norm(pos, axis=1)
    cos_t = np.divide(pos[:, 2], r, out=np.zeros_like(r), where=r > 0)
    phi = np.arctan2(pos[:, 1], pos[:, 0])
    counts = hit_counts(info, hits)
    times = np.concatenate([np.asarray(h.time, dtype=np.float64) for h in hits]) if hits else np.zeros(0)
    total = int(counts.sum())

    fig, (ax_map, ax_t) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1.6, 1]})
    try:
        size = max(2.0, min(40.0, 6.0e4 / max(len(info), 1)))
        sc = ax_map.scatter(phi, cos_t, c=counts, s=size, cmap="viridis", marker="o", linewidths=0)
        fig.colorbar(sc, ax=ax_map, label="hits per PMT")
        ax_map.set_xlim(-np.pi, np.pi)
        ax_map.set_ylim(-1.02, 1.02)
        ax_map.set_xlabel("PMT azimuth phi (rad)")
        ax_map.set_ylabel("PMT cos(theta)")
        ax_map.set_title(f"PMT hit map: {total} hits on {int(np.count_nonzero(counts))}/{len(info)} PMTs")
        finite = times[np.isfinite(times)]
        if finite.size:
            lo, hi = np.percentile(finite, [0.0, 99.5])
            if hi <= lo:
                hi = lo + 1.0
            ax_t.hist(finite, bins=100, range=(lo, hi), histtype="stepfilled", color="tab:blue", alpha=0.8)
            ax_t.set_yscale("log")
            ax_t.set_title(f"hit times: mean {finite.mean():.2f} ns")
        else:
            ax_t.text(0.5, 0.5, "no hits", ha="center", va="center", transform=ax_t.transAxes)
            ax_t.set_title("hit times")
        ax_t.set_xlabel("hit time (ns)")
        ax_t.set_ylabel("hits per bin")
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        out = Path(path)
        fig.savefig(out, dpi=110)
    finally:
        plt.close(fig)
    return out
